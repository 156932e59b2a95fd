-- One database per Directus instance and one for the remote-sources table, beside Airflow's own.
CREATE DATABASE directus_a;
CREATE DATABASE directus_b;
CREATE DATABASE directus_sync;
