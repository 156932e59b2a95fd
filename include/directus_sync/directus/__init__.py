"""The Directus protocol: everything that speaks Directus's REST API, and nothing else.

Owns the connection to one instance (an Airflow ``http`` connection: URL, static token, TLS and proxy
extras), the sync hook the tasks use and the async hook the triggerer uses (sharing URL building,
authentication, extras, errors and the activity filters; the triggerer's polls back off instead of retrying),
Directus's errors and their safe form, paging
within the instance's query and payload limits, the collections' fields and relations, notifications and
provisioning of the sync user.

May import: ``directus_sync.config`` only. Nothing here knows about runs, tables or Airflow's task context.
"""
