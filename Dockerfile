# The Airflow image with directus-sync installed; used by docker-compose.airflow.yml.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root pyproject.toml README.md LICENSE /opt/directus-sync/
COPY --chown=airflow:root include /opt/directus-sync/include
RUN pip install --no-cache-dir "apache-airflow==3.3.2" "/opt/directus-sync[celery,s3]"
