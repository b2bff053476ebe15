"""The per-minute levels of the last hour (rollups.tables.RECENT_LEVELS): absorb keeps them
exact for the views viewed from ``recent_from`` on, drops what falls behind ``RECENT_KEEP``,
fills them on its first run, and a rebuild recounts them; migration 0016 re-keys them, 0017
adds the per-minute totals; absorb sums them over the realtime windows."""

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from core.testing import migrate_to
from ingest.models import BlogView
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending
from rollups.models import MinuteBlogCountryViews, MinuteBlogViews, RecentState
from rollups.rebuild import rollups_rebuild
from rollups.tables import RECENT_LEVELS, recent_cut
from rollups.tests.conftest import COUNTRIES
from rollups.tests.recount import assert_summaries_exact, recount_from_raw, watermark

NOW = datetime(2026, 1, 10, 15, 32, 20, tzinfo=UTC)


def _views(blog_ids: list[int], count: int, *, around: datetime, seed: int) -> int:
    """``count`` views within 90 minutes before ``around`` (and a few up to 4 minutes ahead)."""
    rng = random.Random(seed)
    rows = [
        (
            rng.choice(blog_ids),
            rng.choice(COUNTRIES),
            around + timedelta(seconds=rng.randint(-90 * 60, 4 * 60)),
        )
        for _ in range(count)
    ]
    return views_record(views=rows)


def _recent_rows() -> int:
    return sum(
        model._default_manager.count()
        for level in RECENT_LEVELS
        for model in filter(None, [level.minute_model, level.block_model])
    )


def test_recent_cut_is_a_block_boundary_an_hour_back():
    assert recent_cut(NOW) == datetime(2026, 1, 10, 14, 30, tzinfo=UTC)
    assert recent_cut(NOW.replace(minute=35, second=0)) == datetime(2026, 1, 10, 14, 35, tzinfo=UTC)


def test_absorb_keeps_the_last_hour_per_minute_exactly(blog_ids):
    with time_machine.travel(NOW, tick=False):
        _views(blog_ids, 400, around=NOW, seed=1)
        rollups_absorb_pending(chunk_ids=97)
        state = RecentState.objects.get()
        assert state.recent_from == datetime(2026, 1, 10, 14, 30, tzinfo=UTC)
        assert_summaries_exact()
        assert MinuteBlogCountryViews.objects.exists()
        # Views arriving late for minutes already absorbed, and more of the last minutes.
        _views(blog_ids, 150, around=NOW, seed=2)
        rollups_absorb_pending()
        assert_summaries_exact()
    # Time passes: the rows behind the new cut go, the rest stay exact.
    later = NOW + timedelta(minutes=23)
    with time_machine.travel(later, tick=False):
        _views(blog_ids, 100, around=later, seed=3)
        rollups_absorb_pending()
        assert RecentState.objects.get().recent_from == datetime(2026, 1, 10, 14, 55, tzinfo=UTC)
        assert not MinuteBlogViews.objects.filter(minute__lt=recent_cut(later)).exists()
        assert_summaries_exact()
    # Nothing new for hours: the next run empties them.
    with time_machine.travel(NOW + timedelta(hours=5), tick=False):
        rollups_absorb_pending()
        assert _recent_rows() == 0
        assert_summaries_exact()


def test_the_first_run_counts_the_absorbed_views_of_the_last_hour(blog_ids):
    with time_machine.travel(NOW, tick=False):
        _views(blog_ids, 300, around=NOW, seed=4)
        rollups_absorb_pending()
        # As before these tables: views absorbed, no per-minute rows.
        RecentState.objects.update(recent_from=None)
        for level in RECENT_LEVELS:
            for model in filter(None, [level.minute_model, level.block_model]):
                model._default_manager.all().delete()
        _views(blog_ids, 50, around=NOW, seed=5)
        rollups_absorb_pending()
        assert_summaries_exact()
        assert RecentState.objects.get().recent_from == recent_cut(NOW)
        assert MinuteBlogCountryViews.objects.filter(
            minute__lt=NOW - timedelta(minutes=10)
        ).exists()


def test_a_rebuild_recounts_the_kept_minutes(blog_ids):
    with time_machine.travel(NOW, tick=False):
        _views(blog_ids, 300, around=NOW, seed=6)
        rollups_absorb_pending()
        # Views deleted behind the API, and some added without an absorb.
        BlogView.objects.filter(id__in=BlogView.objects.order_by("id").values("id")[:40]).delete()
        _views(blog_ids, 30, around=NOW, seed=7)
        rollups_rebuild(start_date=NOW.date(), end_date=NOW.date())
        assert_summaries_exact()
        minutes = recount_from_raw()[MinuteBlogCountryViews._meta.db_table]
        assert (
            sum(minutes.values())
            == BlogView.objects.filter(viewed_at__gte=RecentState.objects.get().recent_from).count()
        )
        # A rebuild of other days leaves them alone.
        rollups_rebuild(
            start_date=NOW.date() - timedelta(days=3), end_date=NOW.date() - timedelta(days=2)
        )
        assert_summaries_exact()


# The per-minute tables before migration 0017 (MinuteViews is new there), by table: their key.
OLD_RECENT_TABLES = {
    "rollups_minuteblogcountryviews": ("minute", "blog_id", "country_id"),
    "rollups_minuteblogviews": ("minute", "blog_id"),
    "rollups_fiveminuteblogviews": ("minute", "blog_id"),
    "rollups_minutecountryviews": ("minute", "country_id"),
}


def _old_recent_rows() -> None:
    """At an older schema, the per-minute rows an absorb of then would have left: the absorbed
    views of the kept hour, counted from raw (this code's absorb needs the latest schema, and
    ``recount_from_raw`` its per-minute state)."""
    cut = recent_cut(NOW)
    expected: dict[str, Counter] = {table: Counter() for table in OLD_RECENT_TABLES}
    kept = BlogView.objects.filter(id__lte=watermark(), viewed_at__gte=cut)
    for blog, country, viewed_at in kept.values_list("blog_id", "country_id", "viewed_at"):
        minute = viewed_at.replace(second=0, microsecond=0)
        block = minute.replace(minute=minute.minute - minute.minute % 5)
        expected["rollups_minuteblogcountryviews"][minute, blog, country] += 1
        expected["rollups_minuteblogviews"][minute, blog] += 1
        expected["rollups_fiveminuteblogviews"][block, blog] += 1
        expected["rollups_minutecountryviews"][minute, country] += 1
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE rollups_absorbstate SET recent_from = %s",
            [connection.ops.adapt_datetimefield_value(cut)],
        )
        for table, keys in OLD_RECENT_TABLES.items():
            assert expected[table], table
            cursor.executemany(
                f"INSERT INTO {table} ({', '.join(keys)}, views) "
                f"VALUES ({', '.join(['%s'] * (len(keys) + 1))})",
                [
                    (connection.ops.adapt_datetimefield_value(minute), *rest, views)
                    for (minute, *rest), views in expected[table].items()
                ],
            )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("before", ["0015_monthly_blog_covering", "0016_recent_blog_first"])
def test_migrations_0016_and_0017_empty_the_minutes_and_the_next_absorb_counts_them_again(
    blog_ids, before
):
    """0016 re-keys the (minute, blog, country) rows, 0017 adds the per-minute totals: both
    empty the per-minute rows and ``recent_from``, and the next absorb counts the hour again."""
    with time_machine.travel(NOW, tick=False):
        _views(blog_ids, 300, around=NOW, seed=8)
        rollups_absorb_pending()
        migrate_to("rollups", before)
        try:
            # Going back emptied them too; as an absorb of then would have left them.
            _old_recent_rows()
        finally:
            migrate_to("rollups")
        # Every per-minute table is empty and the state says so: nothing is counted twice.
        state = RecentState.objects.get()
        assert state.recent_from is None
        assert state.recent_window_through_id is None
        assert _recent_rows() == 0
        _views(blog_ids, 40, around=NOW, seed=9)
        rollups_absorb_pending()
        state = RecentState.objects.get()
        assert state.recent_from == recent_cut(NOW)
        assert state.recent_window_through_id == state.absorbed_through_id
        assert_summaries_exact()
