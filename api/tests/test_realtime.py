"""``GET /api/analytics/realtime/``: the last 30 minutes per minute, exact, from the raw views."""

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core.models import Blog, Country
from ingest.models import BlogView
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending, rollups_absorb_recent
from rollups.models import RecentState, WindowBlogCountryViews, WindowBlogViews
from rollups.rebuild import rollups_rebuild
from rollups.tables import RECENT_WINDOW_ROLL_MINUTES
from rollups.tests.recount import (
    assert_summaries_exact,
    watermark,
    windows_from_raw,
    windows_in_db,
)

NOW = datetime(2026, 1, 10, 15, 30, 20, tzinfo=UTC)
URL = "/api/analytics/realtime/"


@pytest.fixture
def public(db, settings) -> Iterator[APIClient]:
    settings.ANALYTICS_PUBLIC_READ = True
    settings.REALTIME_CACHE_SECONDS = 0
    with time_machine.travel(NOW, tick=False):
        yield APIClient()


def _recount(
    *,
    countries: set[str] | None = None,
    author: str | None = None,
    limit: int = 10,
    now: datetime = NOW,
) -> dict[str, Any]:
    """The answer, one view at a time: the window is the 30 minutes ending with ``now``'s
    (at NOW, 15:01:00 <= viewed_at < 15:31:00)."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=29)
    per_minute: Counter[datetime] = Counter()
    blogs: Counter[int] = Counter()
    by_country: Counter[str] = Counter()
    for view in BlogView.objects.select_related("blog__author"):
        if not start <= view.viewed_at < start + timedelta(minutes=30):
            continue
        if countries is not None and view.country_id not in countries:
            continue
        if author is not None and view.blog.author.username != author:
            continue
        per_minute[view.viewed_at.replace(second=0, microsecond=0)] += 1
        blogs[view.blog_id] += 1
        by_country[view.country_id] += 1
    minutes = [start + timedelta(minutes=n) for n in range(30)]
    titles = {b.pk: (b.title, b.author.username) for b in Blog.objects.select_related("author")}
    names = dict(Country.objects.values_list("code", "name"))
    return {
        "views_last_5_minutes": sum(per_minute[m] for m in minutes[-5:]),
        "views_last_30_minutes": sum(per_minute.values()),
        "per_minute": [
            {"minute": m.isoformat().replace("+00:00", "Z"), "views": per_minute[m]}
            for m in minutes
        ],
        "top_blogs": [
            {"blog_id": b, "title": titles[b][0], "username": titles[b][1], "views": v}
            for b, v in sorted(blogs.items(), key=lambda item: (-item[1], item[0]))[:limit]
        ],
        "top_countries": [
            {"country_code": c, "country_name": names[c], "views": v}
            for c, v in sorted(by_country.items(), key=lambda item: (-item[1], item[0]))[:limit]
        ],
    }


def _data() -> list[int]:
    ada = get_user_model().objects.create_user(username="ada")
    bob = get_user_model().objects.create_user(username="bob")
    blogs = [
        Blog.objects.create(title=f"blog {n}", author=(ada, bob)[n % 2], created_at=NOW)
        for n in range(4)
    ]
    at = datetime(2026, 1, 10, 15, 0, tzinfo=UTC)
    views = [
        (blogs[0].pk, "US", at + timedelta(seconds=59)),  # before the window
        (blogs[0].pk, "US", at + timedelta(minutes=1)),  # its first instant
        (blogs[1].pk, "DE", at + timedelta(minutes=25, seconds=59)),  # not in the last 5
        (blogs[1].pk, "DE", at + timedelta(minutes=26)),  # the last 5 minutes' first instant
        (blogs[2].pk, "ET", at + timedelta(minutes=30, seconds=5)),  # the current minute
        (blogs[3].pk, "ET", at + timedelta(minutes=31)),  # ahead of the clock
        (blogs[3].pk, "US", at - timedelta(days=1)),  # yesterday
    ]
    views += [
        (blogs[n % 4].pk, ("US", "DE", "ET")[n % 3], at + timedelta(minutes=n)) for n in range(30)
    ]
    views_record(views=views)
    rollups_absorb_pending()
    # The tail, and a late view for an absorbed minute.
    views_record(views=[(blogs[2].pk, "IN", at + timedelta(minutes=12))] * 3)
    return [blog.pk for blog in blogs]


def test_the_last_30_minutes_match_a_recount(public):
    _data()
    answer = public.get(URL).json()
    assert answer["results"] == _recount()
    assert answer["results"]["views_last_30_minutes"] == 1 + 2 + 1 + 29 + 3
    assert answer["meta"] == {
        "filters": {
            "start_date": None,
            "end_date": None,
            "year": None,
            "country_codes": None,
            "exclude_country_codes": None,
            "author_username": None,
            "limit": 10,
        },
        "as_of": "2026-01-10T15:30:20Z",
        "window_start": "2026-01-10T15:01:00Z",
        "window_end": "2026-01-10T15:31:00Z",
        "cached": False,
    }


def test_filters_and_limit(public):
    _data()
    for query, expected in (
        ("country_codes=et,in", _recount(countries={"ET", "IN"})),
        ("exclude_country_codes=US&limit=2", _recount(countries={"DE", "ET", "IN"}, limit=2)),
        ("author_username=bob", _recount(author="bob")),
        ("author_username=nobody", _recount(author="nobody")),
    ):
        assert public.get(f"{URL}?{query}").json()["results"] == expected, query


def test_a_view_arriving_now_counts_at_once(public):
    blog_ids = _data()
    before = public.get(URL).json()["results"]["views_last_5_minutes"]
    views_record(views=[(blog_ids[0], "BR", NOW - timedelta(seconds=10))])
    after = public.get(URL).json()["results"]
    assert after["views_last_5_minutes"] == before + 1
    assert {"country_code": "BR", "country_name": "Brazil", "views": 1} in after["top_countries"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("year=2025", "year"),
        ("start_date=2026-01-10", "start_date"),
        # Unknown here: said once, not also checked as a date.
        ("start_date=bad", "start_date"),
        ("limit=0", "limit"),
        ("country_codes=XX", "country_codes"),
        ("compare=previous_year", "compare"),
        ("format=csv", "format"),
    ],
)
def test_what_realtime_refuses(public, query, field):
    response = public.get(f"{URL}?{query}")
    assert response.status_code == 400, response.content
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]


def test_cached_a_few_seconds_and_not_public_by_default(db, settings):
    settings.ANALYTICS_PUBLIC_READ = False
    assert APIClient().get(URL).status_code == 401
    settings.ANALYTICS_PUBLIC_READ = True
    settings.REALTIME_CACHE_SECONDS = 5
    with time_machine.travel(NOW, tick=False):
        blog_ids = _data()
        first = APIClient().get(URL)
        assert first.status_code == 200 and first["Cache-Control"] == "private, max-age=5"
        assert "ETag" not in first and first.json()["meta"]["cached"] is False
        views_record(views=[(blog_ids[0], "BR", NOW)])
        hit = APIClient().get(URL).json()
        assert hit["meta"]["cached"] is True and hit["results"] == first.json()["results"]
        fresh = APIClient().get(URL, HTTP_CACHE_CONTROL="no-cache").json()
        assert fresh["meta"]["cached"] is False
        assert (
            fresh["results"]["views_last_5_minutes"] == hit["results"]["views_last_5_minutes"] + 1
        )
        # Other filters, another entry.
        other = APIClient().get(f"{URL}?country_codes=BR").json()
        assert other["meta"]["cached"] is False and other["results"]["views_last_5_minutes"] == 1
    assert APIClient().post(URL, {}, format="json").status_code == 405


COUNTRIES = ("US", "DE", "ET", "IN", "BR")
QUERIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("", {}),
    ("country_codes=DE,et", {"countries": {"DE", "ET"}}),
    ("country_codes=DE,ET&exclude_country_codes=ET", {"countries": {"DE"}}),
    ("exclude_country_codes=US,IN", {"countries": {"DE", "ET", "BR"}}),
    ("author_username=bob", {"author": "bob"}),
    ("author_username=ada&country_codes=US,BR", {"author": "ada", "countries": {"US", "BR"}}),
    (
        "author_username=ada&exclude_country_codes=US",
        {"author": "ada", "countries": {"DE", "ET", "IN", "BR"}},
    ),
    ("limit=3", {"limit": 3}),
)


def _random_views(blog_ids: list[int], rng: random.Random, now: datetime, count: int) -> None:
    """``count`` views from 40 minutes before ``now`` to 2 minutes after, some late."""
    views_record(
        views=[
            (
                rng.choice(blog_ids),
                rng.choice(COUNTRIES),
                now + timedelta(seconds=rng.randint(-40 * 60, 2 * 60)),
            )
            for _ in range(count)
        ]
    )


def _check(client: APIClient, now: datetime) -> None:
    for query, recount in QUERIES:
        answer = client.get(f"{URL}?{query}", HTTP_CACHE_CONTROL="no-cache").json()
        assert answer["results"] == _recount(now=now, **recount), (now, query)


@pytest.mark.parametrize(
    "now",
    [
        NOW.replace(minute=30),
        NOW.replace(minute=32),
        NOW.replace(minute=34),
        # The window and the tail across a month's (and a year's) end: two raw partitions.
        datetime(2026, 1, 1, 0, 12, 20, tzinfo=UTC),
    ],
)
def test_the_per_minute_rows_and_the_tail_match_a_recount(db, settings, now):
    """Views absorbed in several runs as the clock moves (the window's start at each offset
    from the 5-minute blocks), late views for absorbed minutes, views not absorbed yet, every
    filter combination; then the same answers from the raw views alone, and after a rebuild."""
    settings.ANALYTICS_PUBLIC_READ = True
    settings.REALTIME_CACHE_SECONDS = 0
    client = APIClient()
    blog_ids = _data_blogs()
    rng = random.Random(now.minute)
    for step in range(4):
        at = now + timedelta(minutes=step, seconds=13 * step)
        with time_machine.travel(at, tick=False):
            _random_views(blog_ids, rng, at, 120)
            rollups_absorb_pending()
            _random_views(blog_ids, rng, at, 40)
            kept_from = RecentState.objects.get().recent_from
            assert kept_from is not None and kept_from <= at - timedelta(minutes=30)
            _check(client, at)
    with time_machine.travel(at, tick=False):
        # The per-minute rows gone (as before the first absorb with them): from raw.
        RecentState.objects.update(recent_from=None)
        _check(client, at)
        # A rebuild after views were deleted behind the API counts them again.
        BlogView.objects.filter(id__in=BlogView.objects.order_by("-id").values("id")[:70]).delete()
        rollups_rebuild(start_date=(at - timedelta(hours=1)).date(), end_date=at.date())
        assert RecentState.objects.get().recent_from is not None
        _check(client, at)


def test_the_per_minute_rows_absorbed_apart_from_the_summaries_stay_exact(db, settings):
    """The per-minute levels have their own watermark (``RecentState``): whichever of the two
    absorbs ran last, and with views committed between them, every answer counts each view
    once."""
    settings.ANALYTICS_PUBLIC_READ = True
    settings.REALTIME_CACHE_SECONDS = 0
    client = APIClient()
    blog_ids = _data_blogs()
    rng = random.Random(7)
    at = NOW.replace(minute=33)
    with time_machine.travel(at, tick=False):
        _random_views(blog_ids, rng, at, 150)
        rollups_absorb_recent()
        _random_views(blog_ids, rng, at, 60)
        _check(client, at)
        # The summaries ahead of the per-minute rows.
        rollups_absorb_pending(recent=False)
        _random_views(blog_ids, rng, at, 30)
        state = RecentState.objects.get()
        assert 0 < state.absorbed_through_id < BlogView.objects.order_by("-id")[1].id
        _check(client, at)
        assert_summaries_exact(through_id=watermark())
        # And behind them.
        rollups_absorb_recent()
        _random_views(blog_ids, rng, at, 20)
        _check(client, at)
        assert_summaries_exact(through_id=watermark())


def _data_blogs() -> list[int]:
    ada = get_user_model().objects.create_user(username="ada")
    bob = get_user_model().objects.create_user(username="bob")
    return [
        Blog.objects.create(title=f"blog {n}", author=(ada, bob)[n % 2], created_at=NOW).pk
        for n in range(7)
    ]


def _window_statement(
    client: APIClient, query: str = "", model: type[Any] = WindowBlogViews
) -> tuple[dict[str, Any], bool]:
    """The answer without the cache, and whether it read ``model``'s window rows."""
    with CaptureQueriesContext(connection) as queries:
        answer = client.get(f"{URL}?{query}", HTTP_CACHE_CONTROL="no-cache").json()
    table = model._meta.db_table
    return answer, any(table in query["sql"] for query in queries.captured_queries)


def test_window_rows_rank_the_window_with_the_tail(db, settings):
    """Without filters, the blogs and countries come from the window rows absorb summed, plus
    the tail: a blog or country outside the window's first ones that the tail lifts into
    them, ties by id and code point, and reads in the minute after the absorb; two minutes
    later the rows no longer hold that window and the per-minute rows answer."""
    settings.ANALYTICS_PUBLIC_READ = True
    settings.REALTIME_CACHE_SECONDS = 0
    client = APIClient()
    blogs = _data_blogs()
    at = NOW.replace(second=0)
    with time_machine.travel(at, tick=False):
        # Absorbed: blog 0 has 5 views, 1 has 4, 2 has 3, 3 has 1; countries US 5, DE 4, ET 3, IN 1.
        views_record(
            views=[
                (blogs[n], ("US", "DE", "ET", "IN")[n], at - timedelta(minutes=3 * n + 1))
                for n, count in enumerate((5, 4, 3, 1))
                for _ in range(count)
            ]
        )
        rollups_absorb_pending()
        state = RecentState.objects.get()
        assert state.recent_window_through_id == state.absorbed_through_id
        assert state.recent_window_end == at + timedelta(minutes=1)
        # The tail: blog 3 (and IN) rises to tie blog 0 (US), blog 2 (ET) passes them all.
        views_record(
            views=[(blogs[3], "IN", at - timedelta(minutes=2))] * 4
            + [(blogs[2], "ET", at - timedelta(minutes=20))] * 3
        )
        for limit in (1, 2, 3, 10):
            answer, windows = _window_statement(client, f"limit={limit}")
            assert windows
            assert answer["results"] == _recount(now=at, limit=limit), limit
        top = [row["blog_id"] for row in answer["results"]["top_blogs"]]
        assert top == [blogs[2], blogs[0], blogs[3], blogs[1]]
        codes = [row["country_code"] for row in answer["results"]["top_countries"]]
        assert codes == ["ET", "IN", "US", "DE"]
        # Filters read the (blog, country) window rows, not the ranked blogs' ones.
        for query in ("country_codes=US,IN", "author_username=ada"):
            assert _window_statement(client, query, WindowBlogCountryViews)[1], query
        # Absorbed, and a tail of one view for a blog far down: the window rows below the
        # first ones' views minus the tail's largest count are not read, and it stays out.
        rollups_absorb_pending()
        views_record(views=[(blogs[n], "DE", at - timedelta(minutes=4)) for n in (1, 4)])
        for limit in (1, 2, 4, 5):
            answer, windows = _window_statement(client, f"limit={limit}")
            assert windows
            assert answer["results"] == _recount(now=at, limit=limit), limit
    # The next minute: its window was summed too (views leave it and arrive in it).
    later = at + timedelta(minutes=1, seconds=40)
    with time_machine.travel(later, tick=False):
        views_record(views=[(blogs[1], "DE", later)] * 3)
        for limit in (2, 10):
            answer, windows = _window_statement(client, f"limit={limit}")
            assert windows
            assert answer["results"] == _recount(now=later, limit=limit), limit
    # Two minutes on, without an absorb: not summed, the per-minute rows answer, as exactly.
    gone = at + timedelta(minutes=2, seconds=5)
    with time_machine.travel(gone, tick=False):
        answer, windows = _window_statement(client, "limit=2")
        assert not windows
        assert answer["results"] == _recount(now=gone, limit=2)
        # An absorb sums that minute's windows, also with nothing new to absorb.
        rollups_absorb_pending()
        rollups_absorb_pending()
        answer, windows = _window_statement(client, "limit=2")
        assert windows
        assert answer["results"] == _recount(now=gone, limit=2)
        assert_summaries_exact()


@pytest.mark.parametrize("moves", [(1, 1, 2, 5), (6, 1), (-1, 3, 30)])
def test_window_rows_kept_chunk_by_chunk_and_rolled_with_the_clock(db, settings, moves):
    """The window rows take each absorb chunk's views and move with the clock: a minute or a
    few later they are rolled from the last window (added the minutes that entered, less
    those that left), further or back they are summed again. After every run they equal a
    recount from raw, and every filtered answer read from them (plus the tail) does too."""
    settings.ANALYTICS_PUBLIC_READ = True
    settings.REALTIME_CACHE_SECONDS = 0
    client = APIClient()
    blog_ids = _data_blogs()
    rng = random.Random(sum(moves))
    at = NOW.replace(minute=31)
    pairs_table = WindowBlogCountryViews._meta.db_table
    for step, move in enumerate((0, *moves)):
        at += timedelta(minutes=move)
        with time_machine.travel(at, tick=False):
            _random_views(blog_ids, rng, at, 90)
            with CaptureQueriesContext(connection) as queries:
                rollups_absorb_recent(chunk_ids=25)
            # Summed again (every row deleted) on the first run and past the roll's reach.
            summed = any(
                query["sql"].startswith("DELETE FROM")
                and pairs_table in query["sql"]
                and "WHERE" not in query["sql"]
                for query in queries.captured_queries
            )
            assert summed == (step == 0 or not 0 < move <= RECENT_WINDOW_ROLL_MINUTES), move
            state = RecentState.objects.get()
            assert state.recent_window_through_id == state.absorbed_through_id
            assert state.recent_window_end == at.replace(second=0) + timedelta(minutes=1)
            expected = windows_from_raw()
            found = windows_in_db()
            for table, by_end in expected.items():
                assert set(found[table]) == set(by_end), (move, table)
                for end, counts in by_end.items():
                    assert found[table][end] == counts, (move, table, end)
            _random_views(blog_ids, rng, at, 15)
            for query, recount in QUERIES:
                if not recount.keys() & {"author", "countries"}:
                    continue
                answer, pairs = _window_statement(client, query, WindowBlogCountryViews)
                assert pairs, query
                assert answer["results"] == _recount(now=at, **recount), (move, query)
