"""A source served over TLS with a private CA: the connection's ``verify`` (a CA bundle) is what both the
tasks and the event trigger trust, and without it both refuse the instance."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.devserver import DirectusInstance
from directus_sync.airflow.trigger import DirectusActivityTrigger
from directus_sync.directus.async_hook import DirectusAsyncHook

from .harness import Airflow, create_collection, items, sync_token
from .tlsproxy import TlsProxy, make_certificates


@pytest.fixture
def tls_source(instances: dict[str, DirectusInstance], tmp_path: Path) -> Iterator[tuple[TlsProxy, Path]]:
    ca, certificate, key = make_certificates(tmp_path / "tls")
    with TlsProxy(instances["a"].url, certificate, key) as proxy:
        yield proxy, ca


def tls_connection(proxy: TlsProxy, instance: DirectusInstance, **extra: Any) -> dict[str, Any]:
    return {"conn_type": "http", "host": proxy.url, "password": sync_token(instance), "extra": extra}


def failure_lines(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if "Error" in line or "error" in line)[-4000:]


def test_the_tasks_trust_the_connections_ca_bundle_and_refuse_the_instance_without_it(
        airflow: Airflow, instances: dict[str, DirectusInstance], tls_source: tuple[TlsProxy, Path],
        collection: str) -> None:
    proxy, ca = tls_source
    a, b = instances["a"], instances["b"]
    for instance in (a, b):
        create_collection(instance, collection)
    a.api("POST", f"/items/{collection}", json={"title": "over tls"})
    airflow.connections["directus_a_tls"] = tls_connection(proxy, a, verify=str(ca))
    airflow.connections["directus_a_untrusted"] = tls_connection(proxy, a)
    row = {"name": f"tls_{collection}", "remote_conn_id": "directus_b",
           "schema": [{"name": collection, "fields": ["title"]}]}
    try:
        untrusted = airflow.dags_test(airflow.add_remote(**row, source_conn_id="directus_a_untrusted"))
        assert untrusted.returncode != 0
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout + untrusted.stderr
        assert items(b, collection) == {}

        trusted = airflow.dags_test(airflow.add_remote(**row, source_conn_id="directus_a_tls"))
        assert trusted.returncode == 0, failure_lines(trusted.stdout + trusted.stderr)
        assert [i["title"] for i in items(b, collection).values()] == ["over tls"]
    finally:
        for conn_id in ("directus_a_tls", "directus_a_untrusted"):
            airflow.connections.pop(conn_id)


def test_the_trigger_trusts_the_connections_ca_bundle_and_refuses_the_instance_without_it(
        instances: dict[str, DirectusInstance], tls_source: tuple[TlsProxy, Path], collection: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, ca = tls_source
    a = instances["a"]
    create_collection(a, collection)
    monkeypatch.setenv("AIRFLOW_CONN_SOURCE_TLS", json.dumps(tls_connection(proxy, a, verify=str(ca))))
    monkeypatch.setenv("AIRFLOW_CONN_SOURCE_UNTRUSTED", json.dumps(tls_connection(proxy, a)))

    async def refused() -> None:
        async with aiohttp.ClientSession() as session:
            client = await DirectusAsyncHook.connect("source_untrusted", session)
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await client.current_user_id()

    async def first_event() -> dict[str, Any]:
        trigger = DirectusActivityTrigger("source_tls", [collection], remote="tls", poll_interval=0.5, timeout=10)
        events = trigger.run()
        a.api("POST", f"/items/{collection}", json={"title": "seen through tls"})
        event = await asyncio.wait_for(anext(events), timeout=60)
        await events.aclose()
        return dict(event.payload)

    asyncio.run(refused())
    payload = asyncio.run(first_event())
    assert payload["remote"] == "tls" and payload["newest_id"] > 0
