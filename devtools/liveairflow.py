"""Helpers for driving a running ``airflow standalone`` through its REST API: the event-mode tests and the
latency benchmark use them. Nothing here is used by the DAGs themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from devtools.localairflow import Standalone

T = TypeVar("T")
ACTIVE_STATES = ("queued", "running")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.25) -> T:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def unpause_when_parsed(server: Standalone, dag_id: str, timeout: float = 300) -> None:
    """Wait until the dag-processor has serialized ``dag_id``, then unpause it."""

    def parsed() -> bool:
        try:
            server.api("GET", f"/api/v2/dags/{dag_id}/details")
        except requests.HTTPError:
            return False
        return True

    wait_for(parsed, timeout, f"DAG {dag_id} to be parsed", every=2)
    server.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})


def dag_runs(server: Standalone, dag_id: str) -> list[dict[str, Any]]:
    """Every run of ``dag_id``, oldest first (``state``, ``run_type``, ``start_date``, ``end_date``...)."""
    answer = server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns",
                        params={"limit": 1000, "order_by": "run_after"})
    runs: list[dict[str, Any]] = answer["dag_runs"]
    return runs


def settled_runs(server: Standalone, dag_id: str, quiet: float, timeout: float = 600) -> list[dict[str, Any]]:
    """The runs of ``dag_id`` once none is queued or running and no new one came for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        runs = dag_runs(server, dag_id)
        if len(runs) != len(seen) or any(r["state"] in ACTIVE_STATES for r in runs):
            seen, quiet_since = runs, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return runs
        time.sleep(1)
    raise TimeoutError(f"runs of {dag_id} did not settle within {timeout:.0f} s")
