"""Directus's errors: what a refused call says, in a safe form for everything outside the task log.

Directus puts offending values in its messages ('Value "a@b.c" for field "email" in collection
"people" has to be unique'). :class:`DirectusError` keeps the full text for the task log (``detail``) and
shows, everywhere else, what identifies the problem and nothing an item holds: the error code, and from the
extensions only names (collection, field, constraint, rule type). Codes this package does not know keep the
code and the HTTP status phrase; messages are never echoed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from requests import Response

# How Directus refuses a ``limit`` above its QUERY_LIMIT_MAX (utils/validate-query.js, a Joi message).
LIMIT_REFUSED = re.compile(r'\\?"limit\\?" must be less than or equal to (\d+)')
# How Directus says its MAX_PAYLOAD_SIZE was exceeded (an INVALID_PAYLOAD 400, body-parser's words).
TOO_LARGE_REASON = "entity too large"


class DirectusError(RuntimeError):
    """Directus refused a call or could not be reached.

    ``str(exc)`` is the safe form: instance, call, status and what identifies the problem (Directus's
    error codes, with the collection and field their extensions name), never a value Directus echoes
    from the item. It is what may leave the task log: XCom, the ledger, the dead-letter table,
    notifications and alerts. ``detail`` is the full text, Directus's messages included, for the task
    log only; ``codes`` are the error codes of the answer.

    :param reason: the full reason (Directus's messages as they came).
    :param safe: the reason's safe form; by default ``reason`` itself for errors without an answer (this
        package's own words) and the HTTP status phrase otherwise.
    """

    def __init__(self, conn_id: str, method: str, path: str, status: int | None, reason: str,
                 safe: str | None = None, codes: Sequence[str] = ()) -> None:
        self.conn_id = conn_id
        self.request_method = method
        self.path = path
        self.status = status
        self.codes = tuple(codes)
        if safe is None:
            safe = reason if status is None else status_phrase(status)
        self.safe_reason = safe
        self.reason = reason
        where = f"Directus connection {conn_id!r}: {method} {path}"
        self.detail = f"{where} failed ({status}): {reason}" if status else f"{where} failed: {reason}"
        super().__init__(f"{where} failed ({status}): {safe}" if status else f"{where} failed: {safe}")

    @classmethod
    def from_response(cls, conn_id: str, method: str, path: str, response: Response) -> DirectusError:
        return cls.from_errors(conn_id, method, path, response.status_code, _errors_of(response),
                               reason=_reason(response))

    @classmethod
    def from_errors(cls, conn_id: str, method: str, path: str, status: int, errors: Sequence[Mapping[str, Any]],
                    reason: str | None = None) -> DirectusError:
        """The error of an answer whose body has these ``errors`` (Directus's ``errors`` member)."""
        safe, codes = summarize(status, errors)
        if reason is None:
            reason = "; ".join(str(e.get("message")) for e in errors if e.get("message")) or "no details"
        return cls(conn_id, method, path, status, reason, safe=safe, codes=codes)

    @property
    def too_large(self) -> bool:
        """Whether the remote (or a proxy) refused the request body as too large."""
        return self.status == 413 or (self.status == 400 and TOO_LARGE_REASON in self.detail.lower())


def refused_limit(exc: DirectusError) -> int | None:
    """The instance's page-size cap, when ``exc`` is Directus refusing a read's ``limit``."""
    match = LIMIT_REFUSED.search(exc.detail) if exc.status == 400 else None
    return int(match.group(1)) if match else None


def _errors_of(response: Response) -> list[dict[str, Any]]:
    """The ``errors`` member of a Directus answer (empty when the body is not Directus's JSON)."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _reason(response: Response) -> str:
    """The full reason: Directus's messages, or the body. For the task log only (see :func:`summarize`)."""
    messages = [str(e.get("message") or "") for e in _errors_of(response)]
    if any(messages):
        return "; ".join(m for m in messages if m)[:2000]
    return (response.text or response.reason or "no details")[:500]



# Codes whose extensions name the field and collection (@directus/errors, @directus/validation), and
# what is wrong with the field's value; the value itself, also in the extensions, is left out.
FIELD_PROBLEMS = {
    "RECORD_NOT_UNIQUE": "must be unique",
    "VALUE_TOO_LONG": "is too long",
    "VALUE_OUT_OF_RANGE": "is out of range",
    "NOT_NULL_VIOLATION": "can't be null",
    "CONTAINS_NULL_VALUES": "contains null values",
    "INVALID_FOREIGN_KEY": "is not a valid foreign key",
    "FAILED_VALIDATION": "fails validation",
}
# Codes whose meaning needs no detail: fixed words (Directus's messages for them carry free text or none).
FIXED_PROBLEMS = {
    "INVALID_CREDENTIALS": "invalid user credentials",
    "INVALID_TOKEN": "invalid token",
    "TOKEN_EXPIRED": "token expired",
    "USER_SUSPENDED": "user suspended",
    "FORBIDDEN": "no permission to access this",
    "INVALID_PAYLOAD": "invalid payload",
    "INVALID_QUERY": "invalid query",
    "ROUTE_NOT_FOUND": "no such route",
    "CONTENT_TOO_LARGE": "content too large",
    "UNPROCESSABLE_CONTENT": "can't process content",
    "REQUESTS_EXCEEDED": "too many requests",
    "SERVICE_UNAVAILABLE": "service unavailable",
    "INTERNAL_SERVER_ERROR": "an unexpected error occurred",
    "METHOD_NOT_ALLOWED": "method not allowed",
    "COLLECTION_INACTIVE": "collection inactive",
    "LIMIT_EXCEEDED": "limit exceeded",
    "OUT_OF_TIME": "timed out",
}
# What an error code and a schema name look like; anything else in their place is not shown.
CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}")
RULE = re.compile(r"[a-z_]{1,32}")
MAX_ERRORS_SHOWN = 5


def summarize(status: int, errors: Sequence[Mapping[str, Any]]) -> tuple[str, tuple[str, ...]]:
    """The safe form of a Directus error answer and its error codes.

    ``RECORD_NOT_UNIQUE: field "email" in collection "people" must be unique``; an unknown code gives
    ``SOME_CODE (Bad Request)``, an answer without codes the status phrase.
    """
    summaries: list[str] = []
    codes: list[str] = []
    for error in errors:
        extensions = error.get("extensions")
        extensions = extensions if isinstance(extensions, Mapping) else {}
        code = _fits(CODE, extensions.get("code"))
        if code is None:
            continue
        codes.append(code)
        text = _error_summary(status, code, extensions, str(error.get("message") or ""))
        if text not in summaries:
            summaries.append(text)
    if not summaries:
        return status_phrase(status), tuple(codes)
    more = len(summaries) - MAX_ERRORS_SHOWN
    shown = "; ".join(summaries[:MAX_ERRORS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
    return shown, tuple(codes)


def _error_summary(status: int, code: str, extensions: Mapping[str, Any], message: str) -> str:
    if code in FIELD_PROBLEMS:
        field = _fits(NAME, extensions.get("field"))
        collection = _fits(NAME, extensions.get("collection"))
        subject = f'field "{field}"' if field else "a value"
        if collection:
            subject += f' in collection "{collection}"'
        text = f"{code}: {subject} {FIELD_PROBLEMS[code]}"
        constraint = _fits(NAME, extensions.get("constraint"))
        if code == "INVALID_FOREIGN_KEY" and constraint and not field:
            text += f' (constraint "{constraint}")'
        rule = _fits(RULE, extensions.get("type"))
        if code == "FAILED_VALIDATION" and rule:
            text += f' (rule "{rule}")'
        return text
    if code in FIXED_PROBLEMS:
        text = f"{code}: {FIXED_PROBLEMS[code]}"
        if code == "INVALID_PAYLOAD" and TOO_LARGE_REASON in message.lower():
            text += " (request entity too large)"
        if code == "INVALID_QUERY" and (cap := LIMIT_REFUSED.search(message)):
            text += f' ("limit" must be less than or equal to {int(cap.group(1))})'
        return text
    return f"{code} ({status_phrase(status)})"


def _fits(pattern: re.Pattern[str], value: Any) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def status_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status (never the server's own words)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"

