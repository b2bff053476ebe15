"""``compare`` beyond the numbers (which test_oracle checks): the 400s, the resolved range, the
cache key, and its price in queries."""

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from api.tests.conftest import ENDPOINTS, TODAY, analytics_data


@pytest.fixture
def public(db, settings, frozen_today) -> APIClient:
    settings.ANALYTICS_PUBLIC_READ = True
    settings.ANALYTICS_CACHE_SECONDS = 60
    return APIClient()


def _details(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.content
    details: list[dict[str, Any]] = response.json()["error"]["details"]
    return details


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "compare needs a start: give year or start_date"),
        ({"end_date": "2025-01-01"}, "compare needs a start: give year or start_date"),
        (
            {"start_date": "2026-01-11"},
            "compare needs a range that has started: 2026-01-11 is after today",
        ),
        (
            {"year": 1900},
            "the comparison range 1899-01-01..1899-12-31 is outside 1900-01-01..2100-12-31",
        ),
        (
            {"start_date": "1900-01-01", "end_date": "1900-01-01", "compare": "previous_period"},
            "the comparison range 1899-12-31..1899-12-31 is outside 1900-01-01..2100-12-31",
        ),
    ],
)
def test_a_comparison_without_a_resolvable_range_is_400(public, url, body, reason):
    body = {"compare": "previous_year", **body}
    assert _details(public.post(url, body, format="json")) == [
        {"field": "compare", "reason": reason}
    ]


def test_an_unknown_compare_is_400(public):
    details = _details(public.post(ENDPOINTS[0], {"year": 2025, "compare": "week"}, format="json"))
    assert details == [
        {"field": "compare", "reason": "must be one of: previous_period, previous_year"}
    ]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_the_earliest_comparable_range_and_an_open_end(public, url):
    analytics_data(seed=3, views=300)
    first = public.post(
        url,
        {"start_date": "1901-01-01", "end_date": "1901-12-31", "compare": "previous_year"},
        format="json",
    ).json()
    assert first["meta"]["compare"]["start_date"] == "1900-01-01"
    answer = public.post(
        url, {"start_date": "2025-12-01", "compare": "previous_period"}, format="json"
    ).json()
    # The open end is today; the same number of days (41) just before.
    assert answer["meta"]["compare"] == {
        "kind": "previous_period",
        "start_date": "2025-10-21",
        "end_date": "2025-11-30",
        "current_start_date": "2025-12-01",
        "current_end_date": TODAY.date().isoformat(),
    }
    assert answer["meta"]["filters"]["end_date"] is None
    for row in answer["results"]:
        assert {"previous_views", "change_pct"} <= set(row)


def test_rows_gain_fields_only_with_compare_and_unknown_authors_stay_empty(public):
    analytics_data(seed=3, views=300)
    plain = public.post(ENDPOINTS[2], {"year": 2025}, format="json").json()
    assert plain["meta"]["compare"] is None
    assert set(plain["results"][0]) == {"blog_id", "title", "username", "views"}
    nobody = {"year": 2025, "author_username": "nobody", "compare": "previous_year"}
    for url in ENDPOINTS:
        answer = public.post(url, nobody, format="json").json()
        assert answer["results"] == [], url
        assert answer["meta"]["compare"]["start_date"] == "2024-01-01", url


def test_the_cache_keeps_compared_and_plain_answers_apart(public):
    analytics_data(seed=3, views=300)
    url, body = ENDPOINTS[3], {"year": 2025}
    plain = public.post(url, body, format="json").json()
    compared = public.post(url, {**body, "compare": "previous_year"}, format="json").json()
    assert compared["meta"]["cached"] is False
    again = public.post(url, {**body, "compare": "previous_year"}, format="json").json()
    assert again["meta"]["cached"] is True and again["results"] == compared["results"]
    assert "previous_views" not in public.post(url, body, format="json").json()["results"][0]
    assert plain["results"][0]["views"] == compared["results"][0]["views"]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_comparison_costs_one_query_more(public, url):
    analytics_data(seed=6, views=400)
    body = {"author_username": "bob", "country_codes": ["US", "DE"], "start_date": "2024-02-03"}

    def queries(body: dict[str, Any]) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = public.post(url, body, format="json", HTTP_CACHE_CONTROL="no-cache")
            assert response.status_code == 200
        return len(captured.captured_queries)

    plain = queries(body)  # (after it, the country codes are known for a minute)
    assert queries({**body, "compare": "previous_period"}) == queries(body) + 1, plain
