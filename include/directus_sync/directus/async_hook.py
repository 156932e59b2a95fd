"""The async hook: the calls the event trigger makes, over aiohttp, in the triggerer's event loop.

Not the HTTP provider's ``HttpAsyncHook``: it takes ``verify`` only as a boolean, ignores ``cert`` and hands
``proxies`` to aiohttp as one URL. The URL, token and :class:`~.client.Transport` come from the connection
exactly as :class:`~.hook.DirectusHook` reads them (:func:`~.client.credentials_of`), so a connection that
works for the tasks works here, and a refused call raises the same :class:`~.errors.DirectusError`. No
retries inside a call: the trigger polls again, backing off after failures.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from airflow.sdk import BaseHook

from directus_sync.directus.client import Credentials, credentials_of
from directus_sync.directus.errors import DirectusError


class DirectusAsyncHook:
    """One Directus instance, by Airflow connection, for the triggerer.

    :param session: the aiohttp session the trigger owns (its timeout and ``trust_env``).
    """

    def __init__(self, conn_id: str, credentials: Credentials, session: aiohttp.ClientSession) -> None:
        self.conn_id = conn_id
        self.base_url = credentials.base_url.rstrip("/")
        self.session = session
        self.headers = {"Authorization": f"Bearer {credentials.token}"}
        self.transport = credentials.transport
        self._ssl = self.transport.ssl_context()

    @classmethod
    async def connect(cls, conn_id: str, session: aiohttp.ClientSession) -> DirectusAsyncHook:
        """A hook for the Airflow connection ``conn_id`` (host = URL, password = token)."""
        connection = await BaseHook.aget_connection(conn_id)
        return cls(conn_id, credentials_of(conn_id, connection.host, connection.schema, connection.port,
                                           connection.password, connection.extra_dejson), session)

    async def get(self, path: str, params: dict[str, Any]) -> Any:
        """Directus's ``data`` member of a GET; :class:`DirectusError` when the instance refuses it."""
        url = self.base_url + path
        async with self.session.get(url, params=params, headers=self.headers, ssl=self._ssl,
                                    proxy=self.transport.proxy_for(url)) as response:
            if response.status >= 400:
                try:
                    body = await response.json(content_type=None)
                except ValueError:  # a proxy's HTML error page: the status says it
                    body = None
                errors = body.get("errors") if isinstance(body, dict) else None
                raise DirectusError.from_errors(self.conn_id, "GET", path, response.status,
                                                [e for e in errors or [] if isinstance(e, dict)])
            return (await response.json()).get("data")

    async def current_user_id(self) -> str:
        me = await self.get("/users/me", {"fields": "id"})
        return str(me["id"])

    async def activity(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``/activity`` rows ``params`` select (see :mod:`.activity` for the filters)."""
        return list(await self.get("/activity", params) or [])
