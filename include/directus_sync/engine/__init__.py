"""The sync engine: one run's work, in the data flow extract -> plan -> apply, free of Airflow's task context.

``extract`` reads the window's changes from the source's activity log (the activity ``cursor`` keeps late
commits) and stages them; ``plan`` filters them by the schema, reads the remote and decides creates,
updates and deletes (conflicts by ``origins``); ``apply`` writes them in bulk; ``staging`` holds the files
the steps hand over, ``readahead`` overlaps reading with writing, ``results`` are the typed results the
steps return, ``dryrun`` renders a plan without writing. Every function takes plain arguments (a row, a
hook, an engine, a folder): the Airflow wiring passes them in.

May import: ``directus_sync.config``, ``directus_sync.directus``, ``directus_sync.state``.
"""
