"""Absorb: add the raw views committed since the last run to every summary, exactly once.

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

The per-minute levels of the last hour (realtime) are absorbed the same way on a watermark row
of their own (``rollups_absorb_recent``), so that the worker runs the two at once.

A rebuild (``rollups.rebuild``) recomputes a range from raw under the same state lock.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from core.metrics import ABSORB_DURATION, ABSORB_RUNS, ABSORB_VIEWS
from core.sql import (
    SQL,
    block_start_of,
    day_param,
    execute,
    moment_param,
    month_start,
    name,
    names,
    ordinals,
    postgres,
    sql,
)
from rollups.models import AbsorbState, RecentState
from rollups.selectors import rollups_status
from rollups.staging import (
    month_keys,
    recent_state_locked,
    stage_create,
    stage_raw,
    stage_raw_minutes,
    stage_views,
    state_locked,
    summed,
    trailing_sums,
    work_mem_raise,
    year_keys,
    yearly_from_monthly,
)
from rollups.tables import (
    ALL_TIME_COUNTRY_BLOGS,
    BLOG_COUNTRY_LEVEL,
    COUNTRY_BLOGS,
    LAST_DAY_COUNTRY_BLOGS,
    LAST_DAYS,
    LEVELS,
    MONTH_RANGE_COUNTRY_BLOGS,
    MONTH_RANGES_SQL,
    NO_DAYS,
    PRESENCE,
    RAW,
    RECENT_BLOCK_MINUTES,
    RECENT_LEVELS,
    RECENT_WINDOW_MINUTES,
    RECENT_WINDOW_ROLL_MINUTES,
    RECENT_WINDOWS,
    TRAILING_SPANS,
    Level,
    last_days_rows,
    last_days_slot,
    recent_cut,
    recent_window_ends,
    window_ends_from,
)

logger = logging.getLogger(__name__)

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
# How long an absorb waits for in-flight ingest transactions before giving up (it is retried).
SAFE_BOUND_WAIT_SECONDS = 10


@dataclass(frozen=True)
class AbsorbResult:
    """One absorb run: views absorbed, the watermark reached, how long it took."""

    views: int
    absorbed_through_id: int
    duration_ms: int


def upsert_sql(table: str, keys: tuple[str, ...], select: SQL) -> SQL:
    """``INSERT ... SELECT ... ON CONFLICT (keys) DO UPDATE`` adding the selected views."""
    return sql(
        "INSERT INTO {table} ({columns}) {select} "
        "ON CONFLICT ({keys}) DO UPDATE SET views = {table}.views + excluded.views",
        table=name(table),
        columns=names((*keys, "views")),
        select=select,
        keys=names(keys),
    )


def _with_presence(upsert: SQL) -> SQL:
    """PostgreSQL: the (day, blog, country) upsert, chained to the presence bits of the rows it
    inserted, chained to the yearly per-country counts of the presence rows those created, to
    the all-time per-country counts of the (country, blog) pairs that had none before, to the
    per-(year, whole-month range, country) counts of the pairs first seen in a range, to
    the per-(country, last day) counts of the pairs whose last viewed day moved, and to those
    pairs' own last days (``LAST_DAYS``, by blocks of blogs).

    A presence bit is set exactly when its (day, blog, country) row exists, and absorb only
    adds views: a row the upsert updated had its bit already, so only inserted rows need one,
    and only they can move a pair's last day. ``xmax = 0`` marks a row an upsert inserted
    rather than updated. Every part of one statement reads the tables as they were before it
    (PostgreSQL runs data-modifying ``WITH`` parts on one snapshot): a pair is new for all time
    when no year had a presence row for it. A pair's last day before is its slot in
    ``LAST_DAYS`` (one row per block of blogs, joined by hash: deriving it from the presence
    bits, converting 366-bit rows to text and looking into the presence index for pairs new to
    a year, took 0.5 s of 3 s for the 64 k pairs of 1 M new views). Absorbs and rebuilds hold
    the state row, so nothing else writes these tables meanwhile.
    """
    block, slot = last_days_slot("n.blog_id")
    return sql(
        "WITH added AS ({upsert} RETURNING day, blog_id, country_id, xmax = 0 AS inserted), "
        "fresh AS (SELECT extract(year FROM day)::int AS year, country_id, blog_id, "
        "bit_or(set_bit({no_days}::bit(366), extract(doy FROM day)::int - 1, 1)) AS days, "
        "bit_or(1 << (extract(month FROM day)::int - 1))::smallint AS months "
        "FROM added WHERE inserted GROUP BY 1, 2, 3), "
        "present AS (INSERT INTO {presence} (year, country_id, blog_id, days, months_added) "
        "SELECT year, country_id, blog_id, days, months FROM fresh ORDER BY 1, 2, 3 "
        "ON CONFLICT (year, country_id, blog_id) DO UPDATE SET days = {presence}.days | "
        "excluded.days, months_added = excluded.months_added & ~{presence}.months "
        "RETURNING year, country_id, blog_id, months, months_added, xmax = 0 AS inserted), "
        # A pair counts in a whole-month range from the first month of it that it is seen in:
        # the range holds a month it gained and none it had. The pairs are counted per
        # (year, country, months had, months gained), and each distinct (had, gained) is
        # matched with the 78 ranges once (30 k pairs gaining December, 78 ranges each, took
        # 0.56 s ungrouped; 30 k groups matched one by one, 0.3 s).
        "gains AS MATERIALIZED (SELECT had, months_added, ranges.first_month, ranges.last_month "
        "FROM (SELECT DISTINCT months & ~months_added AS had, months_added FROM present "
        "WHERE months_added <> 0) kinds JOIN {ranges} ON (months_added & ranges.mask) <> 0 "
        "AND (had & ranges.mask) = 0), "
        "month_ranges AS (INSERT INTO {month_ranges} "
        "(year, first_month, last_month, country_id, blogs) "
        "SELECT year, gains.first_month, gains.last_month, country_id, sum(pairs) FROM ("
        "SELECT year, country_id, months & ~months_added AS had, months_added, count(*) AS pairs "
        "FROM present WHERE months_added <> 0 GROUP BY 1, 2, 3, 4) sets "
        "JOIN gains USING (had, months_added) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 "
        "ON CONFLICT (year, first_month, last_month, country_id) "
        "DO UPDATE SET blogs = {month_ranges}.blogs + excluded.blogs), "
        "yearly AS (INSERT INTO {country_blogs} (year, country_id, blogs) "
        "SELECT year, country_id, count(*) FROM present WHERE inserted GROUP BY 1, 2 "
        "ON CONFLICT (year, country_id) DO UPDATE SET blogs = {country_blogs}.blogs + "
        "excluded.blogs), "
        "all_time AS (INSERT INTO {all_time} (country_id, blogs) "
        "SELECT country_id, count(*) FROM ("
        "SELECT DISTINCT country_id, blog_id FROM present WHERE inserted) pairs "
        "WHERE NOT EXISTS (SELECT 1 FROM {presence} p "
        "WHERE p.blog_id = pairs.blog_id AND p.country_id = pairs.country_id) GROUP BY 1 "
        "ON CONFLICT (country_id) DO UPDATE SET blogs = {all_time}.blogs + excluded.blogs), "
        # Per pair with new days, its latest one and its last day before: its slot in the
        # pairs' last days (-infinity when it had none).
        "moved AS (SELECT n.country_id, n.blog_id, n.day, "
        "nullif(b.days[{slot}], '-infinity') AS before FROM ("
        "SELECT country_id, blog_id, max(day) AS day FROM added WHERE inserted GROUP BY 1, 2) n "
        "LEFT JOIN {pair_last_days} b ON b.country_id = n.country_id AND b.block = {block}), "
        "last_day_counts AS (INSERT INTO {last_days} (country_id, day, blogs) "
        "SELECT country_id, day, sum(blogs) FROM ("
        "SELECT country_id, day, 1 AS blogs FROM moved WHERE before IS NULL OR before < day "
        "UNION ALL SELECT country_id, before, -1 FROM moved WHERE before < day) moves "
        "GROUP BY 1, 2 ORDER BY 1, 2 "
        "ON CONFLICT (country_id, day) DO UPDATE SET blogs = {last_days}.blogs + excluded.blogs) "
        # The same moves, pair by pair: each block's days with the moved pairs' new last days.
        "INSERT INTO {pair_last_days} (country_id, block, days) {moved_blocks} "
        "ON CONFLICT (country_id, block) DO UPDATE SET days = excluded.days",
        upsert=upsert,
        presence=name(PRESENCE),
        no_days=NO_DAYS,
        country_blogs=name(COUNTRY_BLOGS),
        all_time=name(ALL_TIME_COUNTRY_BLOGS),
        block=SQL(block),
        slot=SQL(slot),
        last_days=name(LAST_DAY_COUNTRY_BLOGS),
        pair_last_days=name(LAST_DAYS),
        moved_blocks=last_days_rows(
            SQL("SELECT country_id, blog_id, day FROM moved WHERE before IS NULL OR before < day"),
            over=LAST_DAYS,
        ),
        month_ranges=name(MONTH_RANGE_COUNTRY_BLOGS),
        ranges=MONTH_RANGES_SQL,
    )


def _stage_apply(
    cursor: CursorWrapper, stage: str, *, open_from: date | None, first_day: date | None
) -> None:
    """Add the staged (day, blog, country) counts, the earliest of ``first_day``, to every
    summary.

    The monthly and yearly rows of a folded level get only the staged days before
    ``open_from``, its trailing rows only those of their windows (see ``_monthly_fold``): when
    every staged day is on or after ``open_from`` (today's views, the usual run) those upserts
    are skipped, each a scan of the stage for nothing.

    Each summary's increments go in key order: the upsert then walks the key index (and the
    heap, which absorb fills in roughly the same order) front to back instead of at random (in
    one measurement with 4 GB of shared buffers, the upserts of 1 M late views took 14.5 s
    instead of 22.1 s; at the server's default 128 MB, sorting made no difference).
    """
    for level in LEVELS:
        upsert = upsert_sql(
            level.daily, level.daily_keys, summed(stage, names(level.daily_keys), SQL("true"))
        )
        execute(
            cursor, _with_presence(upsert) if level is BLOG_COUNTRY_LEVEL and postgres() else upsert
        )
    for level in LEVELS:
        if level.monthly is None:
            continue
        where = SQL("true")
        if level.monthly_folded and open_from is not None:
            if first_day is None or first_day >= open_from:
                continue
            where = sql("day < {open_from}", open_from=day_param(open_from))
        keys = month_keys(level)
        execute(cursor, upsert_sql(level.monthly, level.monthly_keys, summed(stage, keys, where)))
        if level.yearly is not None:
            execute(
                cursor,
                upsert_sql(level.yearly, level.yearly_keys, summed(stage, year_keys(level), where)),
            )
        if level.trailing is not None and open_from is not None:
            for span in TRAILING_SPANS:
                first = open_from - timedelta(days=span - 1)
                execute(
                    cursor,
                    upsert_sql(
                        level.trailing,
                        level.trailing_keys,
                        trailing_sums(level, stage, span, first, open_from),
                    ),
                )


def _days_outside(days: tuple[date, date], other: tuple[date, date]) -> list[tuple[date, date]]:
    """The pieces of the days ``[first, after)`` that are not in ``other`` (0 to 2 of them)."""
    (first, after), (other_first, other_after) = days, other
    pieces = [(first, min(after, other_first)), (max(first, other_after), after)]
    return [(low, high) for low, high in pieces if low < high]


def trailing_fold(cursor: CursorWrapper, level: Level, old: date | None, new: date) -> None:
    """Move ``level``'s trailing rows from the open day ``old`` to ``new`` (state locked).

    The rows of each span count the ``span - 1`` days before the open day: the days that
    left that window are subtracted and the ones that entered it added, from the daily rows
    (exact under the lock). Usually one day each, two small upserts; with no open day before,
    the rows are computed afresh. (The benchmark moves them back a day the same way.)
    """
    assert level.trailing is not None, "only a level with trailing rows has them to fold"
    if old is None:
        execute(cursor, sql("DELETE FROM {trailing}", trailing=name(level.trailing)))
    for span in TRAILING_SPANS:
        window = timedelta(days=span - 1)
        now = (new - window, new)
        if old is None:
            moves = [(*now, 1)]
        else:
            before = (old - window, old)
            moves = [(*days, -1) for days in _days_outside(before, now)]
            moves += [(*days, 1) for days in _days_outside(now, before)]
        for first, after, sign in moves:
            execute(
                cursor,
                upsert_sql(
                    level.trailing,
                    level.trailing_keys,
                    trailing_sums(level, level.daily, span, first, after, sign=sign),
                ),
            )
    execute(cursor, sql("DELETE FROM {trailing} WHERE views = 0", trailing=name(level.trailing)))


def _monthly_fold(cursor: CursorWrapper, state: AbsorbState) -> None:
    """Fold the days that have ended into the monthly rows of the folded levels (state locked).

    Their monthly tables (today the (blog, country) one) count exactly the views of the days
    before ``state.monthly_open_from``; the later ones (today, and any day ahead that a clock
    faster than ours sent) are only in the daily rows, where readers take them from. New views
    are nearly all of today, so an absorb skips one upsert of a row per (blog, country) group, a
    quarter of its time. The first run of a day (by this process's clock) adds the ended days'
    daily rows, which under the state lock count exactly the absorbed views, to their months'
    rows: one day's rows, a small upsert. The open day only moves forward. With no open day yet
    (a new state row, or rows from before this scheme, which count every day), the current
    month's rows and later ones are recomputed from the days before today instead, and the
    current year's yearly rows and later ones from those monthly rows. The trailing rows move
    their windows to end before the new open day (``trailing_fold``). The same first run
    deletes the (country, last day) counts that absorb has emptied.
    """
    today = timezone.now().astimezone(UTC).date()
    open_from = state.monthly_open_from
    if open_from is not None and open_from >= today:
        return
    work_mem_raise(cursor)
    if postgres():
        # The (country, last day) rows that absorb emptied by moving their pairs on.
        execute(
            cursor,
            sql("DELETE FROM {last_days} WHERE blogs = 0", last_days=name(LAST_DAY_COUNTRY_BLOGS)),
        )
    folded = [
        (level, level.monthly)
        for level in LEVELS
        if level.monthly_folded and level.monthly is not None
    ]
    recount_years = open_from is None
    if open_from is None:
        open_from = month_start(today)
        for _, monthly in folded:
            execute(
                cursor,
                sql(
                    "DELETE FROM {monthly} WHERE month >= {open_from}",
                    monthly=name(monthly),
                    open_from=day_param(open_from),
                ),
            )
    for level, monthly in folded:
        ended = sql(
            "day >= {low} AND day < {today}", low=day_param(open_from), today=day_param(today)
        )
        execute(
            cursor,
            upsert_sql(monthly, level.monthly_keys, summed(level.daily, month_keys(level), ended)),
        )
        if level.yearly is None:
            continue
        if not recount_years:
            execute(
                cursor,
                upsert_sql(
                    level.yearly, level.yearly_keys, summed(level.daily, year_keys(level), ended)
                ),
            )
            continue
        # They counted every day so far: this year's from its monthly rows, now exact.
        this_year = date(today.year, 1, 1)
        execute(
            cursor,
            sql(
                "DELETE FROM {yearly} WHERE year >= {this_year}",
                yearly=name(level.yearly),
                this_year=day_param(this_year),
            ),
        )
        execute(
            cursor,
            upsert_sql(level.yearly, level.yearly_keys, yearly_from_monthly(level, this_year)),
        )
    for level in LEVELS:
        if level.trailing is not None:
            trailing_fold(cursor, level, state.monthly_open_from, today)
    state.monthly_open_from = today


# --- The per-minute rows of the last hour (realtime) -------------------------------------------


def recent_stage_apply(cursor: CursorWrapper, stage: str) -> None:
    """Add the staged (minute, blog, country) counts to every per-minute level, and to the
    5-minute blocks of the levels that have them (in key order, as ``_stage_apply``)."""
    for level in RECENT_LEVELS:
        blocks = [(level.minute_table, SQL("minute"))]
        if level.block_table is not None:
            blocks.append((level.block_table, block_start_of(SQL("minute"), RECENT_BLOCK_MINUTES)))
        for table, minute in blocks:
            keys = SQL(", ").join([minute, *(name(column) for column in level.columns)])
            select = sql(
                "SELECT {keys}, sum(views) FROM {stage} GROUP BY {ordinals} ORDER BY {ordinals}",
                keys=keys,
                stage=name(stage),
                ordinals=ordinals(len(level.keys)),
            )
            execute(cursor, upsert_sql(table, level.keys, select))


def _recent_window(
    cursor: CursorWrapper, state: RecentState, *, high: int
) -> tuple[datetime | None, int]:
    """Keep the per-minute levels (their state locked): they count exactly the views up to
    their watermark viewed at or after ``state.recent_from``, which follows the clock
    ``RECENT_KEEP`` behind (on a 5-minute boundary); the rows before it go.

    Returns the instant from which the views ``(watermark, high]`` go into the per-minute rows,
    or ``None`` when they are in already: a state without ``recent_from`` yet (the first run,
    or after migration 0012) counts here, from raw, every view of the kept hour up to ``high``;
    and the views it counted so.
    """
    cut = recent_cut(timezone.now())
    kept: datetime | None = state.recent_from
    if kept is None:
        stage_raw_minutes(
            cursor,
            "absorb_minute_stage",
            sql("id <= {high} AND viewed_at >= {cut}", high=high, cut=moment_param(cut)),
        )
        counted = _recent_stage_absorb(cursor, "absorb_minute_stage")
        state.recent_from = cut
        # The window rows, whatever they held, are summed again from these.
        state.recent_window_through_id = None
        return None, counted
    if cut > kept:
        for level in RECENT_LEVELS:
            for table in level.tables:
                execute(
                    cursor,
                    sql(
                        "DELETE FROM {table} WHERE minute < {cut}",
                        table=name(table),
                        cut=moment_param(cut),
                    ),
                )
        state.recent_from = cut
    return state.recent_from, 0


def _recent_stage_absorb(cursor: CursorWrapper, stage: str) -> int:
    """Add the staged per-minute counts to the per-minute levels, empty the stage, and return
    the views it held."""
    cursor.execute(f"SELECT coalesce(sum(views), 0) FROM {stage}")
    views = int(cursor.fetchone()[0])
    recent_stage_apply(cursor, stage)
    cursor.execute(f"DELETE FROM {stage}")
    return views


def _window_ends_held(state: RecentState) -> tuple[datetime, ...]:
    """The ends of the windows whose rows ``state`` says are there (none before a refresh)."""
    if state.recent_window_end is None:
        return ()
    return window_ends_from(state.recent_window_end)


def _window_minutes(end: datetime) -> tuple[datetime, datetime]:
    """The first minute of the realtime window ending at ``end``, and ``end``."""
    return end - timedelta(minutes=RECENT_WINDOW_MINUTES), end


def recent_windows_add(cursor: CursorWrapper, state: RecentState, stage: str, *, high: int) -> None:
    """Add the staged per-minute counts of the views ``(watermark, high]`` (going into the
    per-minute rows in the same transaction) to the window rows, where they hold at the
    watermark: each window's rows get the staged minutes inside it. Then they hold at
    ``high``; where they did not hold, they still do not (the next refresh sums them)."""
    if state.recent_window_through_id != state.absorbed_through_id:
        return
    for window in RECENT_WINDOWS:
        columns = names(window.columns)
        for end in _window_ends_held(state):
            low, after = _window_minutes(end)
            execute(
                cursor,
                upsert_sql(
                    window.table,
                    window.keys,
                    sql(
                        "SELECT {end}, {columns}, sum(views) FROM {stage} "
                        "WHERE minute >= {low} AND minute < {after} GROUP BY {columns}",
                        end=moment_param(end),
                        columns=columns,
                        stage=name(stage),
                        low=moment_param(low),
                        after=moment_param(after),
                    ),
                ),
            )
    state.recent_window_through_id = high


def recent_windows_refresh(cursor: CursorWrapper, state: RecentState, now: datetime) -> None:
    """Bring the window rows (their state locked) to the realtime windows of ``now``'s minute
    and of the next one (``recent_window_ends``), as of the per-minute rows' watermark; unless
    they hold those windows at this watermark already. Without per-minute rows there is
    nothing to sum.

    Rows that hold at the watermark (``recent_windows_add`` kept them there) are rolled: a
    later window's rows are the last held window's, plus the minutes that entered it, minus
    those that left it, read from the per-minute rows (two minutes' rows a minute, whatever
    the window's views); the windows no longer wanted go. Else, or when the new windows are
    more than ``RECENT_WINDOW_ROLL_MINUTES`` later, every window is summed again from the
    per-minute rows of its 30 minutes (the 5-minute blocks inside it where the level has
    them). The caller saves ``state``.
    """
    ends = recent_window_ends(now)
    held = _window_ends_held(state)
    holds = state.recent_window_through_id == state.absorbed_through_id and bool(held)
    if state.recent_from is None or (holds and held[0] == ends[0]):
        return
    if holds and held[0] < ends[0] <= held[0] + timedelta(minutes=RECENT_WINDOW_ROLL_MINUTES):
        _recent_windows_roll(cursor, held[-1], ends)
    else:
        _recent_windows_sum(cursor, ends)
    if postgres():
        # The new windows' ends are values the column's statistics have never seen: planned
        # as one row, an author's countries were read through the country index over every
        # pair of the window (20,000 rows, 31 ms, where its 311 blogs' 3,110 pairs by the
        # primary key take 1), until tending's next ANALYZE, up to a minute later. ANALYZE
        # samples this transaction's own new rows, and its statistics commit with them.
        for window in RECENT_WINDOWS:
            execute(cursor, sql("ANALYZE {table} (window_end)", table=name(window.table)))
    state.recent_window_end = ends[0]
    state.recent_window_through_id = state.absorbed_through_id


def _recent_windows_roll(
    cursor: CursorWrapper, base: datetime, ends: tuple[datetime, datetime]
) -> None:
    """Write the rows of the windows ending at ``ends`` that are later than ``base`` (by at
    most a window) from the rows of the window ending at ``base``: the per-minute rows of
    ``[base, end)`` added, those of the minutes the window left subtracted (keys left with no
    views get no row); then drop the rows of the windows before ``ends``."""
    base_start, _ = _window_minutes(base)
    for window in RECENT_WINDOWS:
        columns = names(window.columns)
        minute_table = name(window.source.minute_table)
        for end in (end for end in ends if end > base):
            start, _ = _window_minutes(end)
            execute(
                cursor,
                sql(
                    "INSERT INTO {table} (window_end, {columns}, views) "
                    "SELECT {end}, {columns}, sum(views) FROM ("
                    "SELECT {columns}, views FROM {table} WHERE window_end = {base} "
                    "UNION ALL SELECT {columns}, views FROM {minutes} "
                    "WHERE minute >= {base} AND minute < {end} "
                    "UNION ALL SELECT {columns}, -views FROM {minutes} "
                    "WHERE minute >= {base_start} AND minute < {start}) r "
                    "GROUP BY {columns} HAVING sum(views) > 0",
                    table=name(window.table),
                    columns=columns,
                    end=moment_param(end),
                    base=moment_param(base),
                    minutes=minute_table,
                    base_start=moment_param(base_start),
                    start=moment_param(start),
                ),
            )
        execute(
            cursor,
            sql(
                "DELETE FROM {table} WHERE window_end < {first}",
                table=name(window.table),
                first=moment_param(ends[0]),
            ),
        )


def _recent_windows_sum(cursor: CursorWrapper, ends: tuple[datetime, datetime]) -> None:
    """Replace every window row by the sums of the per-minute rows over the windows ending at
    ``ends``."""
    for window in RECENT_WINDOWS:
        execute(cursor, sql("DELETE FROM {table}", table=name(window.table)))
        columns = names(window.columns)
        for end in ends:
            rows = SQL(" UNION ALL ").join(
                sql(
                    "SELECT {columns}, views FROM {table} "
                    "WHERE minute >= {low} AND minute < {high}",
                    columns=columns,
                    table=name(table),
                    low=moment_param(low),
                    high=moment_param(high),
                )
                for table, low, high in window.source.spans(*_window_minutes(end))
            )
            execute(
                cursor,
                sql(
                    "INSERT INTO {table} (window_end, {columns}, views) "
                    "SELECT {end}, {columns}, sum(views) FROM ({rows}) r GROUP BY {columns}",
                    table=name(window.table),
                    columns=columns,
                    end=moment_param(end),
                    rows=rows,
                ),
            )


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


def _chunk_high(cursor: CursorWrapper, *, low: int, upper: int, step: int) -> int:
    """The last id of the chunk after ``low``: ``step`` ids from the first raw id above it (gaps
    in the ids, from rolled-back writes or wiped views, skipped in one step), at most
    ``upper``."""
    execute(cursor, sql("SELECT min(id) FROM {raw} WHERE id > {low}", raw=name(RAW), low=low))
    following = cursor.fetchone()[0]
    return upper if following is None else min(upper, following - 1 + step)


def rollups_absorb_pending(
    *,
    chunk_ids: int = ABSORB_CHUNK_IDS,
    catch_up_views: int = CATCH_UP_VIEWS,
    trail_seconds: float = 0.0,
    recent: bool = True,
) -> AbsorbResult:
    """Absorb every raw view committed before this call into the summaries, exactly once; then,
    with ``recent``, into the per-minute levels (``rollups_absorb_recent``, which the worker
    runs as a task of its own instead, beside this one). Returns the summaries' run.

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
    groups = 0
    first_step = True
    trailed = False
    for _ in range(CATCH_UP_PASSES):
        bound_at = timezone.now()
        upper = _safe_upper_bound()
        pass_views = 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                state = state_locked()
                _monthly_fold(cursor, state)
                low = state.absorbed_through_id
                step = min(chunk_ids, ABSORB_FIRST_STEP_IDS) if first_step else chunk_ids
                first_step = False
                high = _chunk_high(cursor, low=low, upper=upper, step=step)
                if high > low:
                    work_mem_raise(cursor)
                    stage_create(cursor, "absorb_stage")
                    stage_raw(
                        cursor,
                        "absorb_stage",
                        sql("id > {low} AND id <= {high}", low=low, high=high),
                    )
                    staged = stage_views(cursor, "absorb_stage")
                    pass_views += staged.views
                    groups += staged.groups
                    _stage_apply(
                        cursor,
                        "absorb_stage",
                        open_from=state.monthly_open_from,
                        first_day=staged.first_day,
                    )
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
    seconds = time.perf_counter() - started
    ABSORB_RUNS.inc()
    ABSORB_VIEWS.inc(absorbed)
    ABSORB_DURATION.observe(seconds)
    lag = rollups_status().lag_seconds
    # One line per run, with its figures as fields (JSON logs): views, (day, blog, country)
    # groups, duration and the lag left when it ended.
    logger.info(
        "absorbed %d views in %d groups through id %d in %d ms; lag %.3f s",
        absorbed,
        groups,
        max(high, low),
        seconds * 1000,
        lag,
        extra={
            "views": absorbed,
            "groups": groups,
            "absorbed_through_id": max(high, low),
            "duration_ms": int(seconds * 1000),
            "lag_seconds": lag,
        },
    )
    if recent:
        rollups_absorb_recent(chunk_ids=chunk_ids)
    return AbsorbResult(
        views=absorbed,
        absorbed_through_id=max(high, low),
        duration_ms=int(seconds * 1000),
    )


def rollups_absorb_recent(*, chunk_ids: int = ABSORB_CHUNK_IDS) -> AbsorbResult:
    """Absorb every raw view committed before this call into the per-minute levels of the last
    hour (realtime), exactly once, under their own watermark (``RecentState``).

    The same algorithm as the summaries' (a safe bound, then ``(W, U]`` and the watermark in
    one transaction, by chunks of ids), on another row: it runs concurrently with the
    summaries' absorb (the worker's two processes run one each), and neither waits for the
    other. Only views viewed at or after ``recent_from`` count, so each chunk reads the raw
    partitions of the last hour only. Returns the views that went into the per-minute rows.
    """
    started = time.perf_counter()
    absorbed = 0
    upper = _safe_upper_bound()
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            state = recent_state_locked()
            low = state.absorbed_through_id
            # A first run counts the last hour up to the bound in one read of its partitions.
            high = (
                upper
                if state.recent_from is None
                else _chunk_high(cursor, low=low, upper=upper, step=chunk_ids)
            )
            kept, counted = _recent_window(cursor, state, high=max(low, high))
            absorbed += counted
            if high > low and kept is not None:
                work_mem_raise(cursor)
                stage_raw_minutes(
                    cursor,
                    "absorb_minute_stage",
                    sql(
                        "id > {low} AND id <= {high} AND viewed_at >= {kept}",
                        low=low,
                        high=high,
                        kept=moment_param(kept),
                    ),
                )
                recent_windows_add(cursor, state, "absorb_minute_stage", high=high)
                absorbed += _recent_stage_absorb(cursor, "absorb_minute_stage")
            state.absorbed_through_id = max(low, high)
            if high >= upper:
                recent_windows_refresh(cursor, state, timezone.now())
            state.last_run_at = timezone.now()
            state.last_run_duration_ms = int((time.perf_counter() - started) * 1000)
            state.last_run_views = absorbed
            state.save()
        if high >= upper:
            break
    seconds = time.perf_counter() - started
    # Beat runs this every few seconds: a run that found nothing says so at DEBUG only.
    logger.log(
        logging.INFO if absorbed else logging.DEBUG,
        "absorbed %d views into the per-minute rows through id %d in %d ms",
        absorbed,
        state.absorbed_through_id,
        seconds * 1000,
        extra={
            "views": absorbed,
            "absorbed_through_id": state.absorbed_through_id,
            "duration_ms": int(seconds * 1000),
        },
    )
    return AbsorbResult(
        views=absorbed,
        absorbed_through_id=state.absorbed_through_id,
        duration_ms=int(seconds * 1000),
    )
