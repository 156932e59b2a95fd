"""The connection to one instance: its URL, as the HTTP provider builds it."""

from __future__ import annotations

from directus_sync.directus.client import base_url_of


def test_base_urls_are_built_as_the_http_hook_builds_them() -> None:
    assert base_url_of("https://cms.example.com", None, None) == "https://cms.example.com"
    assert base_url_of("cms.example.com", "https", 8443) == "https://cms.example.com:8443"
    assert base_url_of("localhost", None, 8055) == "http://localhost:8055"
