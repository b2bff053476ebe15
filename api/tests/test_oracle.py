"""Every endpoint against an independent recount from raw, over random data and filters."""

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from api.planner import FEW_COUNTRIES
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
    ("seed", "absorbed_at", "absorbed_share"),
    [
        (1, None, 0.8),
        # The open month mid-2025: blog x country questions read its months from daily rows.
        (2, datetime(2025, 6, 20, tzinfo=UTC), 0.8),
        # Tail-heavy: most views not absorbed (every answer mostly from raw).
        (3, None, 0.1),
    ],
)
def test_every_endpoint_matches_a_recount_from_raw(client, seed, absorbed_at, absorbed_share):
    analytics_data(seed=seed, absorbed_at=absorbed_at, absorbed_share=absorbed_share)
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


def test_ranges_answered_from_kept_counts_match_a_recount_from_raw(client):
    """Distinct blogs per country over the ranges PostgreSQL answers from counts kept with the
    presence rows: all time, ranges holding every absorbed day but not every tail view, ranges
    reaching the last absorbed day (from the per-last-day counts), whole months of one year
    (from the per-month-range counts), and ranges just short of those (from the bits). The
    tail has pairs new for all time, pairs known from other years or from before the range,
    and views outside the range."""
    # A blog viewed only on the first and the last absorbed day, from one country each.
    edge = Blog.objects.create(
        title="Edge", author=get_user_model().objects.create_user(username="edge_author")
    )
    views_record(
        views=[
            (edge.pk, "ET", datetime(2024, 1, 1, tzinfo=UTC)),
            (edge.pk, "US", datetime(2025, 12, 31, 12, tzinfo=UTC)),
        ]
    )
    blog_ids = analytics_data(seed=5, absorbed_share=0.5)
    newcomer = Blog.objects.create(title="New", author=Blog.objects.get(pk=blog_ids[0]).author)
    views_record(
        views=[
            (newcomer.pk, "US", datetime(2025, 12, 31, 23, tzinfo=UTC)),
            (newcomer.pk, "DE", datetime(2026, 1, 9, tzinfo=UTC)),
            (blog_ids[-1], "ET", datetime(2023, 12, 31, tzinfo=UTC)),
            (blog_ids[0], "US", datetime(2026, 1, 10, tzinfo=UTC)),
        ]
    )
    for dates in (
        {},
        {"start_date": "2024-01-01", "end_date": "2025-12-31"},
        {"start_date": "2023-12-31", "end_date": "2026-01-09"},
        {"start_date": "2020-01-01"},
        {"end_date": "2030-12-31"},
        # Not every absorbed day: from the presence rows.
        {"start_date": "2024-01-02", "end_date": "2026-01-10"},
        {"start_date": "2023-06-01", "end_date": "2025-12-30"},
        {"start_date": "2025-12-31"},
        {"start_date": "2025-10-01", "end_date": "2025-12-31"},
        {"start_date": "2025-12-01", "end_date": "2026-01-09"},
        {"start_date": "2025-10-01", "end_date": "2025-12-30"},
        {"start_date": "2024-01-02", "end_date": "2025-12-31"},
        # Whole months of one year: from the per-month-range counts (a tail pair new in the
        # range, known from the year's other months, or from another year).
        {"start_date": "2025-02-01", "end_date": "2025-05-31"},
        {"start_date": "2025-12-01", "end_date": "2025-12-31"},
        {"start_date": "2024-02-01", "end_date": "2024-02-29"},
        {"start_date": "2024-01-01", "end_date": "2024-11-30"},
        {"start_date": "2026-01-01", "end_date": "2026-01-31"},
        # Just short of whole months: from the bits.
        {"start_date": "2025-02-01", "end_date": "2025-05-30"},
    ):
        for filters in (
            {},
            {"exclude_country_codes": ["US"]},
            {"country_codes": ["DE", "ET"]},
            {"author_username": AUTHORS[0]},
        ):
            body = {**dates, **filters}
            expected = oracle.by_country(body)
            answer = _post(client, "/api/analytics/blog-views/country/", body)
            assert answer["results"] == expected, body
            top = _post(client, "/api/analytics/top/country/", {**body, "limit": 2})
            assert top["results"] == expected[:2], body


def test_a_tail_pair_is_new_in_a_range_exactly_when_its_last_absorbed_day_is_before_it(client):
    """A range reaching the last absorbed day adds a tail view's (country, blog) pair to the
    distinct blogs only when the pair's last absorbed day is before the range's first day: a
    pair last seen on that very day is counted once, one last seen the day before (or in the
    year before a whole year) counts again through the tail, as does a pair never seen."""
    ada = get_user_model().objects.create_user(username="ada")
    blogs = [
        Blog.objects.create(
            title=f"Blog {n}", author=ada, created_at=datetime(2025, 1, 1, tzinfo=UTC)
        )
        for n in range(5)
    ]
    on_start, day_before, last_year, unseen, elsewhere = (blog.pk for blog in blogs)
    views_record(
        views=[
            (on_start, "US", datetime(2026, 1, 5, 23, 59, tzinfo=UTC)),
            (day_before, "US", datetime(2026, 1, 4, 12, tzinfo=UTC)),
            (last_year, "US", datetime(2025, 12, 31, 23, tzinfo=UTC)),
            (elsewhere, "DE", datetime(2026, 1, 8, tzinfo=UTC)),
        ]
    )
    rollups_absorb_pending()
    views_record(
        views=[(blog, "US", TODAY) for blog in (on_start, day_before, last_year, unseen)]
        + [(elsewhere, "US", TODAY)]
    )
    for body, us_blogs in (
        ({"start_date": "2026-01-05"}, 5),
        ({"start_date": "2026-01-05", "end_date": "2026-01-10"}, 5),
        ({"start_date": "2026-01-06", "end_date": "2026-01-31"}, 5),
        ({"year": 2026}, 5),
        ({}, 5),
        ({"start_date": "2026-01-05", "author_username": "ada", "country_codes": ["US"]}, 5),
    ):
        expected = oracle.by_country(body)
        assert {row["country_code"]: row["blogs"] for row in expected}["US"] == us_blogs
        answer = _post(client, "/api/analytics/blog-views/country/", body)
        assert answer["results"] == expected, body
        top = _post(client, "/api/analytics/top/country/", {**body, "limit": 1})
        assert top["results"] == expected[:1], body


def test_edges_read_as_their_month_minus_the_days_outside_match_a_recount_from_raw(client):
    """A range that covers most of a month reads that month's rows minus the daily rows of its
    days outside the range. A blog, an author and a country viewed only on those outside days
    must then be left out (their views sum to zero), not listed with 0 views or counted as a
    viewed blog."""
    analytics_data(seed=6, absorbed_share=1.0)
    outsider = get_user_model().objects.create_user(username="outsider")
    only_outside = Blog.objects.create(title="Outside", author=outsider)
    views_record(
        views=[
            # Before and after the ranges below, inside their months.
            (only_outside.pk, "FR", datetime(2025, 3, 1, 8, tzinfo=UTC)),
            (only_outside.pk, "NZ", datetime(2025, 3, 2, 23, tzinfo=UTC)),
            (only_outside.pk, "JP", datetime(2025, 5, 31, 1, tzinfo=UTC)),
            (only_outside.pk, "ET", datetime(2025, 2, 3, tzinfo=UTC)),
        ]
    )
    rollups_absorb_pending()
    for dates in (
        {"start_date": "2025-03-03", "end_date": "2025-05-30"},
        {"start_date": "2025-03-03", "end_date": "2025-03-31"},
        {"start_date": "2025-03-03", "end_date": "2025-04-20"},
        {"start_date": "2025-02-04", "end_date": "2025-03-30"},
        {"start_date": "2025-05-02", "end_date": "2025-05-30"},
    ):
        for filters in (
            {},
            {"country_codes": ["FR", "US"]},
            {"exclude_country_codes": ["US"]},
            {"author_username": "outsider"},
        ):
            body = {**dates, **filters}
            for kind, expected in (
                ("country", oracle.by_country(body)),
                ("user", oracle.by_author(body)),
            ):
                answer = _post(client, f"/api/analytics/blog-views/{kind}/", body)
                assert answer["results"] == expected, (kind, body)
                assert answer["meta"]["total"] == len(expected), (kind, body)
            answer = _post(client, "/api/analytics/top/blog/", {**body, "limit": 100})
            assert answer["results"] == oracle.top_blogs(body), body
            for period in ("day", "month"):
                series = {**body, "compare_period": period}
                answer = _post(client, "/api/analytics/performance/", series)
                assert answer["results"] == oracle.performance(series, today=TODAY.date()), series


def test_the_last_30_and_90_days_from_trailing_rows_match_a_recount_from_raw(client):
    """Blog and author questions over the 30 or 90 days up to the open day (or past it) read
    the trailing rows and the daily rows from the open day on; ranges ending just before the
    open day, or starting a day off, do not. A blog viewed only on the day before a window
    must be left out; late views inside a window, in the tail or absorbed after the open day
    moved, count."""
    analytics_data(seed=7, absorbed_share=0.7)
    outsider = get_user_model().objects.create_user(username="outsider")
    only_outside = Blog.objects.create(title="Outside", author=outsider)
    late = Blog.objects.get(title="Blog 3")
    views_record(
        views=[
            (only_outside.pk, "US", datetime(2025, 12, 11, 12, tzinfo=UTC)),
            (only_outside.pk, "DE", datetime(2025, 10, 12, 12, tzinfo=UTC)),
            (late.pk, "US", datetime(2025, 12, 20, tzinfo=UTC)),
            (late.pk, "DE", datetime(2026, 1, 10, 9, tzinfo=UTC)),
        ]
    )
    for now in (TODAY, TODAY + timedelta(days=2)):
        with time_machine.travel(now, tick=False):
            # The day before the open day: in the windows, not in a range ending before it.
            views_record(views=[(only_outside.pk, "ET", now - timedelta(days=1))])
            rollups_absorb_pending()
            views_record(views=[(late.pk, "ET", datetime(2025, 12, 28, tzinfo=UTC))])
            open_day = now.date()
            for span in (30, 90):
                start = open_day - timedelta(days=span - 1)
                for dates in (
                    {"start_date": start.isoformat(), "end_date": open_day.isoformat()},
                    {"start_date": start.isoformat()},
                    {"start_date": start.isoformat(), "end_date": str(open_day - timedelta(1))},
                    {"start_date": start.isoformat(), "end_date": str(open_day + timedelta(5))},
                    {"start_date": start.isoformat(), "end_date": str(open_day - timedelta(2))},
                    {"start_date": str(start + timedelta(1)), "end_date": open_day.isoformat()},
                ):
                    for filters in (
                        {},
                        {"country_codes": ["US", "DE", "ET"]},
                        {"exclude_country_codes": ["US"]},
                        {"author_username": "outsider"},
                        {"author_username": AUTHORS[1], "country_codes": ["US", "DE"]},
                    ):
                        body = {**dates, **filters}
                        answer = _post(client, "/api/analytics/blog-views/user/", body)
                        assert answer["results"] == oracle.by_author(body)[:100], body
                        top = _post(client, "/api/analytics/top/blog/", {**body, "limit": 100})
                        assert top["results"] == oracle.top_blogs(body)[:100], body


def test_tail_views_around_today_are_counted_on_their_own_days(client):
    """Tail views on both sides of today's two midnights (the last ones a minute ahead, which
    ingest accepts) each count on their own UTC day: the planner tells today's tail views apart
    by comparing times, and any slip at a boundary moves a view to the next or previous day."""
    now = datetime(2026, 1, 10, 23, 58, tzinfo=UTC)
    ada = get_user_model().objects.create_user(username="ada")
    blog = Blog.objects.create(title="Midnights", author=ada, created_at=now - timedelta(days=9))
    today = datetime(2026, 1, 10, tzinfo=UTC)
    moments = [
        today - timedelta(microseconds=1),
        today,
        today + timedelta(hours=12),
        today + timedelta(days=1) - timedelta(microseconds=1),
        today + timedelta(days=1),
        now + timedelta(minutes=3),
    ]
    with time_machine.travel(now, tick=False):
        views_record(views=[(blog.pk, "US", moment) for moment in moments[:2]])
        rollups_absorb_pending()
        views_record(views=[(blog.pk, "DE", moment) for moment in moments])
        for body in (
            {"start_date": "2026-01-09", "end_date": "2026-01-11", "compare_period": "day"},
            {"compare_period": "day"},
            {"end_date": "2026-01-11", "country_codes": ["DE"]},
        ):
            answer = _post(client, "/api/analytics/performance/", body)
            assert answer["results"] == oracle.performance(body, today=now.date()), body
        answer = _post(
            client,
            "/api/analytics/performance/",
            {"start_date": "2026-01-09", "end_date": "2026-01-11", "compare_period": "day"},
        )
        assert [row["views"] for row in answer["results"]] == [2, 4, 2]


def test_an_open_start_reaches_a_late_tail_view_before_the_first_absorbed_day(client):
    """The series of an open range starts at the earliest matching view, also when that one
    is a late view still in the tail, months before the first absorbed day of the filter."""
    ada = get_user_model().objects.create_user(username="ada")
    blog = Blog.objects.create(
        title="Late", author=ada, created_at=datetime(2024, 1, 1, tzinfo=UTC)
    )
    views_record(views=[(blog.pk, "US", datetime(2025, 6, 1, 8, tzinfo=UTC))])
    rollups_absorb_pending()
    views_record(
        views=[
            (blog.pk, "US", datetime(2025, 3, 2, 23, tzinfo=UTC)),
            (blog.pk, "DE", datetime(2025, 2, 1, tzinfo=UTC)),
            (blog.pk, "US", datetime(2025, 12, 24, tzinfo=UTC)),
        ]
    )
    for body, first in (
        ({"compare_period": "month"}, "2025-02-01"),
        ({"compare_period": "month", "country_codes": ["US"]}, "2025-03-02"),
        (
            {"compare_period": "month", "author_username": "ada", "country_codes": ["US"]},
            "2025-03-02",
        ),
    ):
        answer = _post(client, "/api/analytics/performance/", body)
        assert answer["results"] == oracle.performance(body, today=TODAY.date()), body
        assert answer["results"][0]["period_start"] == first, body


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


@pytest.mark.parametrize("seed", [7, 8])
def test_comparisons_match_a_recount_from_raw(client, seed):
    """``compare`` on every endpoint: rows, previous views and change against the recount, or
    the 400 the contract gives (no start, a start after today, a range before 1900)."""
    analytics_data(seed=seed, views=1500, absorbed_at=datetime(2025, 6, 20, tzinfo=UTC))
    rng = random.Random(seed * 1000)
    today = TODAY.date()
    for _ in range(25):
        body = {**_random_filters(rng), "compare": rng.choice(["previous_period", "previous_year"])}
        if rng.random() < 0.15:
            body = {**body, "start_date": f"19{rng.choice(['00', '01'])}-0{rng.randint(1, 3)}-01"}
            body.pop("year", None)
            body.setdefault("end_date", "1901-06-30")
        try:
            resolved, earlier = oracle.comparison(body, today=today)
        except oracle.Rejected:
            for url in ("/api/analytics/top/blog/", "/api/analytics/performance/"):
                response = client.post(url, body, format="json")
                assert response.status_code == 400, (url, body, response.content)
                assert response.json()["error"]["details"][0]["field"] == "compare"
            continue
        start, end = date.fromisoformat(resolved["start_date"]), resolved["end_date"]
        expected_meta = {
            "kind": body["compare"],
            "start_date": earlier(start).isoformat(),
            "end_date": earlier(date.fromisoformat(end)).isoformat(),
            "current_start_date": start.isoformat(),
            "current_end_date": end,
        }
        grouped = {**body, "limit": rng.choice([1, 3, 100]), "offset": rng.choice([0, 0, 2])}
        for kind, count, key in (
            ("country", oracle.by_country, "country_code"),
            ("user", oracle.by_author, "username"),
        ):
            every = oracle.compared(count(resolved), key, resolved, earlier, count)
            answer = _post(client, f"/api/analytics/blog-views/{kind}/", grouped)
            page = every[grouped["offset"] : grouped["offset"] + grouped["limit"]]
            assert answer["results"] == page, (kind, grouped)
            assert answer["meta"]["compare"] == expected_meta, (kind, grouped)
        top = {**body, "limit": rng.choice([1, 3, 10])}
        for kind, count, key in (
            ("blog", oracle.top_blogs, "blog_id"),
            ("user", oracle.by_author, "username"),
            ("country", oracle.by_country, "country_code"),
        ):
            every = oracle.compared(count(resolved), key, resolved, earlier, count)
            answer = _post(client, f"/api/analytics/top/{kind}/", top)
            assert answer["results"] == every[: top["limit"]], (kind, top)
        series = {**body}
        if rng.random() < 0.6:
            series["compare_period"] = rng.choice(["day", "week", "month", "year"])
        resolved_series = {**resolved, **{k: series[k] for k in ("compare_period",) if k in series}}
        try:
            expected = oracle.performance_compared(resolved_series, today=today, earlier=earlier)
        except oracle.Rejected:
            response = client.post("/api/analytics/performance/", series, format="json")
            assert response.status_code == 400, series
        else:
            answer = _post(client, "/api/analytics/performance/", series)
            assert answer["results"] == expected, series
            assert answer["meta"]["compare"] == expected_meta


def test_previous_year_maps_feb_29_to_feb_28(client):
    author = get_user_model().objects.create_user(username="ada")
    blog = Blog.objects.create(
        title="t", author=author, created_at=datetime(2020, 1, 1, tzinfo=UTC)
    )
    views_record(
        views=[(blog.pk, "US", datetime(2023, 2, 28, 9, tzinfo=UTC))] * 2
        + [(blog.pk, "US", datetime(2024, 2, 29, 9, tzinfo=UTC))] * 3
        + [(blog.pk, "US", datetime(2023, 3, 1, 9, tzinfo=UTC))]
    )
    rollups_absorb_pending()
    body = {
        "start_date": "2024-02-28",
        "end_date": "2024-03-01",
        "compare": "previous_year",
        "compare_period": "day",
    }
    answer = _post(client, "/api/analytics/performance/", body)
    assert [(r["label"], r["views"], r["previous_views"]) for r in answer["results"]] == [
        ("2024-02-28", 0, 2),
        ("2024-02-29", 3, 2),
        ("2024-03-01", 0, 1),
    ]
    assert answer["results"][1]["change_pct"] == 50.0
    assert answer["meta"]["compare"]["start_date"] == "2023-02-28"
    top = _post(client, "/api/analytics/top/country/", {"year": 2024, "compare": "previous_year"})
    assert top["results"][0] | {"blogs": 1} == {
        "country_code": "US",
        "country_name": top["results"][0]["country_name"],
        "blogs": 1,
        "views": 3,
        "previous_views": 3,
        "change_pct": 0.0,
    }


def test_an_author_with_many_countries_named_matches_a_recount_from_raw(client):
    """More countries than ``planner.FEW_COUNTRIES``: the author's rows are walked blog by blog
    on PostgreSQL then, as without countries; with a few, found through the countries."""
    analytics_data(seed=4, absorbed_at=None, absorbed_share=0.7)
    many = [*COUNTRIES, "GB", "CA", "MX", "ES"]
    assert len(many) > FEW_COUNTRIES
    rows = 0
    for countries in (many, COUNTRIES[:2], None):
        for author in AUTHORS:
            body: dict[str, Any] = {"author_username": author}
            if countries is not None:
                body["country_codes"] = countries
            answer = _post(client, "/api/analytics/blog-views/country/", {**body, "limit": 3})
            assert answer["results"] == oracle.by_country(body)[:3], body
            answer = _post(client, "/api/analytics/top/blog/", body)
            assert answer["results"] == oracle.top_blogs(body)[:10], body
            series = {**body, "start_date": "2025-02-11", "end_date": "2025-05-20"}
            answer = _post(client, "/api/analytics/performance/", series)
            assert answer["results"] == oracle.performance(series, today=TODAY.date()), series
            rows += sum(row["views"] for row in answer["results"])
    assert rows > 0


def test_an_authors_blogs_over_several_blocks_of_ids_match_a_recount_from_raw(client):
    """On PostgreSQL an author's distinct blogs per country over a range that reaches the last
    absorbed day are counted from each (country, block of 256 blog ids) row's last days, a
    subscript per blog of the author's: blogs at both ends of a block and in another one, and
    another author's blog in between, whose views must not count. Over other ranges, from the
    author's (blog, country) pairs (a page of 100 countries) or the presence rows (a top 1)."""
    wide, other = (get_user_model().objects.create_user(username=name) for name in ("wide", "o"))
    # 5,000,192 = 256 x 19,532: the last slot of one block, the first of the next.
    ids = (5_000_191, 5_000_192, 5_000_500)
    for blog_id in ids:
        Blog.objects.create(pk=blog_id, title=f"Wide {blog_id}", author=wide)
    Blog.objects.create(pk=5_000_193, title="Other", author=other)
    views_record(
        views=[
            (5_000_191, "US", datetime(2025, 12, 20, tzinfo=UTC)),
            (5_000_192, "US", datetime(2026, 1, 2, tzinfo=UTC)),
            (5_000_500, "DE", datetime(2025, 11, 3, tzinfo=UTC)),
            (5_000_193, "ET", datetime(2026, 1, 9, tzinfo=UTC)),
            (5_000_193, "US", datetime(2026, 1, 9, tzinfo=UTC)),
        ]
    )
    rollups_absorb_pending()
    # The tail: a pair already counted, one new, one of the other author.
    views_record(
        views=[
            (5_000_192, "US", TODAY),
            (5_000_500, "US", TODAY),
            (5_000_193, "DE", TODAY),
        ]
    )
    for dates in (
        {},
        {"start_date": "2025-12-20"},
        {"start_date": "2025-12-21", "end_date": "2026-01-10"},
        {"year": 2026},
        # Not reaching the last absorbed day: by pair, or from the presence rows.
        {"start_date": "2025-11-01", "end_date": "2026-01-02"},
    ):
        for filters in (
            {"author_username": "wide"},
            {"author_username": "wide", "country_codes": ["US", "ET"]},
            {"author_username": "wide", "exclude_country_codes": ["DE"]},
        ):
            body = {**dates, **filters}
            expected = oracle.by_country(body)
            assert expected, body
            answer = _post(client, "/api/analytics/blog-views/country/", body)
            assert answer["results"] == expected, body
            top = _post(client, "/api/analytics/top/country/", {**body, "limit": 1})
            assert top["results"] == expected[:1], body
