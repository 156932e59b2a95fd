#!/usr/bin/env bash
# One-shot setup for the compose stack: collections, sync users, the remote-sources table, two remotes.
set -euo pipefail

wait_for() {
    until curl -fsS "$1/server/ping" >/dev/null 2>&1; do echo "waiting for $1"; sleep 3; done
}
collection() {  # $1 url, $2 admin token
    curl -fsS -X POST "$1/collections" -H "Authorization: Bearer $2" -H "Content-Type: application/json" -d '{
      "collection": "articles", "meta": {}, "schema": {}, "fields": [
        {"field": "id", "type": "integer", "meta": {"hidden": true}, "schema": {"is_primary_key": true, "has_auto_increment": true}},
        {"field": "title", "type": "string", "meta": {}, "schema": {}},
        {"field": "body", "type": "text", "meta": {}, "schema": {}},
        {"field": "internal_note", "type": "string", "meta": {}, "schema": {}}]}' >/dev/null \
      || echo "articles exists on $1"
}

schema='[{"name": "articles", "fields": ["title", "body"]}]'
for side in A B; do
    url_var="DIRECTUS_${side}_URL"; admin_var="DIRECTUS_${side}_ADMIN_TOKEN"; token_var="DIRECTUS_${side}_SYNC_TOKEN"
    wait_for "${!url_var}"
    collection "${!url_var}" "${!admin_var}"
    directus-sync provision --url "${!url_var}" --schema "$schema" --token "${!token_var}" \
        --admin-token "${!admin_var}" --conn-id "directus_${side,,}" >/dev/null
done

directus-sync db init
directus-sync remote add a_to_b --source directus_a --remote directus_b --schema "$schema" --schedule "*/2 * * * *" --replace
directus-sync remote add b_to_a --source directus_b --remote directus_a --schema "$schema" --schedule "*/2 * * * *" --replace
echo "setup done: edit articles on http://localhost:8055 or :8056 and watch the DAGs on http://localhost:8080"
