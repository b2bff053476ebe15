"""Rebuild: recompute the summaries of a date range from raw, and publish the new rebuild
version.

It works without blocking ingest or absorb: it aggregates
the views ``<= W0`` (W0 = W when it starts) chunk by chunk into a staging table, then, in one
transaction holding the state row, adds the views absorbed meanwhile (``(W0, W1]``) and makes
the range's summary rows equal to the fresh ones (rewriting only rows that differ). Readers
see the old rows or the new ones, never a mix; absorb waits for that transaction. (W is the
absorb watermark, see ``rollups.absorb``.)
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from core.dates import FIRST_DAY, LAST_DAY
from core.exceptions import ApplicationError
from core.sql import (
    SQL,
    all_of,
    day_param,
    day_start_param,
    execute,
    fetch_one,
    moment_param,
    month_start,
    name,
    names,
    next_month,
    next_month_of,
    next_year_of,
    postgres,
    sql,
)
from rollups.absorb import recent_stage_apply, recent_windows_refresh, rollups_absorb_pending
from rollups.models import AbsorbState
from rollups.retention import RawHorizon, raw_horizon
from rollups.selectors import (
    REBUILD_VERSION_KEY,
    REBUILD_VERSION_SECONDS,
    rebuild_version,
    rebuild_version_cached,
)
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
    yearly_from_monthly,
)
from rollups.tables import (
    ALL_TIME_COUNTRY_BLOGS,
    BLOG_COUNTRY_LEVEL,
    COUNTRY_BLOGS,
    DAY_LEVEL,
    LAST_DAY_COUNTRY_BLOGS,
    LAST_DAYS,
    LAST_PRESENT_DAY,
    LEVELS,
    MONTH_RANGE_COUNTRY_BLOGS,
    MONTH_RANGES_SQL,
    NO_DAYS,
    PRESENCE,
    RAW,
    RECENT_LEVELS,
    STATE_NAME,
    SUMMARY_TABLES,
    TRAILING_SPANS,
    last_days_rows,
    year_masks,
)

logger = logging.getLogger(__name__)

# A rebuild aggregates the raw views step by step (one progress update each): by id ranges of
# settings.REBUILD_CHUNK_IDS (sequential reads) when its range holds at least REBUILD_SCAN_SHARE
# of all views, else by days through the viewed_at index. Ids are not in day order (late views),
# so a range of days spans the whole heap, and reading it day by day would read most pages many
# times.
REBUILD_CHUNK_DAYS = 31
REBUILD_SCAN_SHARE = 0.2
# The days a rebuild may cover: the one range of core.dates (API.md section 10). An open end stops
# at them too, so that a view loaded behind the API with a date outside them cannot make the day
# arithmetic overflow.
REBUILD_FIRST_DAY = FIRST_DAY
REBUILD_LAST_DAY = LAST_DAY


class RebuildBeforeHorizon(ApplicationError):
    """A rebuild reaching before the raw-view retention horizon: the raw views it would count
    from are gone, and the rebuild would replace the summaries with partial sums."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "The rebuild range reaches before the raw-view retention horizon: "
            f"start_date {reason}.",
            details=[{"field": "start_date", "reason": reason}],
        )


def _before_horizon(start_date: date | None, horizon: RawHorizon) -> str | None:
    """Why a rebuild starting on ``start_date`` (``None``: open) may not run, or ``None``."""
    if start_date is None:
        return (
            f"must be given, on or after {horizon.day}: {horizon.reason}, and an open start "
            "reaches back to the earliest summaries"
        )
    if start_date < horizon.day:
        return (
            f"is before {horizon.day}: {horizon.reason}, so the days before it cannot be "
            "rebuilt (their summaries stay as they are)"
        )
    return None


@dataclass(frozen=True)
class RebuildResult:
    """One rebuild: the range recomputed and the raw views it counted."""

    start_date: date | None
    end_date: date | None
    views: int
    duration_ms: int


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
        cursor.execute(f"SELECT min(day), max(day) FROM {BLOG_COUNTRY_LEVEL.daily}")
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
    horizon = raw_horizon()
    refused = None if horizon is None else _before_horizon(start_date, horizon)
    if refused is not None:
        raise RebuildBeforeHorizon(refused)
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
        stage_create(cursor, stage)
        if not postgres():
            # The swap looks staged keys up one by one on SQLite (PostgreSQL hashes them).
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {stage}_key ON {stage} (day, blog_id, country_id)"
            )
        try:
            for done, chunk in enumerate(chunks, start=1):
                with transaction.atomic():
                    work_mem_raise(cursor)
                    stage_raw(cursor, stage, chunk)
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


def _views_between(start: date, end: date) -> SQL:
    """Raw views whose UTC day is in ``start..end``."""
    return sql(
        "viewed_at >= {low} AND viewed_at < {high}",
        low=day_start_param(start),
        high=day_start_param(end + timedelta(days=1)),
    )


def _rebuild_chunks(start: date, end: date, watermark: int) -> list[SQL]:
    """The steps of a rebuild's raw scan: a condition on raw each, together covering the views
    of ``start..end`` with ``id <= watermark``."""
    counted = sql("id <= {watermark}", watermark=watermark)
    # The day totals are exact through the watermark: they tell the range's share of views.
    in_range_views, all_views = (
        int(value)
        for value in fetch_one(
            sql(
                "SELECT coalesce(sum(CASE WHEN day >= {start} AND day <= {end} THEN views END), "
                "0), coalesce(sum(views), 0) FROM {days}",
                start=day_param(start),
                end=day_param(end),
                days=name(DAY_LEVEL.daily),
            )
        )
    )
    if all_views and in_range_views >= REBUILD_SCAN_SHARE * all_views:
        first_id = int(fetch_one(sql("SELECT coalesce(min(id), 1) FROM {raw}", raw=name(RAW)))[0])
        in_range = all_of([_views_between(start, end), counted])
        step = settings.REBUILD_CHUNK_IDS
        return [
            all_of(
                [
                    in_range,
                    sql("id > {low} AND id <= {high}", low=low, high=min(low + step, watermark)),
                ]
            )
            for low in range(first_id - 1, watermark, step)
        ]
    chunks = []
    chunk_start = start
    while chunk_start <= end:
        chunk_end = min(chunk_start + timedelta(days=REBUILD_CHUNK_DAYS - 1), end)
        chunks.append(all_of([_views_between(chunk_start, chunk_end), counted]))
        chunk_start = chunk_end + timedelta(days=1)
    return chunks


def _matching(keys: tuple[str, ...], left: str, right: str) -> SQL:
    """``left.key = right.key AND ...`` for every key."""
    return all_of(
        sql("{a} = {b}", a=name(f"{left}.{key}"), b=name(f"{right}.{key}")) for key in keys
    )


def _replace_rows(
    cursor: CursorWrapper,
    table: str,
    keys: tuple[str, ...],
    *,
    source: SQL,
    in_range: SQL,
    missing: SQL | None,
    value: str = "views",
) -> None:
    """Make ``table``'s rows in a range equal to ``source``'s, writing only what differs.

    ``source`` selects the keys and the value; ``in_range`` is the condition on ``table`` that
    bounds the range. Rewriting every row instead would cost a full copy of the range in dead
    rows and index entries; a rebuild usually changes few rows.

    On PostgreSQL one statement full-joins the source to the range's rows and updates, inserts
    and deletes only the keys whose value differs: comparing reads, where an ``INSERT ... ON
    CONFLICT DO UPDATE ... WHERE`` would lock (write) every existing row it compares. Elsewhere
    an upsert writes the changed and new rows, and a delete drops the range's rows for which
    ``missing`` (a query correlated to ``table``'s row) finds no source row.

    New rows are inserted in key order: the hash join yields them in no order, and millions of
    inserts at random places in the key indexes (a rebuild into empty summaries, e.g. after a
    bulk load) read and dirty index pages far beyond ``shared_buffers``; in key order they
    append.
    """
    pieces = {"table": name(table), "keys": names(keys), "value": name(value), "source": source}
    if postgres():
        execute(
            cursor,
            sql(
                "WITH fresh ({keys}, fresh_value) AS ({source}), "
                "old AS (SELECT {keys}, {value} AS old_value FROM {table} WHERE {in_range}), "
                "diff AS MATERIALIZED (SELECT {keys}, fresh_value, old_value FROM fresh "
                "FULL JOIN old USING ({keys}) WHERE fresh_value IS DISTINCT FROM old_value), "
                "updated AS (UPDATE {table} t SET {value} = d.fresh_value FROM diff d "
                "WHERE {match} AND d.fresh_value IS NOT NULL AND d.old_value IS NOT NULL), "
                "deleted AS (DELETE FROM {table} t USING diff d "
                "WHERE {match} AND d.fresh_value IS NULL) "
                "INSERT INTO {table} ({keys}, {value}) SELECT {keys}, fresh_value FROM diff "
                "WHERE old_value IS NULL ORDER BY {keys}",
                **pieces,
                in_range=in_range,
                match=_matching(keys, "t", "d"),
            ),
        )
        return
    assert missing is not None, "SQLite needs the query that finds a row missing from the source"
    execute(
        cursor,
        sql(
            "INSERT INTO {table} ({keys}, {value}) {source} ON CONFLICT ({keys}) "
            "DO UPDATE SET {value} = excluded.{value} WHERE {table}.{value} <> excluded.{value}",
            **pieces,
        ),
    )
    execute(
        cursor,
        sql(
            "DELETE FROM {table} WHERE {in_range} AND NOT EXISTS ({missing})",
            table=name(table),
            in_range=in_range,
            missing=missing,
        ),
    )


def _presence_source(stage: str, start: date, end: date) -> SQL:
    """The presence rows of the range's years as they must be: each row's days outside the
    range as they were, its days inside from the stage; a row left with no day goes."""
    masks = SQL(", ").join(
        sql("({year}, {mask}::bit(366))", year=year, mask=mask)
        for year, mask in year_masks(start, end).items()
    )
    staged = sql(
        "SELECT extract(year FROM day)::int AS year, country_id, blog_id, "
        "bit_or(set_bit({no_days}::bit(366), extract(doy FROM day)::int - 1, 1)) AS days "
        "FROM {stage} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        no_days=NO_DAYS,
        stage=name(stage),
    )
    return sql(
        "SELECT year, country_id, blog_id, days FROM ("
        "SELECT year, country_id, blog_id, "
        "coalesce(kept.days & ~masks.mask, {no_days}::bit(366)) "
        "| coalesce(staged.days, {no_days}::bit(366)) AS days "
        "FROM ({staged}) AS staged "
        "FULL JOIN (SELECT year, country_id, blog_id, days FROM {presence} "
        "WHERE year >= {first_year} AND year <= {last_year}) AS kept "
        "USING (year, country_id, blog_id) "
        "JOIN (VALUES {masks}) AS masks (year, mask) USING (year)"
        ") AS merged WHERE days <> {no_days}::bit(366)",
        no_days=NO_DAYS,
        staged=staged,
        presence=name(PRESENCE),
        first_year=start.year,
        last_year=end.year,
        masks=masks,
    )


# Each month's bit in a presence row's ``months``, as (bit, month) rows.
_LOWEST_BITS = SQL(", ".join(f"({1 << (month - 1)}, {month})" for month in range(1, 13)))


def _month_range_counts(years: SQL) -> SQL:
    """(year, first_month, last_month, country_id, blogs) of every whole-month range of
    ``years``, counted from the presence rows' generated ``months``.

    A pair has a view in ``first..last`` when the first month it has a view in from ``first``
    on is at most ``last``: the pairs are counted per (year, country, first, that month), 12
    rows per distinct month set at most, and each range sums its ``first``'s rows up to its
    ``last``. Testing each of the 78 ranges against each set instead made 4.3 M rows to group
    for 2026 at 10 M views (6.4 s; 0.8 s so).
    """
    return sql(
        "WITH sets AS (SELECT year, country_id, months::int AS months, count(*) AS pairs "
        "FROM {presence} WHERE {years} GROUP BY 1, 2, 3), "
        "firsts AS (SELECT s.year, s.country_id, starts.first_month, "
        "bits.month + starts.first_month - 1 AS month, sum(s.pairs) AS pairs "
        "FROM sets s CROSS JOIN generate_series(1, 12) AS starts (first_month) "
        "JOIN (VALUES {lowest_bits}) AS bits (bit, month) "
        "ON bits.bit = (s.months >> (starts.first_month - 1)) "
        "& -(s.months >> (starts.first_month - 1)) GROUP BY 1, 2, 3, 4) "
        "SELECT f.year, ranges.first_month, ranges.last_month, f.country_id, sum(f.pairs)::int "
        "FROM firsts f JOIN {ranges} ON ranges.first_month = f.first_month "
        "AND f.month <= ranges.last_month GROUP BY 1, 2, 3, 4",
        presence=name(PRESENCE),
        years=years,
        lowest_bits=_LOWEST_BITS,
        ranges=MONTH_RANGES_SQL,
    )


def _rebuild_swap(
    cursor: CursorWrapper, stage: str, *, start: date, end: date, watermark: int
) -> int:
    """Make the range's summary rows equal to the staged counts, in one transaction."""
    with transaction.atomic():
        state = state_locked()
        if state.raw_retained_from is not None and start < state.raw_retained_from:
            # The retention dropped raw views of the range while the stage was built.
            raise RebuildBeforeHorizon(
                f"is before {state.raw_retained_from}: the raw views before it were dropped by "
                "the raw-view retention while this rebuild ran; nothing was changed"
            )
        work_mem_raise(cursor)
        # Views absorbed while the stage was built are in the old rows; add them to the new.
        if state.absorbed_through_id > watermark:
            stage_raw(
                cursor,
                stage,
                all_of(
                    [
                        _views_between(start, end),
                        sql(
                            "id > {low} AND id <= {high}",
                            low=watermark,
                            high=state.absorbed_through_id,
                        ),
                    ]
                ),
            )
        views = stage_views(cursor, stage).views
        for level in LEVELS:
            table, keys = level.daily, level.daily_keys
            _replace_rows(
                cursor,
                table,
                keys,
                source=sql(
                    "SELECT {keys}, sum(views) FROM {stage} GROUP BY {keys}",
                    keys=names(keys),
                    stage=name(stage),
                ),
                in_range=sql(
                    "{day} >= {start} AND {day} <= {end}",
                    day=name(f"{table}.day"),
                    start=day_param(start),
                    end=day_param(end),
                ),
                missing=sql(
                    "SELECT 1 FROM {stage} WHERE {match}",
                    stage=name(stage),
                    match=_matching(keys, stage, table),
                ),
            )
        # Whole months from the (now exact) daily rows: a range may cover part of a month.
        # A folded level's monthly rows count the days before the open day (absorb._monthly_fold).
        for level in LEVELS:
            if level.monthly is None:
                continue
            table, daily = level.monthly, level.daily
            last_day = next_month(end) - timedelta(days=1)
            open_from = state.monthly_open_from
            if level.monthly_folded and open_from is not None:
                last_day = min(last_day, open_from - timedelta(days=1))
            last_month = month_start(last_day)
            if last_month < month_start(start):
                continue
            month = name(f"{table}.month")
            _replace_rows(
                cursor,
                table,
                level.monthly_keys,
                source=summed(
                    daily,
                    month_keys(level),
                    sql(
                        "day >= {first} AND day <= {last}",
                        first=day_param(month_start(start)),
                        last=day_param(last_day),
                    ),
                    ordered=False,
                ),
                in_range=sql(
                    "{month} >= {first} AND {month} <= {last}",
                    month=month,
                    first=day_param(month_start(start)),
                    last=day_param(last_month),
                ),
                missing=sql(
                    "SELECT 1 FROM {daily} WHERE {day} >= {month} AND {day} < {next_month} "
                    "AND {day} <= {last} AND {match}",
                    daily=name(daily),
                    day=name(f"{daily}.day"),
                    month=month,
                    next_month=next_month_of(month),
                    last=day_param(last_day),
                    match=_matching(level.columns, daily, table),
                ),
            )
        # Whole years from the (now exact) monthly rows, which count the same days.
        for level in LEVELS:
            if level.yearly is None or level.monthly is None:
                continue
            table, monthly = level.yearly, level.monthly
            first, after = date(start.year, 1, 1), date(end.year + 1, 1, 1)
            year = name(f"{table}.year")
            _replace_rows(
                cursor,
                table,
                level.yearly_keys,
                source=yearly_from_monthly(level, first, after, ordered=False),
                in_range=sql(
                    "{year} >= {first} AND {year} < {after}",
                    year=year,
                    first=day_param(first),
                    after=day_param(after),
                ),
                missing=sql(
                    "SELECT 1 FROM {monthly} WHERE {month} >= {year} AND {month} < {next_year} "
                    "AND {match}",
                    monthly=name(monthly),
                    month=name(f"{monthly}.month"),
                    year=year,
                    next_year=next_year_of(year),
                    match=_matching(level.columns, monthly, table),
                ),
            )
        # The trailing rows from the daily rows of their windows, if the range reaches one.
        open_from = state.monthly_open_from
        for level in LEVELS:
            if level.trailing is None or open_from is None:
                continue
            for span in TRAILING_SPANS:
                first = open_from - timedelta(days=span - 1)
                if end < first or start >= open_from:
                    continue
                _replace_rows(
                    cursor,
                    level.trailing,
                    level.trailing_keys,
                    source=trailing_sums(level, level.daily, span, first, open_from, ordered=False),
                    in_range=sql(
                        "{span} = {value}", span=name(f"{level.trailing}.span"), value=span
                    ),
                    missing=sql(
                        "SELECT 1 FROM {daily} WHERE {day} >= {first} AND {day} < {open_from} "
                        "AND {match}",
                        daily=name(level.daily),
                        day=name(f"{level.daily}.day"),
                        first=day_param(first),
                        open_from=day_param(open_from),
                        match=_matching(level.columns, level.daily, level.trailing),
                    ),
                )
        _recent_rebuild(cursor, start=start, end=end)
        if postgres():
            years = sql("year >= {first} AND year <= {last}", first=start.year, last=end.year)
            _replace_rows(
                cursor,
                PRESENCE,
                ("year", "country_id", "blog_id"),
                source=_presence_source(stage, start, end),
                in_range=years,
                missing=None,
                value="days",
            )
            execute(
                cursor,
                sql("DELETE FROM {counts} WHERE {years}", counts=name(COUNTRY_BLOGS), years=years),
            )
            execute(
                cursor,
                sql(
                    "INSERT INTO {counts} (year, country_id, blogs) "
                    "SELECT year, country_id, count(*) FROM {presence} "
                    "WHERE {years} GROUP BY year, country_id",
                    counts=name(COUNTRY_BLOGS),
                    presence=name(PRESENCE),
                    years=years,
                ),
            )
            _replace_rows(
                cursor,
                MONTH_RANGE_COUNTRY_BLOGS,
                ("year", "first_month", "last_month", "country_id"),
                source=_month_range_counts(years),
                in_range=years,
                missing=None,
                value="blogs",
            )
            # A pair may have gained or lost its only year, or its last day: recount every
            # country's pairs (a pass over the presence rows each, 0.2 s and 1.2 s at 10 M
            # views; only the counts that differ are written).
            _replace_rows(
                cursor,
                ALL_TIME_COUNTRY_BLOGS,
                ("country_id",),
                source=sql(
                    "SELECT country_id, count(DISTINCT blog_id) FROM {presence} "
                    "GROUP BY country_id",
                    presence=name(PRESENCE),
                ),
                in_range=SQL("true"),
                missing=None,
                value="blogs",
            )
            # Each pair's last day (its latest presence row's last bit), in its block of blogs;
            # then the per-(country, last day) counts from those blocks (one pass over the
            # presence rows, not one per table: a one-day rebuild at 10 M views 4.4 -> 3.7 s).
            _replace_rows(
                cursor,
                LAST_DAYS,
                ("country_id", "block"),
                source=last_days_rows(
                    sql(
                        "SELECT DISTINCT ON (p.country_id, p.blog_id) p.country_id, p.blog_id, "
                        "{last_present_day} AS day FROM {presence} p "
                        "ORDER BY p.country_id, p.blog_id, p.year DESC",
                        last_present_day=SQL(LAST_PRESENT_DAY),
                        presence=name(PRESENCE),
                    ),
                    over=None,
                ),
                in_range=SQL("true"),
                missing=None,
                value="days",
            )
            _replace_rows(
                cursor,
                LAST_DAY_COUNTRY_BLOGS,
                ("country_id", "day"),
                source=sql(
                    "SELECT country_id, day, count(*) FROM {last_days}, unnest(days) day "
                    "WHERE day > '-infinity' GROUP BY 1, 2",
                    last_days=name(LAST_DAYS),
                ),
                in_range=SQL("true"),
                missing=None,
                value="blogs",
            )
        # Cached answers from before the rebuild carry the old version and are never served.
        state.rebuild_version += 1
        state.save(update_fields=["rebuild_version"])
    rebuild_version_publish()
    return views


def _recent_rebuild(cursor: CursorWrapper, *, start: date, end: date) -> None:
    """Recount the per-minute rows of the range's minutes that are still kept (at or after
    ``recent_from``, at most ``RECENT_KEEP``) from raw, in the swap's transaction, under their
    own state's lock (taken after the summaries'): the views up to their watermark viewed in
    those minutes. Their rows are few, so they are deleted and counted again rather than
    compared."""
    state = recent_state_locked()
    if state.recent_from is None:
        return
    low = max(state.recent_from, datetime(start.year, start.month, start.day, tzinfo=UTC))
    after = end + timedelta(days=1)
    high = datetime(after.year, after.month, after.day, tzinfo=UTC)
    if low >= high:
        return
    in_range = sql(
        "minute >= {low} AND minute < {high}", low=moment_param(low), high=moment_param(high)
    )
    for level in RECENT_LEVELS:
        for table in level.tables:
            execute(
                cursor,
                sql("DELETE FROM {table} WHERE {in_range}", table=name(table), in_range=in_range),
            )
    stage_raw_minutes(
        cursor,
        "rebuild_recent_stage",
        sql(
            "viewed_at >= {low} AND viewed_at < {high} AND id <= {watermark}",
            low=moment_param(low),
            high=moment_param(high),
            watermark=state.absorbed_through_id,
        ),
    )
    recent_stage_apply(cursor, "rebuild_recent_stage")
    cursor.execute("DELETE FROM rebuild_recent_stage")
    # The window rows sum the per-minute rows just recounted: sum them again.
    state.recent_window_through_id = None
    recent_windows_refresh(cursor, state, timezone.now())
    state.save(update_fields=["recent_window_end", "recent_window_through_id"])


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


def summaries_clear() -> None:
    """Empty every summary and move the watermark past every raw view (use after wiping raw)."""
    with transaction.atomic(), connection.cursor() as cursor:
        state = state_locked()
        for table in SUMMARY_TABLES:
            cursor.execute(f"DELETE FROM {table}")
        cleared_at = timezone.now()
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {RAW}")
        top = int(cursor.fetchone()[0])
        state.absorbed_through_id = max(state.absorbed_through_id, top)
        state.absorbed_through_at = cleared_at
        # No summary of a month whose raw views were dropped is left to protect.
        state.raw_retained_from = None
        state.rebuild_version += 1
        state.save()
        recent = recent_state_locked()
        recent.absorbed_through_id = max(recent.absorbed_through_id, top)
        recent.recent_window_through_id = None
        recent.save()
    rebuild_version_publish()


def rebuild_range_errors(*, start_date: date | None, end_date: date | None) -> dict[str, str]:
    """What is wrong with a rebuild range, by field name (empty when nothing is): a day outside
    the service's range, a reversed range, or a start before the raw-view retention horizon
    (``rollups.retention``)."""
    errors = {}
    for field, day in (("start_date", start_date), ("end_date", end_date)):
        if day is not None and not REBUILD_FIRST_DAY <= day <= REBUILD_LAST_DAY:
            errors[field] = f"must lie in {REBUILD_FIRST_DAY}..{REBUILD_LAST_DAY}"
    if not errors and start_date and end_date and start_date > end_date:
        errors["start_date"] = "is after end_date"
    if not errors:
        horizon = raw_horizon()
        refused = None if horizon is None else _before_horizon(start_date, horizon)
        if refused is not None:
            errors["start_date"] = refused
    return errors
