import random
import time
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.testing import wait_until
from ingest.models import BlogView
from ingest.services import views_record
from rollups import absorb, jobs, rebuild, tables
from rollups.absorb import rollups_absorb_pending
from rollups.jobs import rebuild_job_create, rebuild_job_run, rebuild_jobs_reap
from rollups.models import (
    AbsorbState,
    DailyBlogCountryViews,
    DailyCountryViews,
    MonthlyBlogCountryViews,
    RebuildJob,
)
from rollups.rebuild import rollups_rebuild, summaries_clear
from rollups.selectors import rollups_status
from rollups.tables import BLOG_COUNTRY_LEVEL, COUNTRY_LEVEL
from rollups.tests.conftest import COUNTRIES, DAYS, FIRST_DAY
from rollups.tests.recount import assert_summaries_exact, recount_from_raw, summaries_in_db


def _watermark() -> int:
    state = AbsorbState.objects.filter(name=tables.STATE_NAME).first()
    return state.absorbed_through_id if state else 0


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
    assert _watermark() == BlogView.objects.order_by("-id").values_list("id", flat=True)[0]


def test_absorb_in_small_chunks_is_the_same(ingest_random):
    ingest_random(300)
    assert rollups_absorb_pending(chunk_ids=7).views == 300
    assert_summaries_exact()


def test_absorb_failing_mid_transaction_changes_nothing(ingest_random, monkeypatch):
    ingest_random(100)
    watermark = rollups_absorb_pending().absorbed_through_id
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
    assert _watermark() == watermark
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
                assert_summaries_exact(through_id=_watermark())
            elif kind == "clock":
                clock.shift(timedelta(days=arg))
            else:
                first, length = arg
                start = FIRST_DAY.date() + timedelta(days=first)
                rollups_rebuild(start_date=start, end_date=start + timedelta(days=length))
                assert_summaries_exact(through_id=_watermark())
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


def test_monthly_rows_from_before_the_open_day_are_recomputed(ingest_random):
    """A state row without an open day (as the migration leaves it) means the monthly rows
    count every day; the first run recomputes the current month's rows and drops later ones."""
    ingest_random(400)
    with time_machine.travel(datetime(2025, 6, 15, 12, tzinfo=UTC), tick=False):
        rollups_absorb_pending()
        # What a run before the scheme would have left: every day in the monthly rows.
        AbsorbState.objects.update(monthly_open_from=None)
        MonthlyBlogCountryViews.objects.filter(month__gte=date(2025, 6, 1)).delete()
        MonthlyBlogCountryViews.objects.bulk_create(
            MonthlyBlogCountryViews(month=month, blog_id=blog, country_id=country, views=views)
            for (month, blog, country), views in recount_from_raw()[
                MonthlyBlogCountryViews._meta.db_table
            ].items()
            if month >= date(2025, 6, 1)
        )
        assert_summaries_exact()
        rollups_absorb_pending()
        assert AbsorbState.objects.get().monthly_open_from == date(2025, 6, 15)
        assert not MonthlyBlogCountryViews.objects.filter(month__gte=date(2025, 7, 1)).exists()
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
    watermark = _watermark()
    first, last = rebuild._day_bounds()
    assert first and last
    chunks = rebuild._rebuild_chunks(start or first, end or last, watermark)
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


def test_status(ingest_random):
    status = rollups_status()
    assert (status.pending_views, status.lag_seconds, status.last_run_at) == (0, 0.0, None)
    ingest_random(30)
    assert rollups_status().pending_views == 30
    started = timezone.now()
    with time_machine.travel(started, tick=False):
        rollups_absorb_pending()
    with time_machine.travel(started + timedelta(seconds=12), tick=False):
        ingest_random(5, rng=random.Random(4))
        status = rollups_status()
    assert status.pending_views == 5
    assert status.absorbed_through_id == _watermark()
    assert status.last_run_duration_ms is not None
    # Every pending view was committed after the last run took its bound.
    assert status.lag_seconds == 12.0


def test_a_run_absorbs_its_oldest_views_first_in_a_small_step(ingest_random, monkeypatch):
    ingest_random(100)
    monkeypatch.setattr(absorb, "ABSORB_FIRST_STEP_IDS", 30)
    staged = absorb.stage_views
    steps: list[int] = []

    def record(cursor, stage):
        steps.append(staged(cursor, stage))
        return steps[-1]

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
    result = rollups_absorb_pending(catch_up_views=catch_up_views)
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


def test_rebuild_job_lifecycle(ingest_random):
    ingest_random(100)
    job = RebuildJob.objects.create(start_date=date(2024, 1, 1), end_date=date(2024, 6, 30))
    finished = rebuild_job_run(job_id=str(job.id))
    assert finished.state == RebuildJob.State.DONE
    assert finished.progress == 1.0
    assert finished.views_rebuilt == sum(
        1
        for v in BlogView.objects.values_list("viewed_at", flat=True)
        if date(2024, 1, 1) <= v.date() <= date(2024, 6, 30)
    )
    assert finished.started_at and finished.finished_at
    assert finished.started_at <= finished.finished_at
    # A job runs once: a redelivered message does nothing.
    assert rebuild_job_run(job_id=str(job.id)).finished_at == finished.finished_at


def test_rebuild_job_failure_is_recorded(db, monkeypatch):
    job = RebuildJob.objects.create()

    def broken(**kwargs):
        raise ValueError("disk full")

    monkeypatch.setattr(jobs, "rollups_rebuild", broken)
    finished = rebuild_job_run(job_id=str(job.id))
    assert finished.state == RebuildJob.State.FAILED
    assert finished.error == "ValueError: disk full"


def test_jobs_whose_worker_died_are_failed(db):
    now = timezone.now()
    lost = RebuildJob.objects.create(state="running", heartbeat_at=now - timedelta(minutes=11))
    alive = RebuildJob.objects.create(state="running", heartbeat_at=now - timedelta(minutes=1))
    assert rebuild_jobs_reap() == 1
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert (lost.state, alive.state) == ("failed", "running")
    assert "start a new one" in lost.error


@pytest.mark.django_db(transaction=True)
def test_a_rebuild_request_fails_a_job_whose_worker_died_and_takes_its_range(
    settings, private_broker
):
    settings.REBUILD_STALE_SECONDS = 120
    lost = RebuildJob.objects.create(
        start_date=date(2024, 1, 1),
        end_date=date(2024, 1, 31),
        state="running",
        heartbeat_at=timezone.now() - timedelta(seconds=121),
    )
    # Not left to the next periodic reap: the request itself finds the job dead.
    answer = rebuild_job_create(start_date=date(2024, 1, 1), end_date=date(2024, 1, 31))
    lost.refresh_from_db()
    assert lost.state == "failed"
    assert "stopped reporting" in lost.error
    assert answer.created
    assert answer.job.pk != lost.pk
    assert len(private_broker()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_running_job_beats_while_a_step_reports_no_progress(settings):
    settings.REBUILD_STALE_SECONDS = 0.6  # a beat every 0.1 s
    long_ago = timezone.now() - timedelta(hours=1)
    job = RebuildJob.objects.create(state="running", heartbeat_at=long_ago)

    def heartbeat():
        return RebuildJob.objects.get(pk=job.pk).heartbeat_at

    with jobs._job_heartbeat(job_id=str(job.pk)):
        assert wait_until(lambda: heartbeat() > long_ago, seconds=30)
        assert rebuild_jobs_reap() == 0
    stopped_at = heartbeat()
    time.sleep(0.5)
    assert heartbeat() == stopped_at


def test_queued_jobs_that_no_worker_started_are_failed(db, settings):
    settings.REBUILD_QUEUE_TIMEOUT_SECONDS = 3600
    now = timezone.now()
    waiting = RebuildJob.objects.create()
    forgotten = RebuildJob.objects.create()
    RebuildJob.objects.filter(pk=waiting.pk).update(created_at=now - timedelta(minutes=59))
    RebuildJob.objects.filter(pk=forgotten.pk).update(created_at=now - timedelta(minutes=61))
    assert rebuild_jobs_reap() == 1
    waiting.refresh_from_db()
    forgotten.refresh_from_db()
    assert (waiting.state, forgotten.state) == ("queued", "failed")
    assert forgotten.error.startswith("No worker started this job within 60 minutes")
    assert forgotten.finished_at is not None
    # Its message, should it still arrive, finds the job failed and does nothing.
    assert rebuild_job_run(job_id=str(forgotten.pk)).error == forgotten.error


@pytest.mark.django_db(transaction=True)
def test_a_job_message_expires_when_the_reaper_would_fail_the_job(settings, private_broker):
    settings.REBUILD_QUEUE_TIMEOUT_SECONDS = 5400
    answer = rebuild_job_create(start_date=date(2024, 1, 1), end_date=date(2024, 1, 31))
    [message] = private_broker()
    headers = message["headers"]
    assert (headers["task"], headers["id"] != "", headers["argsrepr"]) == (
        "rollups.rebuild_job",
        True,
        repr((str(answer.job.pk),)),
    )
    expires = datetime.fromisoformat(headers["expires"])
    assert expires == answer.job.created_at + timedelta(seconds=5400)
    # And the limits the worker applies: the settings' where the job was queued.
    assert headers["timelimit"] == [3720, 3600]


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
