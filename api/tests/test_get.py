"""GET with a query string: the same rules, the same 400s and the same answers as the POST,
with an ETag, Cache-Control and 304s."""

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from rest_framework.test import APIClient

from api.tests.conftest import ENDPOINTS, analytics_data
from core.models import Blog
from ingest.services import views_record

BODIES: list[dict[str, Any]] = [
    {},
    {"year": 2025},
    {"year": 2024, "exclude_country_codes": ["US"], "limit": 3},
    {"start_date": "2024-03-01", "end_date": "2025-02-28", "country_codes": ["us", "DE"]},
    {"author_username": "bob", "start_date": "2025-01-01"},
    {"author_username": "nobody"},
    {"year": 2025, "compare": "previous_year"},
    {"start_date": "2025-06-01", "compare": "previous_period", "country_codes": ["ET", "IN"]},
    # What the rules refuse.
    {"year": 2024, "start_date": "2024-01-01"},
    {"year": 1899},
    {"start_date": "2024-02-30"},
    {"start_date": "2024-02-01", "end_date": "2024-01-31"},
    {"country_codes": ["US", "XX"]},
    {"exclude_country_codes": ["USA"]},
    {"author_username": "a" * 151},
    {"limit": 0},
    {"limit": 1001},
    {"offset": -1},
    {"compare": "previous_year"},
    {"compare": "week", "year": 2025},
    {"compare_period": "fortnight"},
    {"granularity": "week"},
]


def query(body: dict[str, Any]) -> str:
    """``body`` as a query string: lists comma-separated."""
    return urlencode(
        {
            name: ",".join(value) if isinstance(value, list) else value
            for name, value in body.items()
        }
    )


@pytest.fixture
def public(db, settings, frozen_today) -> APIClient:
    settings.ANALYTICS_PUBLIC_READ = True
    settings.ANALYTICS_CACHE_SECONDS = 60
    return APIClient()


@pytest.fixture
def data(db):
    return analytics_data(seed=3, views=600)


def _without_time(answer: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in answer.get("meta", {}).items() if k not in ("as_of", "cached")}
    return {**answer, "meta": meta} if "meta" in answer else answer


@pytest.mark.parametrize("url", ENDPOINTS)
def test_get_gives_the_post_answer_and_the_same_400s(public, data, url):
    for body in BODIES:
        posted = public.post(url, body, format="json", HTTP_CACHE_CONTROL="no-cache")
        got = public.get(f"{url}?{query(body)}", HTTP_CACHE_CONTROL="no-cache")
        assert got.status_code == posted.status_code, (url, body, got.content)
        assert _without_time(got.json()) == _without_time(posted.json()), (url, body)


def test_lists_repeated_or_comma_separated(public, data):
    url = ENDPOINTS[4]
    expected = public.post(url, {"country_codes": ["DE", "ET", "US"]}, format="json").json()
    for string in (
        "country_codes=US,de,ET",
        "country_codes=US&country_codes=DE&country_codes=et",
        "country_codes=US,DE&country_codes=ET",
    ):
        answer = public.get(f"{url}?{string}").json()
        assert answer["results"] == expected["results"], string
        assert answer["meta"]["filters"] == expected["meta"]["filters"], string


@pytest.mark.parametrize(
    ("string", "details"),
    [
        ("year=2024&year=2025", [{"field": "year", "reason": "given 2 times; give it once"}]),
        ("colour=red", [{"field": "colour", "reason": "unknown field"}]),
        ("limit=ten", [{"field": "limit", "reason": "must be an integer"}]),
        ("limit=1.5", [{"field": "limit", "reason": "must be an integer"}]),
        ("limit=", [{"field": "limit", "reason": "must be an integer"}]),
        ("end_date=", [{"field": "end_date", "reason": "must be a date string YYYY-MM-DD"}]),
        ("country_codes=", [{"field": "country_codes", "reason": "unknown country code ''"}]),
        ("year=" + "9" * 5000, [{"field": "year", "reason": "must be an integer"}]),
        ("country_codes=US,,DE", [{"field": "country_codes", "reason": "unknown country code ''"}]),
        ("format=xml", [{"field": "format", "reason": "must be one of: json, csv"}]),
    ],
)
def test_what_a_query_string_cannot_say_is_400_naming_it(public, string, details):
    response = public.get(f"{ENDPOINTS[2]}?{string}")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["details"] == details


def test_an_unknown_type_is_404_by_get_too(public):
    assert public.get("/api/analytics/top/author/").status_code == 404


def test_etag_cache_control_and_304(public, data, settings):
    url = f"{ENDPOINTS[0]}?year=2024"
    first = public.get(url)
    etag = first["ETag"]
    assert etag.startswith('W/"') and first["Cache-Control"] == "private, max-age=60"
    assert "Accept" in first["Vary"]
    # A recomputed answer (a new as_of) with the same rows has the same ETag.
    fresh = public.get(url, HTTP_CACHE_CONTROL="no-cache")
    assert fresh.json()["meta"]["cached"] is False
    assert fresh["ETag"] == etag
    not_modified = public.get(url, HTTP_IF_NONE_MATCH=etag)
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified["ETag"] == etag
    assert not_modified["Cache-Control"] == "private, max-age=60"
    assert public.get(url, HTTP_IF_NONE_MATCH=f'"other", {etag}').status_code == 304
    assert public.get(url, HTTP_IF_NONE_MATCH="*").status_code == 304
    assert public.get(url, HTTP_IF_NONE_MATCH='W/"other"').status_code == 200
    # Other filters, another format: other ETags.
    assert public.get(f"{ENDPOINTS[0]}?year=2025")["ETag"] != etag
    assert public.get(f"{url}&format=csv")["ETag"] != etag
    # New views: the cached answer (and its ETag) holds until it expires or a no-cache read.
    views_record(views=[(data[0], "JP", datetime(2024, 5, 1, tzinfo=UTC))])
    assert public.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    changed = public.get(url, HTTP_IF_NONE_MATCH=etag, HTTP_CACHE_CONTROL="no-cache")
    assert changed.status_code == 200 and changed["ETag"] != etag
    settings.ANALYTICS_CACHE_SECONDS = 0
    assert public.get(url)["Cache-Control"] == "private, max-age=0"


def test_post_answers_carry_no_etag(public, data):
    assert "ETag" not in public.post(ENDPOINTS[0], {}, format="json")


def test_get_needs_a_token_unless_public(db, settings, auth_client, user):
    settings.ANALYTICS_PUBLIC_READ = False
    for url in ENDPOINTS:
        assert APIClient().get(url).status_code == 401
        assert auth_client(user).get(url).status_code == 200


def test_a_post_with_filters_in_its_query_string_is_400(public):
    response = public.post(f"{ENDPOINTS[2]}?year=2025&format=json", {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [
        {"field": "year", "reason": "unknown query parameter"}
    ]


def test_an_author_key_is_held_to_its_author_by_get_csv_and_realtime(
    db: None, settings: Any, frozen_today: Any, user: Any, django_user_model: Any
) -> None:
    from apikeys.services import api_key_create

    settings.ANALYTICS_PUBLIC_READ = False
    settings.REALTIME_CACHE_SECONDS = 0
    analytics_data(seed=5, views=300)
    author = django_user_model.objects.get(username="bob")
    _, secret = api_key_create(name="bob only", user=user, author=author)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    answer = client.get("/api/analytics/blog-views/user/?year=2025").json()
    assert [row["username"] for row in answer["results"]] == ["bob"]
    csv = client.get("/api/analytics/top/user/?format=csv").getvalue().decode()
    assert csv.splitlines()[1:] and all(line.startswith('"bob"') for line in csv.splitlines()[1:])
    assert client.get("/api/analytics/top/blog/?author_username=Zed").status_code == 403
    # The last 30 minutes: the key's author's views only.
    views_record(views=[(blog.pk, "US", frozen_today) for blog in Blog.objects.all()])
    realtime = client.get("/api/analytics/realtime/").json()
    assert realtime["meta"]["filters"]["author_username"] == "bob"
    assert {row["username"] for row in realtime["results"]["top_blogs"]} == {"bob"}
    assert client.get("/api/analytics/realtime/?author_username=Zed").status_code == 403
