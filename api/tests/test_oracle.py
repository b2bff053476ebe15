"""Every endpoint against an independent recount from raw, over random data and filters."""

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from api.tests import oracle
from api.tests.conftest import AUTHORS, COUNTRIES, TODAY, analytics_data
from core.models import Blog
from core.sql import month_start, next_month
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending


def _random_dates(rng: random.Random) -> dict[str, Any]:
    def day() -> date:
        # Month edges often, to exercise whole-month / edge-day splits.
        picked = date(2023, 11, 1) + timedelta(days=rng.randrange(820))
        return rng.choice(
            [
                picked,
                month_start(picked),
                next_month(picked) - timedelta(days=1),
            ]
        )

    kind = rng.choice(["none", "year", "start", "end", "both", "both", "both"])
    if kind == "year":
        return {"year": rng.choice([2023, 2024, 2025, 2026])}
    if kind == "start":
        return {"start_date": day().isoformat()}
    if kind == "end":
        return {"end_date": day().isoformat()}
    if kind == "both":
        first, second = sorted([day(), day()])
        return {"start_date": first.isoformat(), "end_date": second.isoformat()}
    return {}


def _random_filters(rng: random.Random) -> dict[str, Any]:
    body = _random_dates(rng)
    if rng.random() < 0.35:
        body["country_codes"] = [
            code if rng.random() < 0.7 else code.lower()
            for code in rng.sample(COUNTRIES, rng.randint(1, 4))
        ]
    if rng.random() < 0.35:
        body["exclude_country_codes"] = rng.sample(COUNTRIES, rng.randint(1, 3))
    if rng.random() < 0.3:
        body["author_username"] = rng.choice([*AUTHORS, "nobody"])
    return body


@pytest.fixture
def client(db, frozen_today, settings) -> APIClient:
    settings.ANALYTICS_PUBLIC_READ = True
    settings.ANALYTICS_CACHE_SECONDS = 0
    return APIClient()


def _post(client: APIClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, body, format="json")
    assert response.status_code == 200, (body, response.content)
    return response.json()


@pytest.mark.parametrize(
    ("seed", "absorbed_at"),
    [
        (1, None),
        # The open month mid-2025: blog x country questions read its months from daily rows.
        (2, datetime(2025, 6, 20, tzinfo=UTC)),
    ],
)
def test_every_endpoint_matches_a_recount_from_raw(client, seed, absorbed_at):
    analytics_data(seed=seed, absorbed_at=absorbed_at)
    rng = random.Random(seed * 1000)
    for _ in range(30):
        body = _random_filters(rng)

        grouped = {
            **body,
            "limit": rng.choice([1, 3, 100, 1000]),
            "offset": rng.choice([0, 0, 2, 9]),
        }
        for kind, expected in (
            ("country", oracle.by_country(body)),
            ("user", oracle.by_author(body)),
        ):
            answer = _post(client, f"/api/analytics/blog-views/{kind}/", grouped)
            page = expected[grouped["offset"] : grouped["offset"] + grouped["limit"]]
            assert answer["results"] == page, (kind, grouped)
            assert answer["meta"]["total"] == len(expected), (kind, grouped)

        top = {**body, "limit": rng.choice([1, 3, 10, 100])}
        for kind, expected in (
            ("blog", oracle.top_blogs(body)),
            ("user", oracle.by_author(body)),
            ("country", oracle.by_country(body)),
        ):
            answer = _post(client, f"/api/analytics/top/{kind}/", top)
            assert answer["results"] == expected[: top["limit"]], (kind, top)
            assert answer["meta"]["total"] == len(expected), (kind, top)

        series = {**body}
        if rng.random() < 0.6:
            series["compare_period"] = rng.choice(["day", "week", "month", "year"])
        try:
            expected = oracle.performance(series, today=TODAY.date())
        except oracle.Rejected:
            response = client.post("/api/analytics/performance/", series, format="json")
            assert response.status_code == 400, series
            assert response.json()["error"]["details"][0]["field"] == "compare_period"
        else:
            answer = _post(client, "/api/analytics/performance/", series)
            assert answer["results"] == expected, series


def _tied_data() -> None:
    """Authors and countries with equal views (only their keys order them), part absorbed.

    Each author has 6 views, 2 in each of US, DE and ET ("Zed" and "ana_b" over two blogs);
    "bob" has one more, from FR.
    """
    day = datetime(2025, 3, 14, 12, tzinfo=UTC)
    views = []
    for n, name in enumerate(AUTHORS):
        author = get_user_model().objects.create_user(username=name)
        blogs = [
            Blog.objects.create(title=f"{name} {k}", author=author, created_at=day)
            for k in range(2 if n < 2 else 1)
        ]
        views += [
            (blogs[i % len(blogs)].pk, ("US", "DE", "ET")[i % 3], day + timedelta(days=n + i))
            for i in range(6)
        ]
        if name == "bob":
            views.append((blogs[0].pk, "FR", day))
    views_record(views=views[: len(views) // 2])
    rollups_absorb_pending()
    views_record(views=views[len(views) // 2 :])


def test_pages_at_the_edges_match_a_recount_from_raw(client):
    _tied_data()
    for body in (
        {},
        {"country_codes": ["US", "de"]},
        {"exclude_country_codes": ["ET"]},
        {"author_username": "bob"},
        {"author_username": "nobody"},
        {"year": 2025},
    ):
        for kind, expected in (
            ("country", oracle.by_country(body)),
            ("user", oracle.by_author(body)),
        ):
            # Every page of every size: ties across each boundary, the last partial page, and
            # offsets at and past the end (an empty page, the total still counted).
            for limit in (1, 2, 3, 1000):
                for offset in range(len(expected) + 3):
                    paged = {**body, "limit": limit, "offset": offset}
                    answer = _post(client, f"/api/analytics/blog-views/{kind}/", paged)
                    assert answer["results"] == expected[offset : offset + limit], (kind, paged)
                    assert answer["meta"]["total"] == len(expected), (kind, paged)
            for limit in (1, 2, 100):
                top = {**body, "limit": limit}
                answer = _post(client, f"/api/analytics/top/{kind}/", top)
                assert answer["results"] == expected[:limit], (kind, top)


@pytest.mark.skipif(
    not settings.DATABASE_IS_POSTGRES, reason="SQLite compares text by code point already"
)
def test_ties_are_ordered_by_code_point_under_a_dictionary_collation(client):
    # The official postgres image's databases sort text as en_US does ("ana_b" before "Zed"):
    # the paged SQL must still order ties as API.md says, by code point.
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE {get_user_model()._meta.db_table} "
            'ALTER COLUMN username TYPE varchar(150) COLLATE "en-US-x-icu"'
        )
    _tied_data()
    expected = oracle.by_author({})
    assert [row["username"] for row in expected] == ["bob", "Ana", "Zed", "ana_b"]
    for offset in range(len(expected)):
        paged = {"limit": 2, "offset": offset}
        answer = _post(client, "/api/analytics/blog-views/user/", paged)
        assert answer["results"] == expected[offset : offset + 2], paged
