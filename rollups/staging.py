"""What absorb and rebuild share: a per-connection staging table of (day, blog, country,
views) counts aggregated from raw, the locked watermark row, and room to sort and hash."""

from datetime import date
from typing import NamedTuple

from django.db.backends.utils import CursorWrapper

from core.sql import (
    SQL,
    as_date,
    day_of,
    day_param,
    execute,
    minute_start_of,
    month_of,
    name,
    names,
    postgres,
    sql,
    year_of,
)
from rollups.models import AbsorbState, RecentState
from rollups.tables import RAW, STATE_NAME, Level

# Memory per sort / hash of an absorb or rebuild transaction (PostgreSQL's default is 4 MB).
WORK_MEM = "64MB"


def stage_create(cursor: CursorWrapper, name: str) -> None:
    """An empty staging table of (day, blog, country, views), private to this connection.

    Created once per connection and emptied for each use: creating and dropping a table per
    run would fill PostgreSQL's lock table when many runs share one transaction.
    """
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {name} "
        "(day date, blog_id bigint, country_id varchar(2), views bigint)"
    )
    cursor.execute(f"DELETE FROM {name}")


def stage_raw(cursor: CursorWrapper, stage: str, where: SQL) -> None:
    """Aggregate the raw views matching ``where`` into the staging table."""
    execute(
        cursor,
        sql(
            "INSERT INTO {stage} (day, blog_id, country_id, views) "
            "SELECT {day}, blog_id, country_id, count(*) FROM {raw} WHERE {where} GROUP BY 1, 2, 3",
            stage=name(stage),
            day=day_of(SQL("viewed_at")),
            raw=name(RAW),
            where=where,
        ),
    )


def stage_raw_minutes(cursor: CursorWrapper, stage: str, where: SQL) -> None:
    """Aggregate the raw views matching ``where`` into a per-connection staging table of
    (minute, blog, country, views), emptied first: the per-minute levels' source."""
    minute_type = "timestamptz" if postgres() else "text"
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
        f"(minute {minute_type}, blog_id bigint, country_id varchar(2), views bigint)"
    )
    cursor.execute(f"DELETE FROM {stage}")
    execute(
        cursor,
        sql(
            "INSERT INTO {stage} (minute, blog_id, country_id, views) "
            "SELECT {minute}, blog_id, country_id, count(*) FROM {raw} WHERE {where} "
            "GROUP BY 1, 2, 3",
            stage=name(stage),
            minute=minute_start_of(SQL("viewed_at")),
            raw=name(RAW),
            where=where,
        ),
    )


def month_keys(level: Level) -> SQL:
    """A monthly row's key computed from daily rows: the day's month, then the level's columns."""
    return SQL(", ").join([month_of(SQL("day")), *(name(column) for column in level.columns)])


def year_keys(level: Level, column: str = "day") -> SQL:
    """A yearly row's key computed from daily or monthly rows (their ``column``): its year,
    then the level's columns."""
    return SQL(", ").join([year_of(name(column)), *(name(key) for key in level.columns)])


def summed(source: str, keys: SQL, where: SQL, *, ordered: bool = True) -> SQL:
    """The views of ``source``'s rows that match ``where``, summed per ``keys``; ``ordered``,
    in key order (for upserts, which then walk the key index front to back: see
    ``absorb._stage_apply``)."""
    return sql(
        "SELECT {keys}, sum(views) FROM {source} WHERE {where} GROUP BY {keys}{order}",
        keys=keys,
        source=name(source),
        where=where,
        order=sql(" ORDER BY {keys}", keys=keys) if ordered else SQL(""),
    )


def yearly_from_monthly(
    level: Level, first: date, after: date | None = None, *, ordered: bool = True
) -> SQL:
    """A level's yearly rows from ``first`` (a Jan 1) up to ``after``, summed from its monthly
    rows, which count the same days (absorb and rebuild both recount years so)."""
    assert level.monthly is not None, "yearly rows are kept only beside monthly ones"
    months = sql("month >= {first}", first=day_param(first))
    if after is not None:
        months = sql("{months} AND month < {after}", months=months, after=day_param(after))
    return summed(level.monthly, year_keys(level, "month"), months, ordered=ordered)


def trailing_sums(
    level: Level,
    source: str,
    span: int,
    first: date,
    after: date,
    *,
    sign: int = 1,
    ordered: bool = True,
) -> SQL:
    """``span``'s trailing rows of the days ``first`` up to ``after`` (excluded) of ``source``
    (daily or staged rows), their views times ``sign``."""
    columns = names(level.columns)
    return sql(
        "SELECT {span}, {columns}, {sign} * sum(views) FROM {source} "
        "WHERE day >= {first} AND day < {after} GROUP BY {columns}{order}",
        span=span,
        columns=columns,
        sign=sign,
        source=name(source),
        first=day_param(first),
        after=day_param(after),
        order=sql(" ORDER BY {columns}", columns=columns) if ordered else SQL(""),
    )


class Staged(NamedTuple):
    """What a staging table holds: its views, its (day, blog, country) groups (rows) and its
    first day (``None`` when empty)."""

    views: int
    groups: int
    first_day: date | None


def stage_views(cursor: CursorWrapper, stage: str) -> Staged:
    """What ``stage`` holds (one scan); on PostgreSQL also gives the planner the staging
    table's statistics (autovacuum never analyzes temporary tables, and the upserts' plans
    depend on its size)."""
    if postgres():
        cursor.execute(f"ANALYZE {stage}")
    cursor.execute(f"SELECT coalesce(sum(views), 0), count(*), min(day) FROM {stage}")
    views, groups, first_day = cursor.fetchone()
    return Staged(int(views), int(groups), None if first_day is None else as_date(first_day))


def work_mem_raise(cursor: CursorWrapper) -> None:
    """Room for the GROUP BYs of a big run to hash in memory (PostgreSQL, this transaction)."""
    if postgres():
        cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")


def state_locked() -> AbsorbState:
    AbsorbState.objects.get_or_create(name=STATE_NAME)
    return AbsorbState.objects.select_for_update().get(name=STATE_NAME)


def recent_state_locked() -> RecentState:
    """The per-minute levels' watermark row, locked (taken after ``state_locked``'s where a
    transaction needs both)."""
    RecentState.objects.get_or_create(name=STATE_NAME)
    return RecentState.objects.select_for_update().get(name=STATE_NAME)
