"""The connection to one Directus instance and the one way calls are sent to it.

Both hooks (:mod:`.hook` for tasks, :mod:`.async_hook` for the triggerer) read an Airflow ``http``
connection the same way: host = the instance URL (:func:`base_url_of`, as ``HttpHook`` builds it),
password = the static token sent as a Bearer header, extras = :class:`Transport` (TLS and proxies). Tools
outside Airflow (``provision``, the development servers, the tests) call an instance by URL and token
through the same :class:`DirectusClient` the sync hook uses, so every call retries, encodes and fails alike.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from requests import Response, Session
from requests.adapters import HTTPAdapter
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

from directus_sync.directus.errors import DirectusError

log = logging.getLogger(__name__)

# Transient answers worth another try; 4xx other than 429 are about the request and never retried.
RETRY_STATUSES = (429, 502, 503, 504)
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Credentials:
    """What calling one instance takes: its URL, the token, and how to reach it."""

    base_url: str
    token: str
    transport: Transport


def credentials_of(conn_id: str, host: str | None, schema: str | None, port: int | None, password: str | None,
                   extra: Mapping[str, Any]) -> Credentials:
    """The credentials an Airflow connection holds, or an error saying which part to set."""
    if not host:
        raise DirectusError(conn_id, "GET", "/", None, "the connection has no host; set it to the instance URL")
    if not password:
        raise DirectusError(conn_id, "GET", "/", None,
                            "the connection has no password; set it to the sync user's static token")
    return Credentials(base_url_of(host, schema, port), password, Transport.from_extra(extra))


@dataclass(frozen=True)
class Transport:
    """How to reach an instance, from its connection's extras, read as the HTTP provider's ``HttpHook`` reads
    them: ``verify`` (true, false, or a CA bundle's path), ``cert`` (a client certificate's path, or
    ``[cert, key]``), ``proxies`` (``{"https": "http://proxy:3128", ...}``, or ``proxy``).

    The sync hook's requests session and the trigger's aiohttp client both take their settings from here.
    """

    verify: bool | str = True
    cert: str | tuple[str, str] | None = None
    proxies: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> Transport:
        verify = extra.get("verify", extra.get("verify_ssl", True))
        if isinstance(verify, str) and verify.strip().lower() in ("true", "false"):
            verify = verify.strip().lower() == "true"
        cert = extra.get("cert")
        proxies = extra.get("proxies", extra.get("proxy")) or {}
        if isinstance(proxies, str):  # one proxy for every scheme
            proxies = {"http": proxies, "https": proxies}
        return cls(verify=verify, cert=tuple(cert) if isinstance(cert, list) else cert, proxies=dict(proxies))

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` needs for these settings: ``False`` skips verification."""
        if self.verify is False and self.cert is None:
            return False
        # As requests does: a verify left at true takes REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE from the
        # environment; a path may be a CA file or a folder of them.
        bundle = self.verify if isinstance(self.verify, str) else (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") if self.verify else None)
        context = ssl.create_default_context(cafile=bundle if bundle and not os.path.isdir(bundle) else None,
                                             capath=bundle if bundle and os.path.isdir(bundle) else None)
        if self.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert is not None:
            certfile, keyfile = self.cert if isinstance(self.cert, tuple) else (self.cert, None)
            context.load_cert_chain(certfile, keyfile)
        return context

    def proxy_for(self, url: str) -> str | None:
        """The proxy requests would use for ``url``: by scheme, then ``all``."""
        scheme = urlsplit(url).scheme
        return self.proxies.get(scheme) or self.proxies.get("all")


def base_url_of(host: str, schema: str | None, port: int | None) -> str:
    """The instance URL of an ``http`` connection, built as ``HttpHook`` builds it."""
    url = host if "://" in host else f"{schema or 'http'}://{host}"
    return f"{url}:{port}" if port else url


# Calls that may be sent again whatever happened to the first: reads. The sync's writes are idempotent too
# (keyed creates, updates, deletes), so the sync hook retries every call; a tool creating things does not.
READS = frozenset({"GET", "HEAD", "OPTIONS"})


def retry_adapter(retries: int = 5, backoff_factor: float = 0.5, pool_size: int = 8,
                  methods: frozenset[str] | None = None) -> HTTPAdapter:
    """Retries of connection errors and 429/502/503/504 answers, with exponential backoff and ``Retry-After``
    honoured; for ``methods`` only (``None``: every method)."""
    retry = Retry(
        total=retries,
        backoff_factor=backoff_factor,
        backoff_jitter=0.25,
        backoff_max=30,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=methods,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    return HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)


class DirectusClient:
    """Sends calls to one instance over a requests session and returns Directus's ``data`` member.

    :param name: how errors name the instance (an Airflow connection id, or the URL).
    :param session: a session that authenticates (``Authorization: Bearer``) and retries.
    """

    def __init__(self, name: str, base_url: str, session: Session, transport: Transport | None = None,
                 timeout: float = DEFAULT_TIMEOUT, log_errors: bool = True) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.transport = transport or Transport()
        self.timeout = timeout
        self.log_errors = log_errors

    @classmethod
    def connect(cls, url: str, token: str, transport: Transport | None = None, timeout: float = DEFAULT_TIMEOUT,
                retries: int = 5, name: str | None = None) -> DirectusClient:
        """A client for the instance at ``url`` with ``token``, outside Airflow's connections: reads are
        retried, writes are not (a tool's create sent twice would create twice). Errors are raised, not
        logged: the caller reports them."""
        session = Session()
        adapter = retry_adapter(retries, methods=READS)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["Authorization"] = f"Bearer {token}"
        return cls(name or url, url, session, transport, timeout, log_errors=False)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        payload: Any = None,
        allow_statuses: Sequence[int] = (),
        measured: Callable[[int], None] | None = None,
    ) -> Any:
        """Send one call and return Directus's ``data`` member (``None`` for empty answers).

        ``measured`` is called with the length of the answer's body, before it is parsed.
        """
        body = None if payload is None else encode_json(payload)
        headers = {"Content-Type": "application/json; charset=utf-8"} if body is not None else None
        transport = self.transport
        try:
            # The TLS and proxy settings per request, as HttpHook.run_and_check passes them: left to the
            # session, requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE override the connection's CA bundle.
            response = self.session.request(method, self.base_url + path, params=params, data=body,
                                            headers=headers, timeout=self.timeout, verify=transport.verify,
                                            cert=transport.cert, proxies=dict(transport.proxies))
        except RequestException as exc:
            error = DirectusError(self.name, method, path, None, _short(exc),
                                  safe=f"{type(exc).__name__} (no answer from the instance)")
            self._log(error)
            raise error from exc
        if response.status_code >= 400 and response.status_code not in allow_statuses:
            error = DirectusError.from_response(self.name, method, path, response)
            self._log(error)
            raise error
        if not response.content or response.status_code >= 400:
            return None
        if measured is not None:
            measured(len(response.content))
        return response.json().get("data")

    def stream(self, path: str) -> Response:
        """A GET whose body is left unread, for the caller to read in chunks (``iter_content``) and close:
        a binary of any size passes through without being held whole in memory."""
        transport = self.transport
        try:
            response = self.session.get(self.base_url + path, timeout=self.timeout, stream=True,
                                        verify=transport.verify, cert=transport.cert, proxies=dict(transport.proxies))
        except RequestException as exc:
            raise self._unanswered("GET", path, exc) from exc
        if response.status_code >= 400:
            error = DirectusError.from_response(self.name, "GET", path, response)
            response.close()
            self._log(error)
            raise error
        return response

    def send_stream(self, method: str, path: str, body: Iterable[bytes], content_type: str) -> Any:
        """Send ``body`` as it is produced (chunked transfer encoding) and return Directus's ``data`` member.

        The body is not rewound: a retry after part of it went would send the rest only, which Directus
        refuses as a cut form, so a transient failure fails the call (the caller reports it and the next run
        sends it again). The connection is closed after the call: Directus may answer an error before
        reading a large body, and a connection left half-read would reset the next call sent on it.
        """
        transport = self.transport
        try:
            response = self.session.request(method, self.base_url + path, data=iter(body),
                                            headers={"Content-Type": content_type, "Connection": "close"},
                                            timeout=self.timeout,
                                            verify=transport.verify, cert=transport.cert,
                                            proxies=dict(transport.proxies))
        except RequestException as exc:
            raise self._unanswered(method, path, exc) from exc
        if response.status_code >= 400:
            error = DirectusError.from_response(self.name, method, path, response)
            self._log(error)
            raise error
        return response.json().get("data") if response.content else None

    def _unanswered(self, method: str, path: str, exc: Exception) -> DirectusError:
        error = DirectusError(self.name, method, path, None, _short(exc),
                              safe=f"{type(exc).__name__} (no answer from the instance)")
        self._log(error)
        return error

    def _log(self, error: DirectusError) -> None:
        if self.log_errors:
            log.warning("%s", error.detail)  # the full text stays in the task log


def segment(name: str) -> str:
    """``name`` as one path segment: quoted, dots too, so that no name can reach another endpoint (``../users``)."""
    return quote(name, safe="").replace(".", "%2E")


def encode_json(payload: Any) -> bytes:
    """A request body exactly as sent: compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 400 else text[:400] + "..."
