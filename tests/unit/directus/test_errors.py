"""The safe form of Directus's errors: codes, collections, fields and keys leave the task log, values never do."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import pytest
from requests import ConnectionError as RequestsConnectionError
from requests import Response

from directus_sync.airflow.failures import is_permanent, safe_error
from directus_sync.directus.client import DirectusClient
from directus_sync.directus.errors import DirectusError, refused_limit, summarize
from directus_sync.directus.hook import DirectusHook

SECRET = "leak-me-7f3a@example.com"


def error(code: str, message: str, **extensions: Any) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code, **extensions}}


# Each as Directus 12 answers it (@directus/errors, @directus/validation, the API's error handler).
CASES = [
    (error("RECORD_NOT_UNIQUE", f'Value "{SECRET}" for field "email" in collection "people" has to be unique.',
           collection="people", field="email", value=SECRET),
     'RECORD_NOT_UNIQUE: field "email" in collection "people" must be unique'),
    (error("VALUE_TOO_LONG", f'Value "{SECRET}" for field "email" in collection "people" is too long.',
           collection="people", field="email", value=SECRET),
     'VALUE_TOO_LONG: field "email" in collection "people" is too long'),
    (error("VALUE_OUT_OF_RANGE", f'Numeric value "{SECRET}" for field "age" in collection "people" is out of range.',
           collection="people", field="age", value=SECRET),
     'VALUE_OUT_OF_RANGE: field "age" in collection "people" is out of range'),
    (error("NOT_NULL_VIOLATION", 'Value for field "email" in collection "people" can\'t be null.',
           collection="people", field="email"),
     'NOT_NULL_VIOLATION: field "email" in collection "people" can\'t be null'),
    (error("CONTAINS_NULL_VALUES", 'Field "email" in collection "people" contains null values.',
           collection="people", field="email"),
     'CONTAINS_NULL_VALUES: field "email" in collection "people" contains null values'),
    (error("INVALID_FOREIGN_KEY", f'Invalid foreign key "{SECRET}" for field "team" in collection "people".',
           collection="people", field="team", value=SECRET),
     'INVALID_FOREIGN_KEY: field "team" in collection "people" is not a valid foreign key'),
    (error("INVALID_FOREIGN_KEY", f'Invalid foreign key "{SECRET}" for constraint "people_team_foreign".',
           value=SECRET, constraint="people_team_foreign"),
     'INVALID_FOREIGN_KEY: a value is not a valid foreign key (constraint "people_team_foreign")'),
    (error("FAILED_VALIDATION", f'Validation failed for field "email". Value can\'t be "{SECRET}".',
           field="email", path=[], type="neq", invalid=SECRET),
     'FAILED_VALIDATION: field "email" fails validation (rule "neq")'),
    (error("INVALID_PAYLOAD", "Invalid payload. request entity too large.", reason="request entity too large"),
     "INVALID_PAYLOAD: invalid payload (request entity too large)"),
    (error("INVALID_PAYLOAD", f'Invalid payload. Unexpected token in JSON at "{SECRET}".',
           reason=f'Unexpected token in JSON at "{SECRET}"'),
     "INVALID_PAYLOAD: invalid payload"),
    (error("INVALID_QUERY", 'Invalid query. "limit" must be less than or equal to 100.',
           reason='"limit" must be less than or equal to 100'),
     'INVALID_QUERY: invalid query ("limit" must be less than or equal to 100)'),
    (error("INTERNAL_SERVER_ERROR", f'duplicate key value violates unique constraint: Key (email)=({SECRET})'),
     "INTERNAL_SERVER_ERROR: an unexpected error occurred"),
    (error("FORBIDDEN", "You don't have permission to access this."), "FORBIDDEN: no permission to access this"),
    # A Flow's "throw error" operation: its code is shown, its message (which may quote the item) is not.
    (error("DELETE_REFUSED", f"{SECRET} is archived, not deleted"), "DELETE_REFUSED (Bad Request)"),
]


@pytest.mark.parametrize(("answer", "safe"), CASES, ids=[c[0]["extensions"]["code"] for c in CASES])
def test_each_error_code_is_reduced_to_what_identifies_the_problem(answer: dict[str, Any], safe: str) -> None:
    exc = DirectusError.from_errors("directus_b", "POST", "/items/people", 400, [answer])
    assert str(exc) == f"Directus connection 'directus_b': POST /items/people failed (400): {safe}"
    assert SECRET not in str(exc) and SECRET not in repr(exc) and SECRET not in safe_error(exc)
    assert exc.codes == (answer["extensions"]["code"],)
    assert answer["message"] in exc.detail  # the full text, for the task log


def test_answers_without_codes_keep_only_the_status_phrase() -> None:
    assert summarize(400, [{"message": f"{SECRET} is wrong"}]) == ("Bad Request", ())
    assert summarize(502, []) == ("Bad Gateway", ())
    assert summarize(599, []) == ("HTTP 599", ())


def test_extension_values_that_are_not_names_are_left_out() -> None:
    # Names are identifiers; anything else in their place (or in the code's) is not shown.
    safe, codes = summarize(400, [
        error("RECORD_NOT_UNIQUE", "x", collection="people", field=SECRET),
        {"message": SECRET, "extensions": {"code": SECRET}},
        error("FAILED_VALIDATION", "x", field="email", type=SECRET),
    ])
    assert SECRET not in safe and codes == ("RECORD_NOT_UNIQUE", "FAILED_VALIDATION")
    assert safe == ('RECORD_NOT_UNIQUE: a value in collection "people" must be unique; '
                    'FAILED_VALIDATION: field "email" fails validation')


def test_many_errors_are_summed_up_once_each_and_cut_short() -> None:
    errors = [error("FAILED_VALIDATION", "x", field=f"f{n}", type="required") for n in range(8)]
    safe, codes = summarize(400, errors + errors)
    assert safe.count("FAILED_VALIDATION") == 5 and safe.endswith("; and 3 more")
    assert len(codes) == 16


def response(status: int, body: Any, content_type: str = "application/json") -> Response:
    answer = Response()
    answer.status_code = status
    answer._content = (json.dumps(body) if not isinstance(body, str) else body).encode()
    answer.headers["Content-Type"] = content_type
    return answer


def test_an_answer_that_is_not_json_is_not_echoed() -> None:
    exc = DirectusError.from_response("c", "POST", "/items/a", response(
        413, f"<html>413 Request Entity Too Large {SECRET}</html>", "text/html"))
    assert str(exc) == f"Directus connection 'c': POST /items/a failed (413): {HTTPStatus(413).phrase}"
    assert exc.too_large and SECRET in exc.detail


def test_what_the_sync_relies_on_still_works_on_the_safe_error() -> None:
    limit = DirectusError.from_response("c", "GET", "/activity", response(400, {"errors": [error(
        "INVALID_QUERY", 'Invalid query. "limit" must be less than or equal to 100.')]}))
    assert refused_limit(limit) == 100
    too_large = DirectusError.from_response("c", "POST", "/items/a", response(400, {"errors": [error(
        "INVALID_PAYLOAD", "Invalid payload. request entity too large.")]}))
    assert too_large.too_large
    query = DirectusError.from_errors("c", "PATCH", "/items/a", 400, [error("INVALID_QUERY", "Invalid query. x.")])
    assert is_permanent(query)
    unique = DirectusError.from_errors("c", "POST", "/items/a", 400, [error("RECORD_NOT_UNIQUE", "x")])
    assert not is_permanent(unique) and not unique.too_large


class FakeSession:
    """A requests session that answers one thing."""

    def __init__(self, answer: Response | Exception) -> None:
        self.answer = answer

    def request(self, *args: Any, **kwargs: Any) -> Response:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def hook_answering(answer: Response | Exception) -> DirectusHook:
    hook = DirectusHook("directus_b")
    hook.__dict__["client"] = DirectusClient("directus_b", "http://directus.invalid",
                                             FakeSession(answer))  # type: ignore[arg-type]
    return hook


def test_the_hook_raises_the_safe_error_and_logs_the_full_text_once(caplog: pytest.LogCaptureFixture) -> None:
    body = {"errors": [error("RECORD_NOT_UNIQUE", f'Value "{SECRET}" for field "email" in collection "people" '
                             "has to be unique.", collection="people", field="email", value=SECRET)]}
    with caplog.at_level(logging.WARNING, "directus_sync.directus.client"), pytest.raises(DirectusError) as raised:
        hook_answering(response(400, body)).create_items("people", "id", [{"id": 1, "email": SECRET}])
    assert SECRET not in str(raised.value)
    assert 'RECORD_NOT_UNIQUE: field "email" in collection "people" must be unique' in str(raised.value)
    assert [r.getMessage().count(SECRET) for r in caplog.records] == [1]  # the task log keeps it


def test_a_connection_error_names_its_kind_not_the_url() -> None:
    failure = RequestsConnectionError(f"Max retries exceeded with url: /items/a?filter={SECRET}")
    with pytest.raises(DirectusError) as raised:
        hook_answering(failure).request("GET", "/items/a")
    assert str(raised.value) == ("Directus connection 'directus_b': GET /items/a failed: "
                                 "ConnectionError (no answer from the instance)")
    assert SECRET in raised.value.detail
    assert safe_error(failure) == "ConnectionError (see the task log)"
