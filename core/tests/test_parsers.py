"""JSON bodies that parse but that no endpoint may take: a 400 naming the problem, never a 500.

Every endpoint that takes a body goes through ``core.parsers.JSONParser``, the anonymous token
endpoints included; each case is sent to each of them, with credentials where one is needed.
"""

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from core.models import Blog
from ingest.models import BlogView

INGEST = "/api/ingest/views/"
READ = "/api/analytics/top/country/"
TOKEN = "/api/token/"
REFRESH = "/api/token/refresh/"
REBUILD = "/api/rollups/rebuild/"
EVERY_URL = [INGEST, READ, TOKEN, REFRESH, REBUILD]


@pytest.fixture
def send(
    db: None, settings: Any, auth_client: Callable[[Any], APIClient], password: str
) -> Callable[[str, str], Any]:
    """``send(url, raw_json)``: POST it as the endpoint needs (staff token; public read on)."""
    settings.ANALYTICS_PUBLIC_READ = True
    staff = get_user_model().objects.create_user(username="staff", password=password, is_staff=True)
    client = auth_client(staff)

    def post(url: str, raw: str) -> Any:
        return client.generic("POST", url, raw, content_type="application/json")

    return post


def _error(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"status", "code", "message", "details"}
    assert error["status"] == status
    return error


@pytest.mark.parametrize("url", EVERY_URL)
@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_json_nested_5000_levels_is_a_400(send: Any, url: str, opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    error = _error(send(url, opening * 5000 + "1" + closing * 5000))
    assert error["code"] == "parse_error"
    assert "nested too deeply" in error["message"]


@pytest.mark.parametrize("url", EVERY_URL)
def test_a_field_given_twice_is_a_400_naming_it(send: Any, url: str) -> None:
    """Python's JSON would keep the last value without a word (a query string's repeated
    parameter is a 400 too)."""
    error = _error(send(url, '{"limit": 2, "limit": 3, "username": "a"}'))
    assert error["details"] == [
        {"field": "limit", "reason": "given 2 times in one object; give it once"}
    ]
    nested = _error(send(url, '{"views": [{"blog_id": 1, "blog_id": 1, "blog_id": 2}]}'))
    assert nested["details"] == [
        {"field": "blog_id", "reason": "given 3 times in one object; give it once"}
    ]


@pytest.mark.parametrize("url", EVERY_URL)
def test_moderately_nested_json_is_an_ordinary_400(send: Any, url: str) -> None:
    """Within the parser's depth, the endpoint's validation answers as for any wrong type."""
    body = {name: json.loads("[" * 200 + "]" * 200) for name in ("views", "author_username")}
    assert send(url, json.dumps(body)).status_code == 400


# (url, body, the field the 400 names) for a NUL and an unpaired surrogate in each string that
# reaches the database or the answer.
STRINGS = [
    (READ, {"author_username": "ad\x00a"}, "author_username"),
    (READ, {"country_codes": ["U\x00"]}, "country_codes[0]"),
    (INGEST, {"views": [{"blog_id": 1, "country_code": "U\x00"}]}, "views[0].country_code"),
    (
        INGEST,
        {"views": [{"blog_id": 1, "country_code": "US", "viewed_at": "\x00"}]},
        "views[0].viewed_at",
    ),
    (TOKEN, {"username": "ad\x00a", "password": "x"}, "username"),
    (TOKEN, {"username": "ada", "password": "x\x00"}, "password"),
    (REFRESH, {"refresh": "\x00"}, "refresh"),
    (REBUILD, {"start_date": "2025-01-01\x00"}, "start_date"),
]


@pytest.mark.parametrize("character", ["\x00", "\ud800", "\udfff"], ids=["nul", "high", "low"])
@pytest.mark.parametrize(("url", "body", "field"), STRINGS)
def test_nul_and_unpaired_surrogates_are_a_400_naming_the_field(
    send: Any, url: str, body: dict[str, Any], field: str, character: str
) -> None:
    raw = json.dumps(body).replace("\\u0000", json.dumps(character)[1:-1])
    error = _error(send(url, raw))
    assert error["code"] == "invalid"
    assert field in error["message"]
    [detail] = error["details"]
    assert detail["field"] == field
    assert BlogView.objects.count() == 0


def test_a_field_name_with_a_nul_is_named_escaped(send: Any) -> None:
    error = _error(send(READ, '{"auth\\u0000or": "x"}'))
    assert error["details"] == [
        {
            "field": "'auth\\x00or'",
            "reason": "a field name must not contain a NUL character (\\u0000)",
        }
    ]


def test_paired_surrogates_and_escaped_backslashes_pass(send: Any, settings: Any) -> None:
    """An emoji sent as a surrogate pair is one valid character; a literal backslash before
    "u0000" is no NUL. Both reach the endpoint, which answers as usual."""
    answer = send(READ, json.dumps({"author_username": "\U0001f600"}))
    assert answer.status_code == 200, answer.content
    assert answer.json()["meta"]["filters"]["author_username"] == "\U0001f600"
    answer = send(READ, json.dumps({"author_username": "a\\u0000"}))
    assert answer.status_code == 200, answer.content
    assert answer.json()["results"] == []


def test_ingest_with_escapes_elsewhere_stores_the_batch(send: Any) -> None:
    author = get_user_model().objects.create_user(username="ada")
    blog = Blog.objects.create(title="\u00e9t\u00e9", author=author)
    raw = json.dumps({"views": [{"blog_id": blog.pk, "country_code": "us"}]})
    assert send(INGEST, raw).status_code == 202
    assert BlogView.objects.count() == 1
