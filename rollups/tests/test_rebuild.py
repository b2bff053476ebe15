"""Rebuild (rollups.rebuild): a range recomputed from raw, online, exact; clearing."""

import random
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from ingest.models import BlogView
from ingest.services import views_record
from rollups import rebuild, tables
from rollups.absorb import rollups_absorb_pending
from rollups.jobs import rebuild_job_run
from rollups.models import (
    AbsorbState,
    DailyBlogCountryViews,
    DailyCountryViews,
    MonthlyBlogCountryViews,
    RebuildJob,
)
from rollups.rebuild import rollups_rebuild, summaries_clear
from rollups.tables import BLOG_COUNTRY_LEVEL, COUNTRY_LEVEL
from rollups.tests.conftest import FIRST_DAY
from rollups.tests.recount import (
    assert_summaries_exact,
    recount_from_raw,
    summaries_in_db,
    watermark,
)


def test_rebuild_in_the_open_month_drops_monthly_rows_whose_views_are_gone(blog_ids):
    """The month of the open day: its monthly row counts the days before it; a rebuild after
    those views were deleted behind the API drops the row, though later days have views."""
    with time_machine.travel(datetime(2024, 1, 20, 12, tzinfo=UTC), tick=False):
        views_record(
            views=[
                (blog_ids[0], "US", datetime(2024, 1, 5, tzinfo=UTC)),
                (blog_ids[0], "US", datetime(2024, 1, 20, 1, tzinfo=UTC)),
            ]
        )
        rollups_absorb_pending()
        rows = MonthlyBlogCountryViews.objects
        assert list(rows.values_list("month", "views")) == [(date(2024, 1, 1), 1)]
        BlogView.objects.filter(viewed_at__lt=datetime(2024, 1, 10, tzinfo=UTC)).delete()
        rollups_rebuild(start_date=date(2024, 1, 1), end_date=date(2024, 1, 31))
        assert not rows.exists()
        assert_summaries_exact()


def test_rebuild_repairs_a_range_and_leaves_the_rest(ingest_random):
    ingest_random(800)
    rollups_absorb_pending()
    # Damage summaries inside and outside the range.
    DailyBlogCountryViews.objects.filter(day__lt=date(2024, 3, 1)).update(views=999)
    DailyCountryViews.objects.filter(
        day__gte=date(2024, 2, 10), day__lte=date(2024, 2, 20)
    ).delete()
    result = rollups_rebuild(start_date=date(2024, 2, 10), end_date=date(2024, 2, 20))
    assert result.views == sum(
        v
        for (day, *_), v in recount_from_raw()[COUNTRY_LEVEL.daily].items()
        if date(2024, 2, 10) <= day <= date(2024, 2, 20)
    )
    found = summaries_in_db()[COUNTRY_LEVEL.daily]
    expected = recount_from_raw()[COUNTRY_LEVEL.daily]
    in_range = {k: v for k, v in expected.items() if date(2024, 2, 10) <= k[0] <= date(2024, 2, 20)}
    assert {k: v for k, v in found.items() if k in in_range} == in_range
    # Outside the range the damage stays: a rebuild touches only what it was asked to.
    assert DailyBlogCountryViews.objects.filter(day__lt=date(2024, 2, 10), views=999).exists()
    rollups_rebuild()
    assert_summaries_exact()


def test_rebuild_picks_up_rows_written_behind_the_api(ingest_random, blog_ids):
    ingest_random(300)
    rollups_absorb_pending()
    # A bulk load straight into the raw table, under the absorbed watermark (as a restore of a
    # dump with its original ids would do).
    state = AbsorbState.objects.get()
    low = BlogView.objects.order_by("id").values_list("id", flat=True)[0]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {tables.RAW} WHERE id = %s", [low])
        cursor.execute(
            f"INSERT INTO {tables.RAW} (id, blog_id, country_id, viewed_at) "
            "VALUES (%s, %s, %s, %s)",
            [low, blog_ids[0], "FR", FIRST_DAY + timedelta(days=3)],
        )
    assert state.absorbed_through_id >= low
    rollups_rebuild()
    assert_summaries_exact()


def test_rebuild_counts_views_absorbed_while_it_runs(ingest_random):
    ingest_random(400)
    rollups_absorb_pending()
    rng = random.Random(5)

    def meanwhile(fraction: float) -> None:
        if fraction < 0.9:  # between chunks: ingest and absorb go on
            ingest_random(20, rng=rng, days=(0, 60))
            rollups_absorb_pending()

    rollups_rebuild(start_date=date(2024, 1, 1), end_date=date(2024, 12, 31), progress=meanwhile)
    assert_summaries_exact()


@pytest.mark.parametrize(
    ("start", "end", "scan"),
    [
        (None, None, "ids"),
        (date(2024, 1, 1), date(2024, 12, 31), "ids"),
        (date(2024, 2, 27), date(2024, 3, 3), "days"),
    ],
)
def test_rebuild_scans_by_id_ranges_or_by_days(
    ingest_random, monkeypatch, settings, start, end, scan
):
    """A range holding many of the views is read by id ranges, a small one by days; both are
    exact, whatever the step size."""
    ingest_random(900)
    rollups_absorb_pending()
    DailyBlogCountryViews.objects.update(views=999)  # damage everywhere
    settings.REBUILD_CHUNK_IDS = 37
    monkeypatch.setattr(rebuild, "REBUILD_CHUNK_DAYS", 2)
    first, last = rebuild._day_bounds()
    assert first and last
    chunks = rebuild._rebuild_chunks(start or first, end or last, watermark())
    assert all(("id > %s" in chunk.text) == (scan == "ids") for chunk in chunks)
    assert len(chunks) >= 3
    rollups_rebuild(start_date=start, end_date=end)
    if start is None:
        assert_summaries_exact()
    else:
        found = summaries_in_db()[BLOG_COUNTRY_LEVEL.daily]
        expected = recount_from_raw()[BLOG_COUNTRY_LEVEL.daily]
        inside = {key: v for key, v in expected.items() if start <= key[0] <= end}
        assert {key: v for key, v in found.items() if start <= key[0] <= end} == inside
        assert all(v == 999 for key, v in found.items() if not start <= key[0] <= end)


def test_rebuild_of_an_empty_database(db):
    result = rollups_rebuild()
    assert result.views == 0
    assert_summaries_exact()


def test_summaries_clear_after_raw_is_wiped(ingest_random):
    ingest_random(100)
    rollups_absorb_pending()
    BlogView.objects.all().delete()
    summaries_clear()
    assert_summaries_exact()
    ingest_random(10, rng=random.Random(3))
    assert rollups_absorb_pending().views == 10
    assert_summaries_exact()


def test_a_rebuild_stopped_by_its_soft_time_limit_fails_saying_so(ingest_random, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    ingest_random(50)
    rollups_absorb_pending()
    job = RebuildJob.objects.create()

    def stopped(cursor, stage, **kwargs):
        raise SoftTimeLimitExceeded()

    # The worker raises it asynchronously (see test_tasks for a real one); here, at the swap.
    monkeypatch.setattr(rebuild, "_rebuild_swap", stopped)
    finished = rebuild_job_run(job_id=str(job.id))
    assert finished.state == RebuildJob.State.FAILED
    assert "ran past its time limit (REBUILD_SOFT_TIME_LIMIT_SECONDS)" in finished.error
    assert_summaries_exact()


@pytest.mark.parametrize(
    "outside",
    [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)],
)
def test_an_open_rebuild_stops_at_the_supported_days(ingest_random, blog_ids, outside):
    """A view loaded behind the API with a date outside 1900..2100 must not make an open-ended
    rebuild overflow; its summary rows stay as absorb made them."""
    ingest_random(40)
    BlogView.objects.create(blog_id=blog_ids[0], country_id="US", viewed_at=outside)
    rollups_absorb_pending()
    result = rollups_rebuild()
    assert (result.start_date == date(1900, 1, 1)) is (outside.year == 1)
    assert (result.end_date == date(2100, 12, 31)) is (outside.year == 9999)
    assert result.views == 40
    assert_summaries_exact()
