"""Keep the summary tables exact: absorb new raw views incrementally, rebuild ranges from raw.

The algorithm (a sequence watermark, as in Citus' incremental rollups):

- ``AbsorbState.absorbed_through_id`` = W. Every raw view with ``id <= W`` is counted in every
  summary exactly once; every view with ``id > W`` is in none (the *tail*, which the read side
  adds from raw).
- A run finds a safe upper bound U: on PostgreSQL it reads the id sequence's last value, then
  waits (without taking any lock) for the transactions that hold their ROW EXCLUSIVE lock on the
  raw table at that moment. A writer draws its ids while holding that lock, so after the wait
  every id <= U belongs to a committed (or rolled back) transaction: no view <= U can appear
  later. On SQLite one writer runs at a time and ids only grow, so ``max(id)`` of what is
  committed is safe.
- In one transaction it aggregates the views in ``(W, U]`` with ``GROUP BY`` into a staging
  table, adds them to each summary with ``INSERT ... ON CONFLICT DO UPDATE SET views = views +
  excluded.views``, and moves W to U. A crash rolls all of it back; a retry starts again from W.
  Two runs serialize on the state row (``SELECT ... FOR UPDATE``), so the second sees the first's
  W. Late views (old ``viewed_at``) get new ids like any other and are absorbed the same way, and
  so are rows loaded behind the API with ``COPY``.
- A rebuild recomputes a date range from raw without blocking ingest or absorb: it aggregates
  the views ``<= W0`` (W0 = W when it starts) chunk by chunk into a staging table, then, in one
  transaction holding the state row, adds the views absorbed meanwhile (``(W0, W1]``) and makes
  the range's summary rows equal to the fresh ones (rewriting only rows that differ). Readers
  see the old rows or the new ones, never a mix; absorb waits for that transaction.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import caches
from django.db import OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Q
from django.utils import timezone

from core.cache import RedisCache
from core.dates import FIRST_DAY, LAST_DAY
from core.exceptions import ApplicationError
from core.sql import (
    day_of,
    day_param,
    day_start_param,
    month_of,
    month_start,
    next_month,
    next_month_of,
    postgres,
)
from ingest.models import BlogView
from rollups.models import (
    AbsorbState,
    DailyBlogCountryViews,
    DailyBlogViews,
    DailyCountryViews,
    DailyViews,
    MonthlyBlogCountryViews,
    MonthlyBlogViews,
    MonthlyCountryViews,
    RebuildJob,
    YearlyCountryBlogs,
    YearlyPresence,
)

logger = logging.getLogger(__name__)

STATE_NAME = "views"
# At most this many raw ids per absorb transaction, so that one huge backlog does not become one
# huge transaction; a run loops until it has caught up.
ABSORB_CHUNK_IDS = 2_000_000
# A run's first transaction takes at most this many ids, so that the views that have waited
# longest are in the summaries within a fraction of a second, whatever the backlog.
ABSORB_FIRST_STEP_IDS = 10_000
# A run that absorbed this many views takes a new bound and goes on with what was committed
# meanwhile, up to this many bounds in all (see rollups_absorb_pending).
CATCH_UP_VIEWS = 20_000
CATCH_UP_PASSES = 4
# The beat task's runs, when they absorbed anything, take their last bound no sooner than this
# share of ROLLUP_INTERVAL_SECONDS after they started (see rollups_absorb_pending).
TRAIL_SHARE = 0.1
# A rebuild aggregates the raw views step by step (one progress update each): by id ranges of
# settings.REBUILD_CHUNK_IDS (sequential reads) when its range holds at least REBUILD_SCAN_SHARE
# of all views, else by days through the viewed_at index. Ids are not in day order (late views),
# so a range of days spans the whole heap, and reading it day by day would read most pages many
# times.
REBUILD_CHUNK_DAYS = 31
REBUILD_SCAN_SHARE = 0.2
# How long an absorb waits for in-flight ingest transactions before giving up (it is retried).
SAFE_BOUND_WAIT_SECONDS = 10
# Memory per sort / hash of an absorb or rebuild transaction (PostgreSQL's default is 4 MB).
WORK_MEM = "64MB"
# The cache entry holding the rebuild version (see rebuild_version_publish) and its lifetime.
REBUILD_VERSION_KEY = "analytics:rebuild-version"
REBUILD_VERSION_SECONDS = 5
# A running rebuild job beats this many times per REBUILD_STALE_SECONDS (see _job_heartbeat).
HEARTBEATS_PER_STALE = 6
# The days a rebuild may cover: the one range of core.dates (API.md section 10). An open end stops
# at them too, so that a view loaded behind the API with a date outside them cannot make the day
# arithmetic overflow.
REBUILD_FIRST_DAY = FIRST_DAY
REBUILD_LAST_DAY = LAST_DAY
# Sending a rebuild job's task must not hang a request on a broker that does not answer: each
# attempt's socket waits at most this long, and the send is tried at most 3 times, about 4 s in all.
PUBLISH_SOCKET_SECONDS = 1.0
# What a 503 for a broker that could not take a job tells the client to wait before trying again.
BROKER_RETRY_AFTER_SECONDS = 10
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}

RAW = BlogView._meta.db_table
DAILY_BLOG_COUNTRY = DailyBlogCountryViews._meta.db_table
DAILY_BLOG = DailyBlogViews._meta.db_table
DAILY_COUNTRY = DailyCountryViews._meta.db_table
DAILY = DailyViews._meta.db_table
MONTHLY_BLOG_COUNTRY = MonthlyBlogCountryViews._meta.db_table
MONTHLY_BLOG = MonthlyBlogViews._meta.db_table
MONTHLY_COUNTRY = MonthlyCountryViews._meta.db_table
PRESENCE = YearlyPresence._meta.db_table
COUNTRY_BLOGS = YearlyCountryBlogs._meta.db_table
NO_DAYS = "0" * 366

# (table, key columns) of the summaries derived from daily (day, blog, country) counts.
DAILY_SUMMARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (DAILY_BLOG_COUNTRY, ("day", "blog_id", "country_id")),
    (DAILY_BLOG, ("day", "blog_id")),
    (DAILY_COUNTRY, ("day", "country_id")),
    (DAILY, ("day",)),
)
MONTHLY_SUMMARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (MONTHLY_BLOG_COUNTRY, ("blog_id", "country_id")),
    (MONTHLY_BLOG, ("blog_id",)),
    (MONTHLY_COUNTRY, ("country_id",)),
)
SUMMARY_TABLES = (
    *(t for t, _ in DAILY_SUMMARIES),
    *(t for t, _ in MONTHLY_SUMMARIES),
    PRESENCE,
    COUNTRY_BLOGS,
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


# --- Staging and upserts ----------------------------------------------------------------------


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
) -> None:
    """Aggregate the raw views matching ``where`` into the staging table."""
    cursor.execute(
        f"INSERT INTO {stage} (day, blog_id, country_id, views) "
        f"SELECT {day_of('viewed_at')}, blog_id, country_id, count(*) FROM {RAW} "
        f"WHERE {where} GROUP BY 1, 2, 3",
        params,
    )


def _stage_views(cursor: CursorWrapper, stage: str) -> int:
    """The views staged; on PostgreSQL also gives the planner the staging table's statistics
    (autovacuum never analyzes temporary tables, and the upserts' plans depend on its size)."""
    if postgres():
        cursor.execute(f"ANALYZE {stage}")
    cursor.execute(f"SELECT coalesce(sum(views), 0) FROM {stage}")
    return int(cursor.fetchone()[0])


def _work_mem(cursor: CursorWrapper) -> None:
    """Room for the GROUP BYs of a big run to hash in memory (PostgreSQL, this transaction)."""
    if postgres():
        cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")


# The staged days as yearly presence rows (year, country, blog, days), in key order (rebuild).
_PRESENCE_SELECT = (
    "SELECT extract(year FROM day)::int AS year, country_id, blog_id, "
    "bit_or(set_bit(%s::bit(366), extract(doy FROM day)::int - 1, 1)) AS days FROM {stage} "
    "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)


def _with_presence(upsert_sql: str) -> str:
    """PostgreSQL: the (day, blog, country) upsert, chained to the presence bits of the rows it
    inserted, chained to the yearly per-country counts of the presence rows those created.

    A presence bit is set exactly when its (day, blog, country) row exists, and absorb only
    adds views: a row the upsert updated had its bit already, so only inserted rows need one.
    ``xmax = 0`` marks a row an upsert inserted rather than updated.
    """
    return (
        f"WITH added AS ({upsert_sql} RETURNING day, blog_id, country_id, xmax = 0 AS inserted), "
        f"present AS (INSERT INTO {PRESENCE} (year, country_id, blog_id, days) "
        "SELECT extract(year FROM day)::int, country_id, blog_id, "
        "bit_or(set_bit(%s::bit(366), extract(doy FROM day)::int - 1, 1)) FROM added "
        "WHERE inserted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 "
        f"ON CONFLICT (year, country_id, blog_id) DO UPDATE SET days = {PRESENCE}.days | "
        "excluded.days RETURNING year, country_id, xmax = 0 AS inserted) "
        f"INSERT INTO {COUNTRY_BLOGS} (year, country_id, blogs) "
        "SELECT year, country_id, count(*) FROM present WHERE inserted GROUP BY 1, 2 "
        f"ON CONFLICT (year, country_id) DO UPDATE SET blogs = {COUNTRY_BLOGS}.blogs + "
        "excluded.blogs"
    )


def _stage_apply(cursor: CursorWrapper, stage: str, *, open_from: date | None) -> None:
    """Add the staged (day, blog, country) counts to every summary.

    The monthly (blog, country) rows get only the staged days before ``open_from`` (see
    ``_monthly_fold``).

    Each summary's increments go in key order: the upsert then walks the key index (and the
    heap, which absorb fills in roughly the same order) front to back instead of at random (in
    one measurement with 4 GB of shared buffers, the upserts of 1 M late views took 14.5 s
    instead of 22.1 s; at the server's default 128 MB, sorting made no difference).
    """
    for table, keys in DAILY_SUMMARIES:
        names = ", ".join(keys)
        upsert = _upsert(
            table,
            keys,
            f"SELECT {names}, sum(views) FROM {stage} WHERE true GROUP BY {names} ORDER BY {names}",
        )
        if table == DAILY_BLOG_COUNTRY and postgres():
            cursor.execute(_with_presence(upsert), [NO_DAYS])
        else:
            cursor.execute(upsert)
    for table, keys in MONTHLY_SUMMARIES:
        names = f"{month_of('day')}, {', '.join(keys)}"
        where, params = "true", []
        if table == MONTHLY_BLOG_COUNTRY and open_from is not None:
            where, params = "day < %s", [day_param(open_from)]
        cursor.execute(
            _upsert(
                table,
                ("month", *keys),
                f"SELECT {names}, sum(views) FROM {stage} WHERE {where} "
                f"GROUP BY {names} ORDER BY {names}",
            ),
            params,
        )


def _monthly_fold(cursor: CursorWrapper, state: AbsorbState) -> None:
    """Fold the days that have ended into the monthly (blog, country) rows (state locked).

    That table counts exactly the views of the days before ``state.monthly_open_from``; the
    later ones (today, and any day ahead that a clock faster than ours sent) are only in the
    daily rows, where readers take them from. New views are nearly all of today, so an absorb
    skips one upsert of a row per (blog, country) group, a quarter of its time. The first run
    of a day (by this process's clock) adds the ended days' daily rows, which under the state
    lock count exactly the absorbed views, to their months' rows: one day's rows, a small
    upsert. The open day only moves forward. With no open day yet (a new state row, or rows from
    before this scheme, which count every day), the current month's rows and later ones are
    recomputed from the days before today instead.
    """
    today = timezone.now().astimezone(UTC).date()
    open_from = state.monthly_open_from
    if open_from is not None and open_from >= today:
        return
    _work_mem(cursor)
    if open_from is None:
        open_from = month_start(today)
        cursor.execute(
            f"DELETE FROM {MONTHLY_BLOG_COUNTRY} WHERE month >= %s", [day_param(open_from)]
        )
    month = month_of("day")
    cursor.execute(
        _upsert(
            MONTHLY_BLOG_COUNTRY,
            ("month", "blog_id", "country_id"),
            f"SELECT {month}, blog_id, country_id, sum(views) FROM {DAILY_BLOG_COUNTRY} "
            f"WHERE day >= %s AND day < %s GROUP BY {month}, blog_id, country_id "
            f"ORDER BY {month}, blog_id, country_id",
        ),
        [day_param(open_from), day_param(today)],
    )
    state.monthly_open_from = today


# --- Absorb --------------------------------------------------------------------------------------


def _safe_upper_bound() -> int:
    """The largest raw id below which no view can still appear (see the module docstring)."""
    with connection.cursor() as cursor:
        if not postgres():
            # One writer at a time, and AUTOINCREMENT ids: an in-flight writer's ids are above
            # every committed one.
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {RAW}")
            return int(cursor.fetchone()[0])
        # Every id up to the sequence's last value was drawn by a transaction that held its
        # ROW EXCLUSIVE lock on the raw table while drawing it: wait for the ones holding it now.
        # (Taking a lock that conflicts with theirs would also stall ingest and cancel vacuums.)
        cursor.execute(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')), 0)", [RAW]
        )
        upper = int(cursor.fetchone()[0])
        writers = (
            "SELECT virtualtransaction FROM pg_locks WHERE locktype = 'relation' "
            "AND relation = %s::regclass AND mode = 'RowExclusiveLock' AND granted "
            "AND pid <> pg_backend_pid()"
        )
        cursor.execute(writers, [RAW])
        in_flight = {row[0] for row in cursor.fetchall()}
        deadline = time.monotonic() + SAFE_BOUND_WAIT_SECONDS
        while in_flight:
            if time.monotonic() > deadline:
                raise OperationalError(
                    f"{len(in_flight)} transaction(s) writing raw views did not finish within "
                    f"{SAFE_BOUND_WAIT_SECONDS} s; absorb will retry"
                )
            time.sleep(0.005)
            cursor.execute(writers, [RAW])
            in_flight &= {row[0] for row in cursor.fetchall()}
        return upper


def _state_locked() -> AbsorbState:
    AbsorbState.objects.get_or_create(name=STATE_NAME)
    return AbsorbState.objects.select_for_update().get(name=STATE_NAME)


def rollups_absorb_pending(
    *,
    chunk_ids: int = ABSORB_CHUNK_IDS,
    catch_up_views: int = CATCH_UP_VIEWS,
    trail_seconds: float = 0.0,
) -> AbsorbResult:
    """Absorb every raw view committed before this call into the summaries, exactly once.

    Safe to run concurrently with ingest, with another absorb or a rebuild, and to retry after
    a crash at any point: the summaries and the watermark move together in one transaction.

    A run that absorbed at least ``catch_up_views`` views takes a new bound and absorbs what was
    committed while it ran (at most ``CATCH_UP_PASSES`` bounds), so that the views left pending
    when it ends are those of its short last pass, not of the whole run.

    A run that absorbed anything and caught up sooner than ``trail_seconds`` after it started
    sleeps until then and takes one more bound. The views that wait longest for the next run
    are those committed just after a run's last bound; the later that bound, the shorter their
    wait. Without it, a periodic run that is fast would leave them waiting a whole interval
    plus the next run's first step.
    """
    started = time.perf_counter()
    absorbed = 0
    first_step = True
    trailed = False
    for _ in range(CATCH_UP_PASSES):
        bound_at = timezone.now()
        upper = _safe_upper_bound()
        pass_views = 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                state = _state_locked()
                _monthly_fold(cursor, state)
                low = state.absorbed_through_id
                # Skip gaps in the ids (rolled-back writes, wiped views) in one step.
                cursor.execute(f"SELECT min(id) FROM {RAW} WHERE id > %s", [low])
                following = cursor.fetchone()[0]
                step = min(chunk_ids, ABSORB_FIRST_STEP_IDS) if first_step else chunk_ids
                first_step = False
                high = upper if following is None else min(upper, following - 1 + step)
                if high > low:
                    _work_mem(cursor)
                    _stage_create(cursor, "absorb_stage")
                    _stage_raw(cursor, "absorb_stage", "id > %s AND id <= %s", [low, high])
                    pass_views += _stage_views(cursor, "absorb_stage")
                    _stage_apply(cursor, "absorb_stage", open_from=state.monthly_open_from)
                    cursor.execute("DELETE FROM absorb_stage")
                    state.absorbed_through_id = high
                if high >= upper and (
                    state.absorbed_through_at is None or state.absorbed_through_at < bound_at
                ):
                    state.absorbed_through_at = bound_at
                state.last_run_at = timezone.now()
                state.last_run_duration_ms = int((time.perf_counter() - started) * 1000)
                state.last_run_views = absorbed + pass_views
                state.save()
            if high >= upper:
                break
        absorbed += pass_views
        if pass_views >= catch_up_views:
            continue
        wait = trail_seconds - (time.perf_counter() - started)
        if not absorbed or wait <= 0 or trailed:
            break
        trailed = True
        time.sleep(wait)
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

    ``lag_seconds`` is 0 when nothing is pending, else the time since the last bound was taken
    (``absorbed_through_at``): every view pending now was committed after it, so none has waited
    longer.
    """
    state = AbsorbState.objects.filter(name=STATE_NAME).first()
    watermark = state.absorbed_through_id if state else 0
    pending = BlogView.objects.filter(id__gt=watermark).count()
    last_run_at = state.last_run_at if state else None
    if pending == 0:
        lag = 0.0
    elif state is None or state.absorbed_through_at is None:
        oldest = BlogView.objects.filter(id__gt=watermark).order_by("id").first()
        lag = (timezone.now() - oldest.viewed_at).total_seconds() if oldest else 0.0
    else:
        lag = (timezone.now() - state.absorbed_through_at).total_seconds()
    return RollupStatus(
        pending_views=pending,
        absorbed_through_id=watermark,
        last_run_at=last_run_at,
        last_run_duration_ms=state.last_run_duration_ms if state else None,
        lag_seconds=round(max(lag, 0.0), 3),
    )


# --- Rebuild -------------------------------------------------------------------------------------


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


def rollups_rebuild(
    *,
    start_date: date | None = None,
    end_date: date | None = None,
    progress: Callable[[float], None] | None = None,
) -> RebuildResult:
    """Recompute every summary for the days ``start_date..end_date`` (inclusive) from raw.

    Absorbs what is pending first. An open end means the earliest / latest day with views or
    summary rows, within ``REBUILD_FIRST_DAY..REBUILD_LAST_DAY``. Ingest and absorb go on
    meanwhile; the range's summary rows are swapped in one transaction at the end. Monthly rows
    of the months the range touches are recomputed from the daily rows. ``progress`` is called
    with the fraction done (0 to 1) after each chunk.
    """
    started = time.perf_counter()
    # Catch up first, so that the range is rebuilt from every view committed before this call.
    rollups_absorb_pending()
    first_day, last_day = _day_bounds()
    start = start_date or (max(first_day, REBUILD_FIRST_DAY) if first_day else None)
    end = end_date or (min(last_day, REBUILD_LAST_DAY) if last_day else None)
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
    chunks = _rebuild_chunks(start, end, watermark)
    stage = "rebuild_stage"
    with connection.cursor() as cursor:
        _stage_create(cursor, stage)
        if not postgres():
            # The swap looks staged keys up one by one on SQLite (PostgreSQL hashes them).
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {stage}_key ON {stage} (day, blog_id, country_id)"
            )
        try:
            for done, (where, params) in enumerate(chunks, start=1):
                with transaction.atomic():
                    _work_mem(cursor)
                    _stage_raw(cursor, stage, where, params)
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


def _rebuild_chunks(
    start: date, end: date, watermark: int
) -> list[tuple[str, list[int | str | date | datetime]]]:
    """The steps of a rebuild's raw scan: ``(where, params)`` each, together covering the views
    of ``start..end`` with ``id <= watermark``."""
    in_range = "viewed_at >= %s AND viewed_at < %s AND id <= %s"
    range_params: list[int | str | date | datetime] = [
        day_start_param(start),
        day_start_param(end + timedelta(days=1)),
        watermark,
    ]
    with connection.cursor() as cursor:
        # The day totals are exact through the watermark: they tell the range's share of views.
        cursor.execute(
            f"SELECT coalesce(sum(CASE WHEN day >= %s AND day <= %s THEN views END), 0), "
            f"coalesce(sum(views), 0) FROM {DAILY}",
            [day_param(start), day_param(end)],
        )
        in_range_views, all_views = (int(value) for value in cursor.fetchone())
        cursor.execute(f"SELECT coalesce(min(id), 1) FROM {RAW}")
        first_id = int(cursor.fetchone()[0])
    chunks: list[tuple[str, list[int | str | date | datetime]]] = []
    if all_views and in_range_views >= REBUILD_SCAN_SHARE * all_views:
        step = settings.REBUILD_CHUNK_IDS
        for low in range(first_id - 1, watermark, step):
            high = min(low + step, watermark)
            chunks.append((f"{in_range} AND id > %s AND id <= %s", [*range_params, low, high]))
        return chunks
    chunk_start = start
    while chunk_start <= end:
        chunk_end = min(chunk_start + timedelta(days=REBUILD_CHUNK_DAYS - 1), end)
        chunks.append(
            (
                in_range,
                [
                    day_start_param(chunk_start),
                    day_start_param(chunk_end + timedelta(days=1)),
                    watermark,
                ],
            )
        )
        chunk_start = chunk_end + timedelta(days=1)
    return chunks


def _replace_rows(
    cursor: CursorWrapper,
    table: str,
    keys: tuple[str, ...],
    *,
    source_sql: str,
    source_params: list[int | str | date | datetime],
    missing_sql: str,
    missing_params: list[int | str | date | datetime] | None = None,
    range_sql: str,
    range_params: list[int | str | date | datetime],
    value: str = "views",
) -> None:
    """Make ``table``'s rows in a range equal to ``source_sql``'s, writing only what differs.

    ``source_sql`` selects the keys and the value; ``range_sql`` (with ``range_params``) is the
    condition on ``table`` that bounds the range. Rewriting every row instead would cost a full
    copy of the range in dead rows and index entries; a rebuild usually changes few rows.

    On PostgreSQL one statement full-joins the source to the range's rows and updates, inserts
    and deletes only the keys whose value differs: comparing reads, where an ``INSERT ... ON
    CONFLICT DO UPDATE ... WHERE`` would lock (write) every existing row it compares. Elsewhere
    an upsert writes the changed and new rows, and a delete drops the keys that ``missing_sql``
    (a condition on ``table``, with ``missing_params``) finds absent from the source.
    """
    names = ", ".join(keys)
    if postgres():
        match = " AND ".join(f"t.{key} = d.{key}" for key in keys)
        cursor.execute(
            f"WITH fresh ({names}, fresh_value) AS ({source_sql}), "
            f"old AS (SELECT {names}, {value} AS old_value FROM {table} WHERE {range_sql}), "
            f"diff AS MATERIALIZED (SELECT {names}, fresh_value, old_value FROM fresh "
            f"FULL JOIN old USING ({names}) WHERE fresh_value IS DISTINCT FROM old_value), "
            f"updated AS (UPDATE {table} t SET {value} = d.fresh_value FROM diff d "
            f"WHERE {match} AND d.fresh_value IS NOT NULL AND d.old_value IS NOT NULL), "
            f"deleted AS (DELETE FROM {table} t USING diff d "
            f"WHERE {match} AND d.fresh_value IS NULL) "
            f"INSERT INTO {table} ({names}, {value}) SELECT {names}, fresh_value FROM diff "
            f"WHERE old_value IS NULL",
            [*source_params, *range_params],
        )
        return
    cursor.execute(
        f"INSERT INTO {table} ({names}, {value}) {source_sql} ON CONFLICT ({names}) "
        f"DO UPDATE SET {value} = excluded.{value} WHERE {table}.{value} <> excluded.{value}",
        source_params,
    )
    cursor.execute(
        f"DELETE FROM {table} WHERE {range_sql} AND NOT EXISTS ({missing_sql})",
        [*range_params, *(missing_params or [])],
    )


def _rebuild_swap(
    cursor: CursorWrapper, stage: str, *, start: date, end: date, watermark: int
) -> int:
    """Make the range's summary rows equal to the staged counts, in one transaction."""
    range_params: list[int | str | date | datetime] = [
        day_start_param(start),
        day_start_param(end + timedelta(days=1)),
    ]
    with transaction.atomic():
        state = _state_locked()
        _work_mem(cursor)
        # Views absorbed while the stage was built are in the old rows; add them to the new.
        if state.absorbed_through_id > watermark:
            _stage_raw(
                cursor,
                stage,
                "viewed_at >= %s AND viewed_at < %s AND id > %s AND id <= %s",
                [*range_params, watermark, state.absorbed_through_id],
            )
        views = _stage_views(cursor, stage)
        day_range: list[int | str | date | datetime] = [day_param(start), day_param(end)]
        for table, keys in DAILY_SUMMARIES:
            names = ", ".join(keys)
            _replace_rows(
                cursor,
                table,
                keys,
                source_sql=f"SELECT {names}, sum(views) FROM {stage} WHERE true GROUP BY {names}",
                source_params=[],
                missing_sql=f"SELECT 1 FROM {stage} WHERE "
                + " AND ".join(f"{stage}.{key} = {table}.{key}" for key in keys),
                range_sql=f"{table}.day >= %s AND {table}.day <= %s",
                range_params=day_range,
            )
        # Whole months from the (now exact) daily rows: a range may cover part of a month.
        # The monthly (blog, country) rows count the days before the open day (_monthly_fold).
        month = month_of("day")
        for (table, keys), daily in zip(
            MONTHLY_SUMMARIES, (DAILY_BLOG_COUNTRY, DAILY_BLOG, DAILY_COUNTRY), strict=True
        ):
            last_day = next_month(end) - timedelta(days=1)
            open_from = state.monthly_open_from
            if table == MONTHLY_BLOG_COUNTRY and open_from is not None:
                last_day = min(last_day, open_from - timedelta(days=1))
            last_month = month_start(last_day)
            if last_month < month_start(start):
                continue
            names = ", ".join(keys)
            _replace_rows(
                cursor,
                table,
                ("month", *keys),
                source_sql=f"SELECT {month}, {names}, sum(views) FROM {daily} "
                f"WHERE day >= %s AND day <= %s GROUP BY {month}, {names}",
                source_params=[day_param(month_start(start)), day_param(last_day)],
                missing_sql=f"SELECT 1 FROM {daily} WHERE {daily}.day >= {table}.month "
                f"AND {daily}.day < {next_month_of(f'{table}.month')} AND {daily}.day <= %s AND "
                + " AND ".join(f"{daily}.{key} = {table}.{key}" for key in keys),
                missing_params=[day_param(last_day)],
                range_sql=f"{table}.month >= %s AND {table}.month <= %s",
                range_params=[day_param(month_start(start)), day_param(last_month)],
            )
        if postgres():
            # Each presence row of the range's years: its days outside the range as they were,
            # its days inside from the stage; a row left with no day goes.
            masks = year_masks(start, end)
            years = ", ".join(["(%s, %s::bit(366))"] * len(masks))
            keys = ("year", "country_id", "blog_id")
            _replace_rows(
                cursor,
                PRESENCE,
                keys,
                source_sql=f"SELECT year, country_id, blog_id, days FROM ("
                f"SELECT year, country_id, blog_id, "
                f"coalesce(kept.days & ~masks.mask, %s::bit(366)) "
                f"| coalesce(staged.days, %s::bit(366)) AS days "
                f"FROM ({_PRESENCE_SELECT.format(stage=stage)}) AS staged "
                f"FULL JOIN (SELECT year, country_id, blog_id, days FROM {PRESENCE} "
                f"WHERE year >= %s AND year <= %s) AS kept USING (year, country_id, blog_id) "
                f"JOIN (VALUES {years}) AS masks (year, mask) USING (year)"
                f") AS merged WHERE days <> %s::bit(366)",
                source_params=[
                    NO_DAYS,
                    NO_DAYS,
                    NO_DAYS,
                    start.year,
                    end.year,
                    *(value for year, mask in masks.items() for value in (year, mask)),
                    NO_DAYS,
                ],
                missing_sql="",
                range_sql="year >= %s AND year <= %s",
                range_params=[start.year, end.year],
                value="days",
            )
            cursor.execute(
                f"DELETE FROM {COUNTRY_BLOGS} WHERE year >= %s AND year <= %s",
                [start.year, end.year],
            )
            cursor.execute(
                f"INSERT INTO {COUNTRY_BLOGS} (year, country_id, blogs) "
                f"SELECT year, country_id, count(*) FROM {PRESENCE} "
                f"WHERE year >= %s AND year <= %s GROUP BY year, country_id",
                [start.year, end.year],
            )
        # Cached answers from before the rebuild carry the old version and are never served.
        state.rebuild_version += 1
        state.save(update_fields=["rebuild_version"])
    rebuild_version_publish()
    return views


_VERSION_SQL = f"SELECT rebuild_version FROM {AbsorbState._meta.db_table} WHERE name = %s"


def rebuild_version() -> int:
    """The current rebuild version, read from the database.

    Plain SQL: a cached answer on the embedded default pays for this query, and the ORM's
    compile step costs more than the query itself.
    """
    with connection.cursor() as cursor:
        cursor.execute(_VERSION_SQL, [STATE_NAME])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def rebuild_version_cached() -> bool:
    """Whether the rebuild version is also kept in the cache: only a cache that every process
    shares (Redis) can tell every reader that a rebuild happened."""
    return isinstance(caches["default"], RedisCache)


def rebuild_version_publish() -> None:
    """Put the rebuild version in the cache, once a transaction that bumped it has committed.

    The version is read again from the database: when two rebuilds commit one after the other,
    the first one's publish, if late, still puts the second one's version.

    Readers check it in the same round trip as their cached answer (``api.caching``) and take
    it from the database when the entry is missing; it lives ``REBUILD_VERSION_SECONDS``, so
    that a reader that read the old version just before the commit cannot keep it longer. If
    the cache cannot take it, this waits that long, so that no answer from before the rebuild
    is served once the caller reports the rebuild done.
    """
    if not rebuild_version_cached():
        return
    version = rebuild_version()
    try:
        caches["default"].set(REBUILD_VERSION_KEY, version, timeout=REBUILD_VERSION_SECONDS)
    except Exception:
        logger.warning(
            "could not publish rebuild version %d to the cache; waiting %d s for the old one "
            "to expire",
            version,
            REBUILD_VERSION_SECONDS,
            exc_info=True,
        )
        time.sleep(REBUILD_VERSION_SECONDS + 1)


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
        cleared_at = timezone.now()
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {RAW}")
        state.absorbed_through_id = max(state.absorbed_through_id, int(cursor.fetchone()[0]))
        state.absorbed_through_at = cleared_at
        state.rebuild_version += 1
        state.save()
    rebuild_version_publish()


# --- Rebuild jobs --------------------------------------------------------------------------------

ACTIVE_JOB_STATES = (RebuildJob.State.QUEUED, RebuildJob.State.RUNNING)
# Key of the PostgreSQL advisory lock that makes rebuild requests take turns (any fixed number
# that nothing else in the database uses).
JOBS_LOCK_KEY = 720_190_009


@dataclass(frozen=True)
class RebuildJobRequest:
    """The job that answers a rebuild request: a new one, or the queued or running one of the
    same range (``created`` false)."""

    job: RebuildJob
    created: bool


def _range_text(start_date: date | None, end_date: date | None) -> str:
    return f"{start_date or 'earliest data'}..{end_date or 'latest data'}"


class RebuildJobConflict(ApplicationError):
    """A queued or running job covers part of the requested range, and not exactly that range."""

    def __init__(self, job: RebuildJob) -> None:
        super().__init__(
            f"Rebuild job {job.pk} ({_range_text(job.start_date, job.end_date)}, {job.state}) "
            "overlaps the requested range. Wait until it ends, or request exactly its range "
            "to follow it.",
            status=409,
            code="rebuild_overlaps",
            details=[{"field": None, "reason": f"overlaps rebuild job {job.pk}"}],
        )
        self.job = job


class RebuildJobNotQueued(ApplicationError):
    """The broker did not take a new job's task: the job is failed, no worker will run it."""

    def __init__(self, *, job_id: str, reason: str) -> None:
        super().__init__(
            f"The task broker is unavailable: rebuild job {job_id} could not be queued and is "
            "marked failed. Try again once the broker is back.",
            status=503,
            code="broker_unavailable",
            details=[{"field": None, "reason": reason}],
            headers={"Retry-After": str(BROKER_RETRY_AFTER_SECONDS)},
        )
        self.job_id = job_id


def rebuild_range_errors(*, start_date: date | None, end_date: date | None) -> dict[str, str]:
    """What is wrong with a rebuild range, by field name (empty when nothing is)."""
    errors = {}
    for field, day in (("start_date", start_date), ("end_date", end_date)):
        if day is not None and not REBUILD_FIRST_DAY <= day <= REBUILD_LAST_DAY:
            errors[field] = f"must lie in {REBUILD_FIRST_DAY}..{REBUILD_LAST_DAY}"
    if not errors and start_date and end_date and start_date > end_date:
        errors["start_date"] = "is after end_date"
    return errors


def _jobs_lock() -> None:
    """Make rebuild requests take turns until this transaction ends. SQLite needs nothing: its
    transactions begin IMMEDIATE, holding the database's one write lock."""
    if postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [JOBS_LOCK_KEY])


def _rebuild_job_send(*, job_id: str, expires: datetime) -> None:
    """Send a committed job's task; if the broker cannot take it, fail the job and raise
    ``RebuildJobNotQueued``. Bounded in time by ``PUBLISH_SOCKET_SECONDS`` and
    ``PUBLISH_RETRY_POLICY``."""
    from rollups.tasks import rebuild_job_task

    timeouts = {
        "socket_timeout": PUBLISH_SOCKET_SECONDS,
        "socket_connect_timeout": PUBLISH_SOCKET_SECONDS,
    }
    try:
        with rebuild_job_task.app.connection_for_write(transport_options=timeouts) as broker:
            rebuild_job_task.apply_async(
                (job_id,),
                producer=broker.Producer(auto_declare=False),
                expires=expires,
                # The message carries the limits the worker applies (the sender's): these
                # settings, read now.
                soft_time_limit=settings.REBUILD_SOFT_TIME_LIMIT_SECONDS,
                time_limit=settings.REBUILD_TIME_LIMIT_SECONDS,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
    except Exception as exc:
        # Whatever stopped the send (broker down, refusing, misconfigured), no worker will get
        # this job: say so on the job rather than leave it queued.
        logger.exception("could not send rebuild job %s to the broker", job_id)
        reason = f"{type(exc).__name__}: {exc}"
        RebuildJob.objects.filter(id=job_id, state=RebuildJob.State.QUEUED).update(
            state=RebuildJob.State.FAILED,
            error=f"The task broker could not take this job, so no worker will run it "
            f"({reason}). Start a new one once the broker is back.",
            finished_at=timezone.now(),
        )
        raise RebuildJobNotQueued(job_id=job_id, reason=reason) from exc


def rebuild_job_create(
    *, start_date: date | None, end_date: date | None, requested_by: Any = None
) -> RebuildJobRequest:
    """Queue a rebuild of ``start_date..end_date`` (an open end: the earliest / latest data), or
    find the job already doing it.

    - A queued or running job of exactly this range answers the request (``created`` false).
    - A queued or running job of an overlapping other range: ``RebuildJobConflict`` (409).
    - Otherwise a new job is recorded, and its task is sent once the record is committed (when
      the caller's transaction commits, if there is one). The message expires when the reaper
      fails a job that no worker started (``REBUILD_QUEUE_TIMEOUT_SECONDS``). If the broker does
      not take it, the job is failed with the reason and ``RebuildJobNotQueued`` (503) is raised
      from that commit.

    Requests take turns (an advisory lock on PostgreSQL), so concurrent identical requests make
    one job. A range outside ``REBUILD_FIRST_DAY..REBUILD_LAST_DAY``, or reversed, raises
    ``ApplicationError`` (400) naming the field.
    """
    errors = rebuild_range_errors(start_date=start_date, end_date=end_date)
    if errors:
        raise ApplicationError(
            "Invalid rebuild range.",
            details=[{"field": field, "reason": reason} for field, reason in errors.items()],
        )
    first = start_date or REBUILD_FIRST_DAY
    last = end_date or REBUILD_LAST_DAY
    with transaction.atomic():
        _jobs_lock()
        # A job whose worker died must not block this request until the next periodic reap.
        rebuild_jobs_reap()
        overlapping = (
            RebuildJob.objects.filter(state__in=ACTIVE_JOB_STATES)
            .filter(Q(start_date__isnull=True) | Q(start_date__lte=last))
            .filter(Q(end_date__isnull=True) | Q(end_date__gte=first))
            .order_by("created_at")
        )
        for active in overlapping:
            if (active.start_date, active.end_date) == (start_date, end_date):
                return RebuildJobRequest(job=active, created=False)
        conflict = overlapping.first()
        if conflict is not None:
            raise RebuildJobConflict(conflict)
        job = RebuildJob.objects.create(
            start_date=start_date,
            end_date=end_date,
            requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
        )
        job_id = str(job.id)
        expires = job.created_at + timedelta(seconds=settings.REBUILD_QUEUE_TIMEOUT_SECONDS)
        transaction.on_commit(lambda: _rebuild_job_send(job_id=job_id, expires=expires))
    return RebuildJobRequest(job=job, created=True)


def rebuild_job_run(*, job_id: str) -> RebuildJob:
    """Run a queued rebuild job, recording its state, progress, timings and any error.

    A job that is not queued (already run, reaped, or a redelivered message) is left as it is.
    A job stopped by the task's soft time limit ends failed, saying so.
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
        with _job_heartbeat(job_id=job_id):
            result = rollups_rebuild(
                start_date=job.start_date, end_date=job.end_date, progress=report
            )
    except Exception as exc:
        logger.exception("rebuild job %s failed", job_id)
        if isinstance(exc, SoftTimeLimitExceeded):
            error = (
                "The rebuild ran past its time limit (REBUILD_SOFT_TIME_LIMIT_SECONDS) and was "
                "stopped. The summaries are swapped in one transaction, so none was half-changed. "
                "Rebuild shorter ranges, or raise the limit."
            )
        else:
            error = f"{type(exc).__name__}: {exc}"
        RebuildJob.objects.filter(id=job_id).update(
            state=RebuildJob.State.FAILED, error=error, finished_at=timezone.now()
        )
    else:
        RebuildJob.objects.filter(id=job_id).update(
            state=RebuildJob.State.DONE,
            progress=1.0,
            views_rebuilt=result.views,
            finished_at=timezone.now(),
        )
    return RebuildJob.objects.get(id=job_id)


@contextmanager
def _job_heartbeat(*, job_id: str) -> Iterator[None]:
    """Keep a running job's heartbeat fresh while the block runs, whatever it is doing.

    Progress reports beat too, but a step (the absorb before the rebuild, the final swap) can
    outlast ``REBUILD_STALE_SECONDS`` on a big range. A thread of its own, with its own database
    connection, beats ``HEARTBEATS_PER_STALE`` times per that bound; a beat that fails (say, it
    waits for SQLite's write lock) is logged and the next one tries again. Only a dead or frozen
    worker stops beating, so the reaper can use a short bound.
    """
    stop = threading.Event()
    interval = settings.REBUILD_STALE_SECONDS / HEARTBEATS_PER_STALE

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    RebuildJob.objects.filter(id=job_id, state=RebuildJob.State.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:
                    logger.warning("rebuild job %s: heartbeat failed", job_id, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"rebuild-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        # Not joined: a beat waiting on a lock must not hold up the job's own ending.
        stop.set()


def rebuild_jobs_reap(
    *, stale_after: timedelta | None = None, queue_timeout: timedelta | None = None
) -> int:
    """Fail the jobs that no worker is running; return how many.

    Those are the running jobs whose heartbeat is older than ``stale_after`` (default
    ``REBUILD_STALE_SECONDS``: their worker died or was killed), and the queued ones that no
    worker started within ``queue_timeout`` (default ``REBUILD_QUEUE_TIMEOUT_SECONDS``), when
    their task message expires: a message that still arrives finds the job failed and does
    nothing.
    """
    if stale_after is None:
        stale_after = timedelta(seconds=settings.REBUILD_STALE_SECONDS)
    if queue_timeout is None:
        queue_timeout = timedelta(seconds=settings.REBUILD_QUEUE_TIMEOUT_SECONDS)
    now = timezone.now()
    lost = RebuildJob.objects.filter(
        state=RebuildJob.State.RUNNING, heartbeat_at__lt=now - stale_after
    ).update(
        state=RebuildJob.State.FAILED,
        error="The worker running this job stopped reporting (lost or killed); start a new one.",
        finished_at=now,
    )
    waited = queue_timeout.total_seconds()
    waited_text = f"{waited / 60:g} minutes" if waited >= 120 else f"{waited:g} seconds"
    unclaimed = RebuildJob.objects.filter(
        state=RebuildJob.State.QUEUED, created_at__lt=now - queue_timeout
    ).update(
        state=RebuildJob.State.FAILED,
        error=f"No worker started this job within {waited_text} of its request (no worker "
        "running, or the queue was that far behind); its task has expired. Start a new one.",
        finished_at=now,
    )
    return lost + unclaimed
