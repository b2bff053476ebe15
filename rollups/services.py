"""Keep the summary tables exact: absorb new raw views incrementally, rebuild ranges from raw.

The algorithm (a sequence watermark, as in Citus' incremental rollups):

- ``AbsorbState.absorbed_through_id`` = W. Every raw view with ``id <= W`` is counted in every
  summary exactly once; every view with ``id > W`` is in none (the *tail*, which the read side
  adds from raw).
- A run finds a safe upper bound U: on PostgreSQL it briefly takes a ``SHARE`` lock on the raw
  table, which waits for every transaction still writing to it, then reads ``max(id)``. Ids come
  from a sequence while the writer holds its table lock, so after that wait every id <= U belongs
  to a committed (or rolled back) transaction: no view <= U can appear later. On SQLite the run's
  own write transaction already excludes every other writer.
- In one transaction it aggregates the views in ``(W, U]`` with ``GROUP BY`` into a staging
  table, adds them to each summary with ``INSERT ... ON CONFLICT DO UPDATE SET views = views +
  excluded.views``, and moves W to U. A crash rolls all of it back; a retry starts again from W.
  Two runs serialize on the state row (``SELECT ... FOR UPDATE``), so the second sees the first's
  W. Late views (old ``viewed_at``) get new ids like any other and are absorbed the same way, and
  so are rows loaded behind the API with ``COPY``.
- A rebuild recomputes a date range from raw without blocking ingest or absorb: it aggregates
  the views ``<= W0`` (W0 = W when it starts) chunk by chunk into a staging table, then, in one
  short transaction holding the state row, adds the views absorbed meanwhile (``(W0, W1]``) and
  swaps the range's summary rows for the fresh ones. Readers see the old rows or the new ones,
  never a mix.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from ingest.models import BlogView
from rollups.models import (
    AbsorbState,
    DailyBlogCountryViews,
    DailyBlogViews,
    DailyCountryViews,
    MonthlyBlogCountryViews,
    MonthlyBlogViews,
    RebuildJob,
    YearlyPresence,
)

logger = logging.getLogger(__name__)

STATE_NAME = "views"
# At most this many raw ids per absorb transaction, so that one huge backlog does not become one
# huge transaction; a run loops until it has caught up.
ABSORB_CHUNK_IDS = 2_000_000
# Days of raw views a rebuild aggregates per step (one progress update each).
REBUILD_CHUNK_DAYS = 31
# How long an absorb waits for in-flight ingest transactions before giving up (it is retried).
SAFE_BOUND_LOCK_TIMEOUT = "10s"
# A running rebuild job whose heartbeat is older than this has lost its worker.
JOB_STALE_AFTER = timedelta(minutes=10)

RAW = BlogView._meta.db_table
DAILY_BLOG_COUNTRY = DailyBlogCountryViews._meta.db_table
DAILY_BLOG = DailyBlogViews._meta.db_table
DAILY_COUNTRY = DailyCountryViews._meta.db_table
MONTHLY_BLOG_COUNTRY = MonthlyBlogCountryViews._meta.db_table
MONTHLY_BLOG = MonthlyBlogViews._meta.db_table
PRESENCE = YearlyPresence._meta.db_table
NO_DAYS = "0" * 366

# (table, key columns) of the summaries derived from daily (day, blog, country) counts.
DAILY_SUMMARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (DAILY_BLOG_COUNTRY, ("day", "blog_id", "country_id")),
    (DAILY_BLOG, ("day", "blog_id")),
    (DAILY_COUNTRY, ("day", "country_id")),
)
MONTHLY_SUMMARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (MONTHLY_BLOG_COUNTRY, ("blog_id", "country_id")),
    (MONTHLY_BLOG, ("blog_id",)),
)
SUMMARY_TABLES = (
    *(t for t, _ in DAILY_SUMMARIES),
    *(t for t, _ in MONTHLY_SUMMARIES),
    PRESENCE,
)


@dataclass(frozen=True)
class AbsorbResult:
    """One absorb run: views absorbed, the watermark reached, how long it took."""

    views: int
    absorbed_through_id: int
    duration_ms: int


@dataclass(frozen=True)
class RebuildResult:
    """One rebuild: the range recomputed and the raw views it counted."""

    start_date: date | None
    end_date: date | None
    views: int
    duration_ms: int


# --- SQL that differs by database --------------------------------------------------------------


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _day_of(column: str) -> str:
    """SQL for the UTC calendar day of a timestamp column of the raw table."""
    if _postgres():
        return f"({column} AT TIME ZONE 'UTC')::date"
    # Django keeps SQLite datetimes as naive UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
    return f"substr({column}, 1, 10)"


def _month_of(day_column: str) -> str:
    """SQL for the first day of the month of a date column."""
    if _postgres():
        return f"date_trunc('month', {day_column})::date"
    return f"substr({day_column}, 1, 8) || '01'"


def _timestamp_param(moment: datetime) -> datetime | str:
    """A timestamp as the raw table's column compares with it."""
    if _postgres():
        return moment
    return timezone.make_naive(moment, UTC).isoformat(" ")


def _date_param(day: date) -> date | str:
    return day if _postgres() else day.isoformat()


def _upsert(table: str, keys: tuple[str, ...], select_sql: str) -> str:
    """``INSERT ... SELECT ... ON CONFLICT (keys) DO UPDATE`` adding the selected views."""
    columns = ", ".join((*keys, "views"))
    return (
        f"INSERT INTO {table} ({columns}) {select_sql} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET views = {table}.views + excluded.views"
    )


def _stage_create(cursor: CursorWrapper, name: str) -> None:
    """An empty staging table of (day, blog, country, views), private to this connection.

    Created once per connection and emptied for each use: creating and dropping a table per
    run would fill PostgreSQL's lock table when many runs share one transaction.
    """
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {name} "
        "(day date, blog_id bigint, country_id varchar(2), views bigint)"
    )
    cursor.execute(f"DELETE FROM {name}")


def _stage_raw(
    cursor: CursorWrapper, stage: str, where: str, params: list[int | str | date | datetime]
) -> int:
    """Aggregate the raw views matching ``where`` into the staging table; return how many."""
    cursor.execute(
        f"INSERT INTO {stage} (day, blog_id, country_id, views) "
        f"SELECT {_day_of('viewed_at')}, blog_id, country_id, count(*) FROM {RAW} "
        f"WHERE {where} GROUP BY 1, 2, 3",
        params,
    )
    cursor.execute(f"SELECT coalesce(sum(views), 0) FROM {stage}")
    return int(cursor.fetchone()[0])


def _presence_add(cursor: CursorWrapper, stage: str) -> None:
    """Set the staged days' bits in the yearly presence rows (PostgreSQL only)."""
    cursor.execute(
        f"INSERT INTO {PRESENCE} (year, country_id, blog_id, days) "
        f"SELECT extract(year FROM day)::int, country_id, blog_id, "
        f"bit_or(set_bit(%s::bit(366), extract(doy FROM day)::int - 1, 1)) FROM {stage} "
        f"GROUP BY 1, 2, 3 ON CONFLICT (year, country_id, blog_id) "
        f"DO UPDATE SET days = {PRESENCE}.days | excluded.days",
        [NO_DAYS],
    )


def _stage_apply(cursor: CursorWrapper, stage: str) -> None:
    """Add the staged (day, blog, country) counts to every summary."""
    for table, keys in DAILY_SUMMARIES:
        cursor.execute(
            _upsert(
                table,
                keys,
                f"SELECT {', '.join(keys)}, sum(views) FROM {stage} WHERE true "
                f"GROUP BY {', '.join(keys)}",
            )
        )
    for table, keys in MONTHLY_SUMMARIES:
        month = _month_of("day")
        cursor.execute(
            _upsert(
                table,
                ("month", *keys),
                f"SELECT {month}, {', '.join(keys)}, sum(views) FROM {stage} WHERE true "
                f"GROUP BY {month}, {', '.join(keys)}",
            )
        )
    if _postgres():
        _presence_add(cursor, stage)


# --- Absorb --------------------------------------------------------------------------------------


def _safe_upper_bound() -> int:
    """The largest raw id below which no view can still appear (see the module docstring)."""
    with transaction.atomic(), connection.cursor() as cursor:
        if _postgres():
            cursor.execute(f"SET LOCAL lock_timeout = '{SAFE_BOUND_LOCK_TIMEOUT}'")
            cursor.execute(f"LOCK TABLE {RAW} IN SHARE MODE")
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {RAW}")
        return int(cursor.fetchone()[0])


def _state_locked() -> AbsorbState:
    AbsorbState.objects.get_or_create(name=STATE_NAME)
    return AbsorbState.objects.select_for_update().get(name=STATE_NAME)


def rollups_absorb_pending(*, chunk_ids: int = ABSORB_CHUNK_IDS) -> AbsorbResult:
    """Absorb every raw view committed before this call into the summaries, exactly once.

    Safe to run concurrently with ingest, with another absorb or a rebuild, and to retry after
    a crash at any point: the summaries and the watermark move together in one transaction.
    """
    started = time.perf_counter()
    upper = _safe_upper_bound()
    absorbed = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            state = _state_locked()
            low = state.absorbed_through_id
            # Skip gaps in the ids (rolled-back writes, wiped views) in one step.
            cursor.execute(f"SELECT min(id) FROM {RAW} WHERE id > %s", [low])
            following = cursor.fetchone()[0]
            high = upper if following is None else min(upper, following - 1 + chunk_ids)
            if high > low:
                _stage_create(cursor, "absorb_stage")
                absorbed += _stage_raw(cursor, "absorb_stage", "id > %s AND id <= %s", [low, high])
                _stage_apply(cursor, "absorb_stage")
                cursor.execute("DELETE FROM absorb_stage")
                state.absorbed_through_id = high
            state.last_run_at = timezone.now()
            state.last_run_duration_ms = int((time.perf_counter() - started) * 1000)
            state.last_run_views = absorbed
            state.save()
        if high >= upper:
            break
    logger.info("absorbed %d views through id %d", absorbed, high)
    return AbsorbResult(
        views=absorbed,
        absorbed_through_id=max(high, low),
        duration_ms=int((time.perf_counter() - started) * 1000),
    )


@dataclass(frozen=True)
class RollupStatus:
    pending_views: int
    absorbed_through_id: int
    last_run_at: datetime | None
    last_run_duration_ms: int | None
    lag_seconds: float


def rollups_status() -> RollupStatus:
    """How far the summaries are behind the raw table.

    ``lag_seconds`` is 0 when nothing is pending, else the time since the last run finished:
    every view pending now arrived after that run's bound was taken, or was left for this long.
    """
    state = AbsorbState.objects.filter(name=STATE_NAME).first()
    watermark = state.absorbed_through_id if state else 0
    pending = BlogView.objects.filter(id__gt=watermark).count()
    last_run_at = state.last_run_at if state else None
    if pending == 0:
        lag = 0.0
    elif last_run_at is None:
        oldest = BlogView.objects.filter(id__gt=watermark).order_by("id").first()
        lag = (timezone.now() - oldest.viewed_at).total_seconds() if oldest else 0.0
    else:
        lag = (timezone.now() - last_run_at).total_seconds()
    return RollupStatus(
        pending_views=pending,
        absorbed_through_id=watermark,
        last_run_at=last_run_at,
        last_run_duration_ms=state.last_run_duration_ms if state else None,
        lag_seconds=round(max(lag, 0.0), 3),
    )


# --- Rebuild -------------------------------------------------------------------------------------


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _month_end(day: date) -> date:
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def _day_bounds() -> tuple[date | None, date | None]:
    """The first and last day holding raw views or summary rows."""
    days: list[date] = []
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(viewed_at), max(viewed_at) FROM {RAW}")
        low, high = cursor.fetchone()
        for value in (low, high):
            if value is not None:
                if isinstance(value, str):
                    value = datetime.fromisoformat(value)
                days.append(value.date())
        cursor.execute(f"SELECT min(day), max(day) FROM {DAILY_BLOG_COUNTRY}")
        for value in cursor.fetchone():
            if value is not None:
                days.append(date.fromisoformat(value) if isinstance(value, str) else value)
    if not days:
        return None, None
    return min(days), max(days)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def rollups_rebuild(
    *,
    start_date: date | None = None,
    end_date: date | None = None,
    progress: Callable[[float], None] | None = None,
) -> RebuildResult:
    """Recompute every summary for the days ``start_date..end_date`` (inclusive) from raw.

    Absorbs what is pending first. An open end means the earliest / latest day with views or
    summary rows. Ingest and absorb go on meanwhile; the range's summary rows are swapped in one
    transaction at the end. Monthly rows of the months the range touches are recomputed from the
    daily rows. ``progress`` is
    called with the fraction done (0 to 1) after each chunk.
    """
    started = time.perf_counter()
    # Catch up first, so that the range is rebuilt from every view committed before this call.
    rollups_absorb_pending()
    first_day, last_day = _day_bounds()
    start = start_date or first_day
    end = end_date or last_day
    if start is None or end is None or start > end:
        if progress:
            progress(1.0)
        return RebuildResult(start_date, end_date, 0, int((time.perf_counter() - started) * 1000))

    watermark = (
        AbsorbState.objects.filter(name=STATE_NAME)
        .values_list("absorbed_through_id", flat=True)
        .first()
        or 0
    )
    chunks = []
    chunk_start = start
    while chunk_start <= end:
        chunk_end = min(chunk_start + timedelta(days=REBUILD_CHUNK_DAYS - 1), end)
        chunks.append((chunk_start, chunk_end))
        chunk_start = chunk_end + timedelta(days=1)

    stage = "rebuild_stage"
    with connection.cursor() as cursor:
        _stage_create(cursor, stage)
        try:
            for done, (low, high) in enumerate(chunks, start=1):
                with transaction.atomic():
                    _stage_raw(
                        cursor,
                        stage,
                        "viewed_at >= %s AND viewed_at < %s AND id <= %s",
                        [
                            _timestamp_param(_day_start(low)),
                            _timestamp_param(_day_start(high + timedelta(days=1))),
                            watermark,
                        ],
                    )
                if progress:
                    progress(0.9 * done / len(chunks))
            views = _rebuild_swap(cursor, stage, start=start, end=end, watermark=watermark)
        finally:
            cursor.execute(f"DELETE FROM {stage}")
    if progress:
        progress(1.0)
    duration_ms = int((time.perf_counter() - started) * 1000)
    logger.info("rebuilt %s..%s from %d raw views in %d ms", start, end, views, duration_ms)
    return RebuildResult(start, end, views, duration_ms)


def _rebuild_swap(
    cursor: CursorWrapper, stage: str, *, start: date, end: date, watermark: int
) -> int:
    """Replace the range's summary rows with the staged counts, in one transaction."""
    range_params: list[int | str | date | datetime] = [
        _timestamp_param(_day_start(start)),
        _timestamp_param(_day_start(end + timedelta(days=1))),
    ]
    with transaction.atomic():
        state = _state_locked()
        # Views absorbed while the stage was built are in the old rows; add them to the new.
        if state.absorbed_through_id > watermark:
            _stage_raw(
                cursor,
                stage,
                "viewed_at >= %s AND viewed_at < %s AND id > %s AND id <= %s",
                [*range_params, watermark, state.absorbed_through_id],
            )
        cursor.execute(f"SELECT coalesce(sum(views), 0) FROM {stage}")
        views = int(cursor.fetchone()[0])
        day_range = [_date_param(start), _date_param(end)]
        for table, keys in DAILY_SUMMARIES:
            cursor.execute(f"DELETE FROM {table} WHERE day >= %s AND day <= %s", day_range)
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(keys)}, views) "
                f"SELECT {', '.join(keys)}, sum(views) FROM {stage} GROUP BY {', '.join(keys)}"
            )
        # Whole months from the (now exact) daily rows: a range may cover part of a month.
        month_range = [_date_param(_month_start(start)), _date_param(_month_end(end))]
        month = _month_of("day")
        for table, keys in MONTHLY_SUMMARIES:
            cursor.execute(
                f"DELETE FROM {table} WHERE month >= %s AND month <= %s",
                [_date_param(_month_start(start)), _date_param(_month_start(end))],
            )
            cursor.execute(
                f"INSERT INTO {table} (month, {', '.join(keys)}, views) "
                f"SELECT {month}, {', '.join(keys)}, sum(views) FROM {DAILY_BLOG_COUNTRY} "
                f"WHERE day >= %s AND day <= %s GROUP BY {month}, {', '.join(keys)}",
                month_range,
            )
        if _postgres():
            # Clear the range's days in its years' presence rows, then set them from the stage.
            for year, mask in year_masks(start, end).items():
                cursor.execute(
                    f"UPDATE {PRESENCE} SET days = days & ~%s::bit(366) WHERE year = %s",
                    [mask, year],
                )
            cursor.execute(
                f"DELETE FROM {PRESENCE} WHERE year >= %s AND year <= %s AND days = %s::bit(366)",
                [start.year, end.year, NO_DAYS],
            )
            _presence_add(cursor, stage)
        # Cached answers from before the rebuild carry the old version and are never served.
        state.rebuild_version += 1
        state.save(update_fields=["rebuild_version"])
    return views


def year_masks(start: date, end: date) -> dict[int, str]:
    """For each year ``start..end`` touches: a 366-bit mask of its days inside the range."""
    masks = {}
    for year in range(start.year, end.year + 1):
        first = max(start, date(year, 1, 1))
        last = min(end, date(year, 12, 31))
        low = first.timetuple().tm_yday - 1
        high = last.timetuple().tm_yday - 1
        masks[year] = "0" * low + "1" * (high - low + 1) + "0" * (365 - high)
    return masks


def summaries_clear() -> None:
    """Empty every summary and move the watermark past every raw view (use after wiping raw)."""
    with transaction.atomic(), connection.cursor() as cursor:
        state = _state_locked()
        for table in SUMMARY_TABLES:
            cursor.execute(f"DELETE FROM {table}")
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {RAW}")
        state.absorbed_through_id = max(state.absorbed_through_id, int(cursor.fetchone()[0]))
        state.rebuild_version += 1
        state.save()


# --- Rebuild jobs --------------------------------------------------------------------------------


def rebuild_job_create(
    *, start_date: date | None, end_date: date | None, requested_by: Any = None
) -> RebuildJob:
    """Record a queued rebuild job and send it to a worker once the record is committed."""
    from rollups.tasks import rebuild_job_task

    job = RebuildJob.objects.create(
        start_date=start_date,
        end_date=end_date,
        requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
    )
    job_id = str(job.id)
    transaction.on_commit(lambda: rebuild_job_task.delay(job_id))
    return job


def rebuild_job_run(*, job_id: str) -> RebuildJob:
    """Run a queued rebuild job, recording its state, progress, timings and any error.

    A job that is not queued (already run, e.g. a redelivered message) is left as it is.
    Raises ``RebuildJob.DoesNotExist`` for an unknown id.
    """
    claimed = RebuildJob.objects.filter(id=job_id, state=RebuildJob.State.QUEUED).update(
        state=RebuildJob.State.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    if not claimed:
        job = RebuildJob.objects.get(id=job_id)
        logger.warning("rebuild job %s is %s, not queued; skipped", job_id, job.state)
        return job
    job = RebuildJob.objects.get(id=job_id)

    def report(fraction: float) -> None:
        RebuildJob.objects.filter(id=job_id).update(
            progress=round(fraction, 4), heartbeat_at=timezone.now()
        )

    try:
        result = rollups_rebuild(start_date=job.start_date, end_date=job.end_date, progress=report)
    except Exception as exc:
        logger.exception("rebuild job %s failed", job_id)
        RebuildJob.objects.filter(id=job_id).update(
            state=RebuildJob.State.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
    else:
        RebuildJob.objects.filter(id=job_id).update(
            state=RebuildJob.State.DONE,
            progress=1.0,
            views_rebuilt=result.views,
            finished_at=timezone.now(),
        )
    return RebuildJob.objects.get(id=job_id)


def rebuild_jobs_reap(*, stale_after: timedelta = JOB_STALE_AFTER) -> int:
    """Mark running jobs whose worker stopped reporting as failed; return how many."""
    return RebuildJob.objects.filter(
        state=RebuildJob.State.RUNNING, heartbeat_at__lt=timezone.now() - stale_after
    ).update(
        state=RebuildJob.State.FAILED,
        error="The worker running this job stopped reporting (lost or killed); start a new one.",
        finished_at=timezone.now(),
    )
