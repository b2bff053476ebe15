"""The realtime tables vacuumed and analyzed when due (rollups.tending), on the real server."""

import random
import time
from datetime import datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending, rollups_absorb_recent
from rollups.models import RecentState
from rollups.tables import RECENT_BLOG_COUNTRY, RECENT_WINDOWS, recent_window_ends
from rollups.tasks import tend_recent_tables_task
from rollups.tending import TENDED_TABLES, VACUUM_THRESHOLD, recent_tables_tend
from rollups.tests.conftest import COUNTRIES
from rollups.tests.recount import assert_summaries_exact

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL only: VACUUM and its statistics"
)

WINDOW_BLOGS = RECENT_WINDOWS[0].table


def _statistics(table: str) -> tuple[int, int, bool, bool]:
    """(dead rows, rows changed since the last analysis, vacuumed, analyzed) of ``table``,
    once this connection's counts have reached the statistics (they are sent when it goes
    idle, at most once a second unless forced)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_dead_tup, n_mod_since_analyze, last_vacuum IS NOT NULL, "
            "last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relid = %s::regclass",
            [table],
        )
        return cursor.fetchone()


def _views(blog_ids: list[int], count: int, *, seed: int) -> None:
    rng = random.Random(seed)
    now = timezone.now()
    views_record(
        views=[
            (
                rng.choice(blog_ids),
                rng.choice(COUNTRIES),
                now - timedelta(seconds=rng.randint(0, 900)),
            )
            for _ in range(count)
        ]
    )


def _dead_rows_in_window_blogs(blog_ids: list[int]) -> int:
    """Absorb runs, each rewriting the window rows, until the statistics show dead rows past
    the vacuum threshold in them."""
    deadline = time.monotonic() + 20
    for run in range(1000):
        _views(blog_ids, 40, seed=run)
        rollups_absorb_pending()
        dead, *_ = _statistics(WINDOW_BLOGS)
        if dead > 200:
            return dead
        assert time.monotonic() < deadline, "the statistics never showed the dead rows"
    raise AssertionError("unreachable")


@pytest.mark.django_db(transaction=True)
def test_the_realtime_tables_are_vacuumed_and_analyzed_when_due_and_left_alone_after(blog_ids):
    _dead_rows_in_window_blogs(blog_ids)
    assert_summaries_exact()

    ran = recent_tables_tend()

    # The window rows, rewritten by every run, and the per-minute tables the runs wrote.
    assert f"VACUUM (ANALYZE, SKIP_LOCKED) {WINDOW_BLOGS}" in ran
    assert all(statement.split()[-1] in TENDED_TABLES for statement in ran)
    dead, changed, vacuumed, analyzed = _statistics(WINDOW_BLOGS)
    assert (dead, changed, vacuumed, analyzed) == (0, 0, True, True)
    # Nothing is due until they churn again; the answers are the same.
    assert recent_tables_tend() == []
    assert_summaries_exact()


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_tends_them(blog_ids):
    _dead_rows_in_window_blogs(blog_ids)
    assert tend_recent_tables_task() >= 1
    assert _statistics(WINDOW_BLOGS)[0] == 0


@pytest.mark.django_db(transaction=True)
def test_tables_that_only_got_new_rows_are_vacuumed_too(blog_ids):
    """Absorbing views of new minutes inserts (minute, blog, country) rows and kills none:
    past autovacuum's inserts rule the table is vacuumed all the same, so that its pages are
    all-visible and its covering index is read without the table."""
    table = RECENT_BLOG_COUNTRY.minute_table
    recent_tables_tend()
    # 6 blogs x 7 countries x 15 minutes = 630 keys a round, 3 rounds of new minutes.
    now = timezone.now().replace(second=0, microsecond=0)
    for round_ in range(3):
        views_record(
            views=[
                (blog, country, now - timedelta(minutes=15 * round_ + minute))
                for blog in blog_ids
                for country in COUNTRIES
                for minute in range(15)
            ]
        )
        rollups_absorb_pending()
    dead, *_ = _statistics(table)
    assert dead < VACUUM_THRESHOLD
    ran = recent_tables_tend()
    assert f"VACUUM (ANALYZE, SKIP_LOCKED) {table}" in ran
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_ins_since_vacuum FROM pg_stat_user_tables WHERE relid = %s::regclass",
            [table],
        )
        assert cursor.fetchone()[0] == 0


def _window_ends_in_statistics(table: str) -> set[datetime]:
    """The window ends the planner's statistics of ``table`` know (its most common values)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_vals::text::timestamptz[] FROM pg_stats "
            "WHERE tablename = %s AND attname = 'window_end'",
            [table],
        )
        found = cursor.fetchone()
    return set(found[0]) if found and found[0] else set()


@pytest.mark.django_db
def test_the_window_rows_statistics_know_each_new_window_at_once(blog_ids):
    """Each roll writes window ends the statistics have never seen; the run that rolls them
    analyzes the window tables' ``window_end`` in its own transaction, so a reader never plans
    for a window of one row (an author's countries read through every pair of the window)."""
    at = timezone.now().replace(second=30, microsecond=0)
    for minutes in (0, 1, 3):
        now = at + timedelta(minutes=minutes)
        with time_machine.travel(now, tick=False):
            views_record(views=[(blog, country, now) for blog in blog_ids for country in COUNTRIES])
            rollups_absorb_recent()
            ends = set(recent_window_ends(now))
            assert RecentState.objects.get().recent_window_end == min(ends)
            for window in RECENT_WINDOWS:
                assert _window_ends_in_statistics(window.table) == ends, (minutes, window)
