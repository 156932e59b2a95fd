"""Development tools, outside the runtime package: local Directus instances (``devserver``), local Airflow
(``localairflow``, ``liveairflow``), the demo and the prerequisite checks of the Makefile.

Used by ``make demo``, the tests and the benchmarks from a checkout; never imported by ``directus_sync``.
"""
