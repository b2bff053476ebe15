"""Absorb (rollups.absorb): exactly once, in any order, in steps, across a day's end."""

import random
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.testing import migrate_to
from ingest.models import BlogView
from ingest.services import views_record
from rollups import absorb
from rollups.absorb import rollups_absorb_pending
from rollups.models import (
    AbsorbState,
    AllTimeCountryBlogs,
    LastDayCountryBlogs,
    MonthlyBlogCountryViews,
    MonthRangeCountryBlogs,
    Summary,
    TrailingBlogCountryViews,
    TrailingBlogViews,
    YearlyBlogCountryViews,
)
from rollups.rebuild import rollups_rebuild, summaries_clear
from rollups.selectors import rollups_status
from rollups.tables import LEVELS
from rollups.tests.conftest import COUNTRIES, DAYS, FIRST_DAY
from rollups.tests.recount import (
    assert_summaries_exact,
    pair_last_days,
    recount_from_raw,
    summaries_in_db,
    watermark,
)


def test_absorb_with_nothing_pending(db):
    result = rollups_absorb_pending()
    assert result.views == 0
    assert rollups_status().pending_views == 0
    assert_summaries_exact()
    assert AbsorbState.objects.get().last_run_at is not None


def test_absorb_counts_new_and_late_views_once(ingest_random):
    ingest_random(500)
    assert rollups_absorb_pending().views == 500
    assert_summaries_exact()
    # Late views for days already summarized, and views for new days.
    ingest_random(200, rng=random.Random(1), days=(0, 30))
    ingest_random(100, rng=random.Random(2), days=(700, 730))
    assert rollups_absorb_pending().views == 300
    assert rollups_absorb_pending().views == 0
    assert_summaries_exact()
    assert watermark() == BlogView.objects.order_by("-id").values_list("id", flat=True)[0]


def test_absorb_in_small_chunks_is_the_same(ingest_random):
    ingest_random(300)
    assert rollups_absorb_pending(chunk_ids=7).views == 300
    assert_summaries_exact()


def test_absorb_failing_mid_transaction_changes_nothing(ingest_random, monkeypatch):
    ingest_random(100)
    watermark_before = rollups_absorb_pending().absorbed_through_id
    before = summaries_in_db()
    ingest_random(50, rng=random.Random(9))
    real_apply = absorb._stage_apply

    def apply_then_fail(*args, **kwargs):
        real_apply(*args, **kwargs)  # the increments are written...
        raise RuntimeError("worker died")  # ...and the transaction never commits

    monkeypatch.setattr(absorb, "_stage_apply", apply_then_fail)
    with pytest.raises(RuntimeError):
        rollups_absorb_pending()
    assert summaries_in_db() == before
    assert watermark() == watermark_before
    monkeypatch.undo()
    assert rollups_absorb_pending().views == 50
    assert_summaries_exact()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("ingest"),
                st.lists(
                    st.tuples(
                        st.integers(0, 5),
                        st.sampled_from(COUNTRIES),
                        st.integers(0, DAYS - 1),
                        st.integers(0, 86_399),
                    ),
                    min_size=1,
                    max_size=40,
                ),
            ),
            st.tuples(st.just("absorb"), st.integers(1, 50)),
            st.tuples(st.just("rebuild"), st.tuples(st.integers(0, DAYS), st.integers(0, 60))),
            st.tuples(st.just("clock"), st.integers(0, 120)),
        ),
        max_size=12,
    ),
    today=st.integers(0, DAYS),
)
def test_any_writes_absorbed_in_any_order_sum_right(blog_ids, steps, today):
    """The clock starts inside the views' days and moves on: views arrive for the open month,
    for closed ones and for days ahead of the clock, and months end between runs."""
    BlogView.objects.all().delete()
    AbsorbState.objects.all().delete()
    summaries_clear()
    with time_machine.travel(FIRST_DAY + timedelta(days=today, hours=12), tick=False) as clock:
        for kind, arg in steps:
            if kind == "ingest":
                services_rows = [
                    (blog_ids[b], c, FIRST_DAY + timedelta(days=d, seconds=s)) for b, c, d, s in arg
                ]
                views_record(views=services_rows)
            elif kind == "absorb":
                rollups_absorb_pending(chunk_ids=arg)
                assert_summaries_exact(through_id=watermark())
            elif kind == "clock":
                clock.shift(timedelta(days=arg))
            else:
                first, length = arg
                start = FIRST_DAY.date() + timedelta(days=first)
                rollups_rebuild(start_date=start, end_date=start + timedelta(days=length))
                assert_summaries_exact(through_id=watermark())
        rollups_absorb_pending()
        assert_summaries_exact()


def test_open_day_is_kept_out_of_monthly_blog_country_rows_then_folded(blog_ids):
    """Views of the current day reach the daily rows only; once the day has ended, the next run
    adds it to its month's rows, and late views for it go to both from then on."""
    january, february = date(2024, 1, 1), date(2024, 2, 1)
    monthly = MonthlyBlogCountryViews.objects

    def monthly_views(month: date) -> dict[int, int]:
        return dict(monthly.filter(month=month).values_list("blog_id", "views"))

    with time_machine.travel(datetime(2024, 1, 30, 23, 59, tzinfo=UTC), tick=False) as clock:
        views_record(
            views=[
                (blog_ids[0], "US", datetime(2024, 1, 4, tzinfo=UTC)),
                (blog_ids[1], "US", datetime(2024, 1, 30, 8, tzinfo=UTC)),  # today
                (blog_ids[1], "US", datetime(2024, 1, 31, 1, tzinfo=UTC)),  # ahead of the clock
                (blog_ids[1], "US", datetime(2024, 2, 14, tzinfo=UTC)),  # further ahead
                (blog_ids[2], "US", datetime(2023, 12, 31, tzinfo=UTC)),  # a closed month
            ]
        )
        rollups_absorb_pending()
        assert AbsorbState.objects.get().monthly_open_from == date(2024, 1, 30)
        assert monthly_views(january) == {blog_ids[0]: 1}
        assert monthly_views(date(2023, 12, 1)) == {blog_ids[2]: 1}
        assert_summaries_exact()

        clock.move_to(datetime(2024, 1, 31, 0, 1, tzinfo=UTC))
        views_record(views=[(blog_ids[0], "US", datetime(2024, 1, 29, tzinfo=UTC))])  # late
        rollups_absorb_pending()
        assert AbsorbState.objects.get().monthly_open_from == date(2024, 1, 31)
        assert monthly_views(january) == {blog_ids[0]: 2, blog_ids[1]: 1}
        assert_summaries_exact()

        # Days with no run while they were open (the clock jumps) fold all the same.
        clock.move_to(datetime(2024, 3, 10, tzinfo=UTC))
        rollups_absorb_pending()
        assert AbsorbState.objects.get().monthly_open_from == date(2024, 3, 10)
        assert monthly_views(january) == {blog_ids[0]: 2, blog_ids[1]: 2}
        assert monthly_views(february) == {blog_ids[1]: 1}
        assert_summaries_exact()


def test_trailing_rows_hold_the_29_and_89_days_before_the_open_day(blog_ids):
    """The day's first run moves both windows (the days that left them subtracted, the ended
    day added), late views for their days go in, and days long gone leave no rows."""
    blog = blog_ids[0]

    def trailing(span: int) -> dict[int, int]:
        rows = TrailingBlogCountryViews.objects.filter(span=span, country_id="US")
        return dict(rows.values_list("blog_id", "views"))

    with time_machine.travel(datetime(2024, 5, 1, 12, tzinfo=UTC), tick=False) as clock:
        views_record(
            views=[
                (blog, "US", datetime(2024, 5, 1, 1, tzinfo=UTC)),  # today: daily rows only
                (blog, "US", datetime(2024, 4, 30, tzinfo=UTC)),  # both windows
                (blog, "US", datetime(2024, 4, 2, tzinfo=UTC)),  # the 30-day one's first day
                (blog, "US", datetime(2024, 4, 1, tzinfo=UTC)),  # the 90-day one only
                (blog, "US", datetime(2024, 2, 2, tzinfo=UTC)),  # its first day
                (blog, "US", datetime(2024, 2, 1, tzinfo=UTC)),  # neither
            ]
        )
        rollups_absorb_pending()
        assert (trailing(30), trailing(90)) == ({blog: 2}, {blog: 4})
        assert TrailingBlogViews.objects.get(span=90, blog_id=blog).views == 4
        assert_summaries_exact()

        clock.move_to(datetime(2024, 5, 2, 0, 1, tzinfo=UTC))
        views_record(
            views=[
                (blog, "US", datetime(2024, 4, 3, tzinfo=UTC)),  # late
                (blog, "DE", datetime(2024, 5, 1, 20, tzinfo=UTC)),  # yesterday's, absorbed now
            ]
        )
        rollups_absorb_pending()
        # Apr 2 and Feb 2 left; May 1 and the late Apr 3 came in.
        assert (trailing(30), trailing(90)) == ({blog: 3}, {blog: 5})
        assert_summaries_exact()

        # Moved back a day (as the benchmark does): the windows of the open day before; and on
        # again: the same rows as before.
        trailing_tables = [level.trailing for level in LEVELS if level.trailing is not None]

        def move(old: date, new: date) -> None:
            with transaction.atomic(), connection.cursor() as cursor:
                for level in LEVELS:
                    if level.trailing is not None:
                        absorb.trailing_fold(cursor, level, old, new)
                AbsorbState.objects.update(monthly_open_from=new)

        move(date(2024, 5, 2), date(2024, 5, 1))
        expected, found = recount_from_raw(), summaries_in_db()
        for table in trailing_tables:
            assert found[table] == expected[table], table
        move(date(2024, 5, 1), date(2024, 5, 2))
        assert (trailing(30), trailing(90)) == ({blog: 3}, {blog: 5})
        assert_summaries_exact()

        rollups_rebuild(start_date=date(2024, 4, 1), end_date=date(2024, 4, 30))
        assert (trailing(30), trailing(90)) == ({blog: 3}, {blog: 5})
        assert_summaries_exact()

        clock.move_to(datetime(2024, 9, 1, tzinfo=UTC))
        rollups_absorb_pending()
        assert not TrailingBlogCountryViews.objects.exists()
        assert not TrailingBlogViews.objects.exists()
        assert_summaries_exact()


def test_monthly_rows_from_before_the_open_day_are_recomputed(ingest_random):
    """A state row without an open day (as the migration leaves it) means the monthly and
    yearly rows count every day; the first run recomputes the current month's rows and drops
    later ones, this year's yearly rows from the monthly ones, and the trailing rows."""
    ingest_random(400)
    with time_machine.travel(datetime(2025, 6, 15, 12, tzinfo=UTC), tick=False):
        rollups_absorb_pending()
        # What a run before the scheme would have left: every day in the monthly rows, no
        # trailing rows.
        AbsorbState.objects.update(monthly_open_from=None)
        for level in LEVELS:
            if level.trailing_model is not None:
                level.trailing_model._default_manager.all().delete()
        rewritten: tuple[tuple[type[Summary], str, date], ...] = (
            (MonthlyBlogCountryViews, "month", date(2025, 6, 1)),
            (YearlyBlogCountryViews, "year", date(2025, 1, 1)),
        )
        for model, column, first in rewritten:
            model._default_manager.filter(**{f"{column}__gte": first}).delete()
            model._default_manager.bulk_create(
                model(**{column: when, "blog_id": blog, "country_id": country, "views": views})
                for (when, blog, country), views in recount_from_raw()[model._meta.db_table].items()
                if when >= first
            )
        assert_summaries_exact()
        rollups_absorb_pending()
        assert AbsorbState.objects.get().monthly_open_from == date(2025, 6, 15)
        assert not MonthlyBlogCountryViews.objects.filter(month__gte=date(2025, 7, 1)).exists()
        assert not YearlyBlogCountryViews.objects.filter(year__gte=date(2026, 1, 1)).exists()
        assert_summaries_exact()


def test_a_run_absorbs_its_oldest_views_first_in_a_small_step(ingest_random, monkeypatch):
    ingest_random(100)
    monkeypatch.setattr(absorb, "ABSORB_FIRST_STEP_IDS", 30)
    staged = absorb.stage_views
    steps: list[int] = []

    def record(cursor, stage):
        found = staged(cursor, stage)
        steps.append(found.views)
        return found

    monkeypatch.setattr(absorb, "stage_views", record)
    assert rollups_absorb_pending().views == 100
    assert steps == [30, 70]
    assert_summaries_exact()


@pytest.mark.parametrize("catch_up_views", [1, 10_000])
def test_a_run_catches_up_with_views_committed_while_it_ran(
    ingest_random, monkeypatch, catch_up_views
):
    ingest_random(40)
    bound = absorb._safe_upper_bound
    bounds_taken: list[int] = []

    def bound_then_more_views() -> int:
        upper = bound()
        if not bounds_taken:
            ingest_random(30, rng=random.Random(5))  # committed after the first bound
        bounds_taken.append(upper)
        return upper

    monkeypatch.setattr(absorb, "_safe_upper_bound", bound_then_more_views)
    result = rollups_absorb_pending(catch_up_views=catch_up_views, recent=False)
    if catch_up_views == 1:
        # The first pass absorbed 40 >= 1 views: a second bound takes the 30; the third pass
        # finds nothing new and ends the run.
        assert (result.views, len(bounds_taken)) == (70, 3)
        assert rollups_status().pending_views == 0
    else:
        assert (result.views, len(bounds_taken)) == (40, 1)
        assert rollups_status().pending_views == 30
        assert rollups_absorb_pending().views == 30
    assert_summaries_exact()


def test_a_run_that_caught_up_early_takes_one_more_bound_later(ingest_random, trailing_sleeps):
    ingest_random(40)
    result = rollups_absorb_pending(trail_seconds=30)
    assert result.views == 45
    assert len(trailing_sleeps) == 1
    assert 25 < trailing_sleeps[0] <= 30
    assert rollups_status().pending_views == 0
    assert_summaries_exact()
    # A run with nothing to absorb does not wait, nor does one that is already late.
    assert rollups_absorb_pending(trail_seconds=30).views == 0
    ingest_random(10, rng=random.Random(9))
    assert rollups_absorb_pending(trail_seconds=0).views == 10
    assert len(trailing_sleeps) == 1


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="presence and its counts are PostgreSQL's"
)
def test_all_time_blogs_count_a_pair_once_across_years_and_runs(blog_ids):
    """A (country, blog) pair is one blog of its country for all time, however many years it
    has views in: whether its years arrive in one run, in separate runs, or late."""

    def all_time() -> dict[str, int]:
        return dict(AllTimeCountryBlogs.objects.values_list("country_id", "blogs"))

    first, second = blog_ids[:2]
    # One run: a new pair in two years, and a second blog in one of them.
    views_record(
        views=[
            (first, "US", datetime(2024, 3, 1, tzinfo=UTC)),
            (first, "US", datetime(2025, 3, 1, tzinfo=UTC)),
            (second, "US", datetime(2025, 3, 2, tzinfo=UTC)),
        ]
    )
    rollups_absorb_pending()
    assert all_time() == {"US": 2}
    # Separate runs: a known pair's new year, then a late view of an earlier year.
    views_record(views=[(second, "US", datetime(2024, 12, 31, tzinfo=UTC))])
    rollups_absorb_pending()
    views_record(views=[(first, "US", datetime(2023, 6, 1, tzinfo=UTC))])
    rollups_absorb_pending()
    assert all_time() == {"US": 2}
    # A new country for a known blog counts there only.
    views_record(views=[(first, "DE", datetime(2025, 3, 1, tzinfo=UTC))])
    rollups_absorb_pending()
    assert all_time() == {"US": 2, "DE": 1}
    assert_summaries_exact()
    # A rebuild after views were deleted behind the API: a pair losing one of its years keeps
    # its count, a pair losing its only year goes.
    BlogView.objects.filter(blog_id=first, country_id="US", viewed_at__year=2024).delete()
    BlogView.objects.filter(blog_id=first, country_id="DE").delete()
    rollups_rebuild()
    assert all_time() == {"US": 2}
    assert_summaries_exact()


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="presence and its counts are PostgreSQL's"
)
def test_last_day_blogs_follow_each_pairs_last_view(blog_ids):
    """A pair moves to its new last day when a later view comes (in one run or across a year),
    stays when a late view comes, goes back after a rebuild drops its last view; the day's
    first run deletes the rows left at 0. Each pair's own last day follows it."""

    def last_days() -> dict[tuple[str, date], int]:
        return {
            (country, day): blogs
            for country, day, blogs in LastDayCountryBlogs.objects.values_list(
                "country_id", "day", "blogs"
            )
        }

    first, second = blog_ids[:2]
    with time_machine.travel(datetime(2025, 1, 5, 12, tzinfo=UTC), tick=False):
        views_record(
            views=[
                (first, "US", datetime(2024, 12, 30, tzinfo=UTC)),
                (first, "US", datetime(2024, 12, 31, tzinfo=UTC)),
                (second, "US", datetime(2024, 12, 31, tzinfo=UTC)),
            ]
        )
        rollups_absorb_pending()
        assert last_days() == {("US", date(2024, 12, 31)): 2}
        assert pair_last_days() == {
            ("US", first): date(2024, 12, 31),
            ("US", second): date(2024, 12, 31),
        }
        # Into the next year, and a late view that changes nothing.
        views_record(
            views=[
                (first, "US", datetime(2025, 1, 2, tzinfo=UTC)),
                (second, "US", datetime(2024, 3, 1, tzinfo=UTC)),
            ]
        )
        rollups_absorb_pending()
        assert last_days() == {("US", date(2024, 12, 31)): 1, ("US", date(2025, 1, 2)): 1}
        assert pair_last_days() == {
            ("US", first): date(2025, 1, 2),
            ("US", second): date(2024, 12, 31),
        }
        views_record(views=[(second, "US", datetime(2025, 1, 3, tzinfo=UTC))])
        rollups_absorb_pending()
        assert last_days() == {
            ("US", date(2024, 12, 31)): 0,
            ("US", date(2025, 1, 2)): 1,
            ("US", date(2025, 1, 3)): 1,
        }
        assert_summaries_exact()
    with time_machine.travel(datetime(2025, 1, 6, 0, 1, tzinfo=UTC), tick=False):
        rollups_absorb_pending()
        assert last_days() == {("US", date(2025, 1, 2)): 1, ("US", date(2025, 1, 3)): 1}
        # A rebuild after the last view of a pair was deleted behind the API.
        BlogView.objects.filter(viewed_at__gte=datetime(2025, 1, 3, tzinfo=UTC)).delete()
        rollups_rebuild()
        assert last_days() == {("US", date(2025, 1, 2)): 1, ("US", date(2024, 12, 31)): 1}
        assert pair_last_days() == {
            ("US", first): date(2025, 1, 2),
            ("US", second): date(2024, 12, 31),
        }
        assert_summaries_exact()


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="presence and its counts are PostgreSQL's"
)
def test_month_range_blogs_count_a_pair_once_per_range(blog_ids):
    """A pair counts once in every whole-month range of a year that holds a month it has views
    in: whether its months arrive in one run, in order, out of order or late; a leap year's
    Feb 29 is February's; a rebuild after views were deleted takes the pair out again."""

    def ranges(year: int, country: str = "US") -> dict[tuple[int, int], int]:
        return {
            (first, last): blogs
            for first, last, blogs in MonthRangeCountryBlogs.objects.filter(
                year=year, country_id=country
            ).values_list("first_month", "last_month", "blogs")
        }

    def expected(*months_per_blog: set[int]) -> dict[tuple[int, int], int]:
        found: dict[tuple[int, int], int] = {}
        for first in range(1, 13):
            for last in range(first, 13):
                blogs = sum(
                    any(first <= month <= last for month in months) for months in months_per_blog
                )
                if blogs:
                    found[first, last] = blogs
        return found

    first, second = blog_ids[:2]
    # One run: a pair in two months (Feb 29 and Mar 1 of a leap year), another in one.
    views_record(
        views=[
            (first, "US", datetime(2024, 2, 29, 23, 59, tzinfo=UTC)),
            (first, "US", datetime(2024, 3, 1, tzinfo=UTC)),
            (second, "US", datetime(2024, 3, 15, tzinfo=UTC)),
        ]
    )
    rollups_absorb_pending()
    assert ranges(2024) == expected({2, 3}, {3})
    assert_summaries_exact()
    # Separate runs: a later month, an earlier one (late), a month between, the same month again.
    for month in (7, 1, 5, 7):
        views_record(views=[(second, "US", datetime(2024, month, 10, tzinfo=UTC))])
        rollups_absorb_pending()
        assert_summaries_exact()
    assert ranges(2024) == expected({2, 3}, {1, 3, 5, 7})
    # Another year and another country count apart.
    views_record(
        views=[
            (first, "US", datetime(2025, 12, 31, tzinfo=UTC)),
            (first, "DE", datetime(2024, 3, 2, tzinfo=UTC)),
        ]
    )
    rollups_absorb_pending()
    assert ranges(2025) == expected({12})
    assert ranges(2024, "DE") == expected({3})
    assert ranges(2024) == expected({2, 3}, {1, 3, 5, 7})
    assert_summaries_exact()
    # A rebuild after the second blog's March and July views were deleted behind the API.
    BlogView.objects.filter(blog_id=second, viewed_at__month__in=(3, 7)).delete()
    rollups_rebuild()
    assert ranges(2024) == expected({2, 3}, {1, 5})
    assert_summaries_exact()


@pytest.mark.django_db(transaction=True)
def test_migrations_0019_to_0023_fill_the_new_counts_from_the_rows_already_there(
    ingest_random,
):
    """Migrated onto absorbed views, 0019 gives the presence rows their months and counts the
    month ranges from them (PostgreSQL), 0021 fills the yearly rows from the monthly ones,
    0022 the trailing rows from the daily ones and 0023 each pair's last day from the presence
    rows (PostgreSQL): exactly what absorb would have kept."""
    ingest_random(600)
    # Absorbed with the open day among the views' days, so that the windows hold some.
    with time_machine.travel(datetime(2025, 6, 15, 12, tzinfo=UTC), tick=False):
        rollups_absorb_pending()
    # Back to before them (which drops what they added), then forwards again.
    migrate_to("rollups", "0018_minute_country_covering")
    migrate_to("rollups")
    assert YearlyBlogCountryViews.objects.exists()
    assert TrailingBlogCountryViews.objects.filter(span=30).exists()
    assert TrailingBlogViews.objects.filter(span=90).exists()
    if connection.vendor == "postgresql":
        assert MonthRangeCountryBlogs.objects.exists()
        assert pair_last_days()
    assert_summaries_exact()
