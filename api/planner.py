"""The query planner shared by every analytics endpoint.

A question (a ``Spec`` plus the dimensions the endpoint groups by) is answered from a virtual
fact table ``(day, blog_id, country_id, views)`` restricted to the filters. The planner builds it
as ``UNION ALL`` of:

- the smallest summary *level* of the registry (``rollups.tables.level_for``) holding the needed
  columns and filter columns:
  ``(day, country)`` when neither blogs nor authors matter, ``(day|month, blog)`` when countries
  do not, else ``(day|month, blog, country)``;
- for the blog levels, monthly rows for the whole months inside the range and daily rows for the
  edge days (monthly rows are skipped when the caller needs days, e.g. weekly buckets);
- the *tail*: raw views not absorbed yet (``id > watermark``), grouped the same way.

All of one answer's queries run in one snapshot (``read_snapshot``) that also reads the
watermark, so summaries and tail never overlap or leave a gap while a rollup run commits. Each of
them gets at most ``ANALYTICS_STATEMENT_TIMEOUT_MS``; one that takes longer is stopped and the
answer is a 503 ``query_timeout``, so a costly question cannot hold a web worker.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from rest_framework import status

from api.spec import Spec
from core.exceptions import ApplicationError
from core.models import Blog
from core.sql import day_of, day_param, day_start_param, month_start, next_month, postgres
from rollups.models import AbsorbState
from rollups.tables import (
    BLOG_COUNTRY_LEVEL,
    BLOG_LEVEL,
    COUNTRY_BLOGS,
    NO_DAYS,
    PRESENCE,
    RAW,
    STATE_NAME,
    Level,
    level_for,
    year_masks,
)

BLOG = Blog._meta.db_table
USER = get_user_model()._meta.db_table
READ_WORK_MEM = "32MB"
# PostgreSQL's SQLSTATE for a statement cancelled (here: by statement_timeout).
QUERY_CANCELED = "57014"
# SQLite calls the progress handler every this many virtual-machine instructions: often enough
# to stop within a fraction of a millisecond, rarely enough to cost nothing measurable.
PROGRESS_INSTRUCTIONS = 10_000

Param = int | str | date | datetime


@dataclass(frozen=True)
class Snapshot:
    """The state one answer is computed at: everything committed before ``as_of``."""

    as_of: datetime
    watermark: int
    rebuild_version: int
    # The monthly (blog, country) rows count the days before this one (None: every day).
    monthly_open_from: date | None = None


@contextmanager
def read_snapshot() -> Iterator[Snapshot]:
    """Run the block's queries in one consistent snapshot; yield what it was taken at.

    PostgreSQL: a REPEATABLE READ, READ ONLY transaction. SQLite: a deferred transaction, which
    in WAL mode reads one snapshot without taking the write lock. Either way each query gets at
    most ``ANALYTICS_STATEMENT_TIMEOUT_MS`` (else ``ApplicationError`` 503 ``query_timeout``),
    and the limit ends with the block: the connection outlives the request (``CONN_MAX_AGE``)
    and also serves writes. Inside an outer transaction (tests), the block simply joins it,
    under the outer transaction's settings.
    """
    as_of = timezone.now()
    timeout_ms = settings.ANALYTICS_STATEMENT_TIMEOUT_MS
    if connection.in_atomic_block:
        yield _snapshot_read(as_of)
    elif postgres():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # JIT compiling costs more than these queries run (measured: +130 ms on a 25 ms
                # query); distinct counts sort in memory rather than spilling to disk. SET LOCAL
                # ends with this transaction, committed or rolled back.
                cursor.execute(
                    f"SET LOCAL jit = off; SET LOCAL work_mem = '{READ_WORK_MEM}'; "
                    f"SET LOCAL statement_timeout = {int(timeout_ms)}"
                )
                yield _snapshot_read(as_of)
        except OperationalError as error:
            if getattr(error.__cause__, "pgcode", None) == QUERY_CANCELED:
                raise _timed_out(timeout_ms) from error
            raise
    else:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("BEGIN DEFERRED")
            try:
                with _sqlite_statement_timeout(timeout_ms):
                    yield _snapshot_read(as_of)
            finally:
                cursor.execute("COMMIT")


def _timed_out(timeout_ms: int) -> ApplicationError:
    # 503, not 500 (nothing is broken) nor 504 (no gateway is involved): the service cannot
    # answer this question now; it may once the load is lower or the answer is cached.
    return ApplicationError(
        f"The analytics query took longer than {timeout_ms:,} ms and was stopped. Try again "
        "later, or ask a narrower question (a shorter range, fewer countries or one author).",
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        code="query_timeout",
        details=[{"field": None, "reason": f"statement timeout {timeout_ms} ms"}],
    )


@contextmanager
def _sqlite_statement_timeout(timeout_ms: int) -> Iterator[None]:
    """Interrupt any query of the block that runs longer than ``timeout_ms``.

    SQLite has no statement timeout: a progress handler aborts the running statement once its
    deadline, reset as each statement starts, has passed. Both are removed on the way out.
    """
    deadline = time.monotonic()
    fired = False

    def progress() -> int:
        nonlocal fired
        fired = fired or time.monotonic() > deadline
        return int(fired)

    def per_statement(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        nonlocal deadline
        deadline = time.monotonic() + timeout_ms / 1000
        return execute(sql, params, many, context)

    raw = connection.connection
    raw.set_progress_handler(progress, PROGRESS_INSTRUCTIONS)
    try:
        with connection.execute_wrapper(per_statement):
            yield
    except OperationalError as error:
        if fired:
            raise _timed_out(timeout_ms) from error
        raise
    finally:
        raw.set_progress_handler(None, PROGRESS_INSTRUCTIONS)


def _snapshot_read(as_of: datetime) -> Snapshot:
    row = (
        AbsorbState.objects.filter(name=STATE_NAME)
        .values_list("absorbed_through_id", "rebuild_version", "monthly_open_from")
        .first()
    )
    watermark, version, open_from = row if row else (0, 0, None)
    return Snapshot(
        as_of=as_of, watermark=watermark, rebuild_version=version, monthly_open_from=open_from
    )


# --- Values the database returned ------------------------------------------------------------


def as_date(value: object) -> date:
    """A day as the database returned it (``date``, or ISO text on SQLite)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# --- Ranges --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaySplit:
    """A day range split into whole months (for monthly rows) and edge day ranges."""

    months: tuple[date | None, date | None] | None
    edges: tuple[tuple[date | None, date | None], ...]


def split_range(start: date | None, end: date | None) -> DaySplit:
    """Whole months inside ``start..end`` (``None`` = open) and the days around them."""
    first = start if start is None or start.day == 1 else next_month(start)
    # The month after the last whole month: end's month if end is its last day.
    after = (
        None
        if end is None
        else (next_month(end) if end + timedelta(days=1) == next_month(end) else month_start(end))
    )
    if first is not None and after is not None and first >= after:
        return DaySplit(months=None, edges=((start, end),))
    edges: list[tuple[date | None, date | None]] = []
    if start is not None and first is not None and start < first:
        edges.append((start, first - timedelta(days=1)))
    if end is not None and after is not None and after <= end:
        edges.append((after, end))
    last_month = None if after is None else month_start(after - timedelta(days=1))
    return DaySplit(months=(first, last_month), edges=tuple(edges))


# --- The virtual fact table ----------------------------------------------------------------------


class Facts:
    """Builds the ``(day, [blog_id], [country_id], views)`` subquery for one question."""

    def __init__(self, spec: Spec, snapshot: Snapshot, *, author_id: int | None) -> None:
        self.spec = spec
        self.snapshot = snapshot
        self.author_id = author_id

    def level(self, *, blogs: bool, countries: bool) -> Level:
        """The smallest level holding the needed dimensions and the filtered columns."""
        needed = set()
        if blogs or self.author_id is not None:
            needed.add("blog_id")
        if countries or self.spec.countries_filtered:
            needed.add("country_id")
        return level_for(needed)

    def _filters(
        self, level_columns: tuple[str, ...], *, only: tuple[str, ...] | None = None
    ) -> tuple[list[str], list[Param]]:
        """WHERE conditions for the spec's filters on a table with ``level_columns``.

        ``only`` replaces the spec's country filters by "country in ``only``".
        """
        where: list[str] = []
        params: list[Param] = []

        def country_in(codes: tuple[str, ...], negate: bool = False) -> None:
            where.append(
                f"country_id {'NOT IN' if negate else 'IN'} ({', '.join(['%s'] * len(codes))})"
            )
            params.extend(codes)

        if "country_id" in level_columns:
            if only is not None:
                country_in(only)
            else:
                if self.spec.country_codes is not None:
                    country_in(self.spec.country_codes)
                if self.spec.exclude_country_codes is not None:
                    country_in(self.spec.exclude_country_codes, negate=True)
        if self.author_id is not None:
            where.append(f"blog_id IN (SELECT id FROM {BLOG} WHERE author_id = %s)")
            params.append(self.author_id)
        return where, params

    def sql(
        self,
        *,
        blogs: bool = False,
        countries: bool = False,
        monthly: bool = True,
        start: date | None = None,
        end: date | None = None,
    ) -> tuple[str, list[Param]]:
        """The fact subquery over ``start..end`` (default: the spec's range).

        A question about blogs (not countries) with a country filter reads only the rows of the
        countries it keeps, or, when it only excludes some, the blog level *minus* the excluded
        countries' rows (negative ``views``): both touch few rows through the country-first
        index. Callers keep groups whose ``sum(views)`` is positive.
        """
        if start is None and end is None:
            start, end = self.spec.first_day, self.spec.last_day
        level = self.level(blogs=blogs, countries=countries)
        columns = level.columns
        parts: list[str] = []
        params: list[Param] = []
        if level is BLOG_COUNTRY_LEVEL and not countries and self.spec.countries_filtered:
            columns = ("blog_id",)
            include = self.spec.country_codes
            exclude = set(self.spec.exclude_country_codes or ())
            if include is not None:
                kept = tuple(code for code in include if code not in exclude)
                if kept:
                    self._summary_parts(
                        level, columns, start, end, monthly, parts, params, only=kept
                    )
            else:
                self._summary_parts(BLOG_LEVEL, columns, start, end, monthly, parts, params)
                self._summary_parts(
                    level,
                    columns,
                    start,
                    end,
                    monthly,
                    parts,
                    params,
                    only=tuple(sorted(exclude)),
                    sign="-",
                )
        else:
            self._summary_parts(level, columns, start, end, monthly, parts, params)

        tail_sql, tail_params = self._tail(columns=columns, start=start, end=end)
        parts.append(tail_sql)
        params.extend(tail_params)
        return " UNION ALL ".join(parts), params

    def _tail(
        self, *, columns: tuple[str, ...], start: date | None, end: date | None
    ) -> tuple[str, list[Param]]:
        """The raw views the summaries do not hold yet (``id > watermark``), grouped by day."""
        filters, filter_params = self._filters(("blog_id", "country_id"))
        where = ["id > %s"]
        params: list[Param] = [self.snapshot.watermark]
        if start is not None:
            where.append("viewed_at >= %s")
            params.append(day_start_param(start))
        if end is not None:
            where.append("viewed_at < %s")
            params.append(day_start_param(end + timedelta(days=1)))
        day = day_of("viewed_at")
        return (
            f"SELECT {', '.join([f'{day} AS day', *columns, 'count(*) AS views'])} FROM {RAW} "
            f"WHERE {' AND '.join([*where, *filters])} GROUP BY {', '.join([day, *columns])}",
            [*params, *filter_params],
        )

    def _summary_parts(
        self,
        level: Level,
        columns: tuple[str, ...],
        start: date | None,
        end: date | None,
        monthly: bool,
        parts: list[str],
        params: list[Param],
        *,
        only: tuple[str, ...] | None = None,
        sign: str = "",
    ) -> None:
        """Append the SELECTs of ``level``'s rows over ``start..end`` (monthly where it can)."""
        filters, filter_params = self._filters(level.columns, only=only)

        def add(table: str, day_column: str, low: date | None, high: date | None) -> None:
            where: list[str] = []
            bounds: list[Param] = []
            if low is not None:
                where.append(f"{day_column} >= %s")
                bounds.append(day_param(low))
            if high is not None:
                where.append(f"{day_column} <= %s")
                bounds.append(day_param(high))
            where.extend(filters)
            condition = f" WHERE {' AND '.join(where)}" if where else ""
            selected = ", ".join([f"{day_column} AS day", *columns, f"{sign}views AS views"])
            parts.append(f"SELECT {selected} FROM {table}{condition}")
            params.extend([*bounds, *filter_params])

        split = split_range(start, end) if monthly and level.monthly else None
        if split is not None and split.months is not None and level.monthly is not None:
            first_month, last_month = split.months
            open_from = self.snapshot.monthly_open_from
            if (
                level.monthly_folded
                and open_from is not None
                and (last_month is None or next_month(last_month) > open_from)
            ):
                # The monthly rows count the days before the open day; the later days of the
                # whole months come from the daily rows.
                add(
                    level.daily,
                    "day",
                    open_from if first_month is None else max(first_month, open_from),
                    None if last_month is None else next_month(last_month) - timedelta(days=1),
                )
                last_month = month_start(open_from)
            if first_month is None or last_month is None or first_month <= last_month:
                add(level.monthly, "month", first_month, last_month)
            for low, high in split.edges:
                add(level.daily, "day", low, high)
        else:
            add(level.daily, "day", start, end)

    def _presence_range(self, prefix: str = "") -> tuple[str, list[Param]]:
        """The condition on yearly presence rows for the spec's days (``prefix``: an alias)."""
        start, end = self.spec.first_day, self.spec.last_day
        # Years the range covers partly test their days' bits; whole years need no test.
        partial: dict[int, tuple[date, date]] = {}
        if start is not None and start != date(start.year, 1, 1):
            year_end = date(start.year, 12, 31)
            partial[start.year] = (start, min(end, year_end) if end else year_end)
        if end is not None and end != date(end.year, 12, 31):
            year_start = date(end.year, 1, 1)
            partial[end.year] = (max(start, year_start) if start else year_start, end)
        full_low = None if start is None else start.year + (start.year in partial)
        full_high = None if end is None else end.year - (end.year in partial)
        ranges: list[str] = []
        params: list[Param] = []
        if full_low is None or full_high is None or full_low <= full_high:
            bounds = []
            if full_low is not None:
                bounds.append(f"{prefix}year >= %s")
                params.append(full_low)
            if full_high is not None:
                bounds.append(f"{prefix}year <= %s")
                params.append(full_high)
            ranges.append(" AND ".join(bounds) or "true")
        for year, (low, high) in partial.items():
            ranges.append(f"({prefix}year = %s AND {prefix}days & %s::bit(366) <> %s::bit(366))")
            params.extend([year, year_masks(low, high)[year], NO_DAYS])
        return f"({' OR '.join(ranges)})", params

    def presence_blogs(self) -> tuple[str, list[Param]]:
        """SQL for (country_id, distinct blogs with a matching view in the range), from the
        yearly presence bits (PostgreSQL) plus the tail."""
        start, end = self.spec.first_day, self.spec.last_day
        in_range, range_params = self._presence_range()
        filters, filter_params = self._filters(("blog_id", "country_id"))
        where = " AND ".join([in_range, *filters])
        params = [*range_params, *filter_params]
        tail_sql, tail_params = self._tail(columns=("country_id", "blog_id"), start=start, end=end)
        if start is None or end is None or start.year != end.year:
            return (
                f"SELECT country_id, count(DISTINCT blog_id) FROM ("
                f"SELECT country_id, blog_id FROM {PRESENCE} WHERE {where} "
                f"UNION ALL SELECT country_id, blog_id FROM ({tail_sql}) tail) pairs "
                f"GROUP BY country_id",
                [*params, *tail_params],
            )
        p_range, p_params = self._presence_range(prefix="p.")
        new_in_tail = (
            f"SELECT country_id, count(DISTINCT blog_id) FROM ({tail_sql}) tail "
            f"WHERE NOT EXISTS (SELECT 1 FROM {PRESENCE} p WHERE {p_range} "
            f"AND p.country_id = tail.country_id AND p.blog_id = tail.blog_id) "
            f"GROUP BY country_id"
        )
        if (start, end) == (date(start.year, 1, 1), date(start.year, 12, 31)) and not (
            self.author_id
        ):
            # A whole year without an author: the per-country counts kept with the presence
            # rows, plus the tail's pairs that have no presence row yet.
            country_filters, country_params = self._filters(("country_id",))
            where_year = " AND ".join(["year = %s", *country_filters])
            return (
                f"SELECT country_id, sum(blogs) FROM ("
                f"SELECT country_id, blogs FROM {COUNTRY_BLOGS} WHERE {where_year} "
                f"UNION ALL {new_in_tail}) counts GROUP BY country_id",
                [start.year, *country_params, *tail_params, *p_params],
            )
        # Within one year a (country, blog) has one presence row: count rows, and add the
        # tail's pairs that have none (no DISTINCT over every pair: about 3x faster).
        return (
            f"SELECT country_id, sum(blogs) FROM ("
            f"SELECT country_id, count(*) AS blogs FROM {PRESENCE} WHERE {where} "
            f"GROUP BY country_id UNION ALL {new_in_tail}) counts GROUP BY country_id",
            [*params, *tail_params, *p_params],
        )

    def first_day(self) -> date | None:
        """The earliest day with a matching view (before ``end``), or ``None``."""
        level = self.level(blogs=False, countries=False)
        filters, filter_params = self._filters(level.columns)
        daily_where = " AND ".join(filters) or "true"
        tail_where = " AND ".join(["id > %s", *filters])
        end = self.spec.last_day
        daily_params: list[Param] = list(filter_params)
        tail_params: list[Param] = [self.snapshot.watermark, *filter_params]
        if end is not None:
            daily_where += " AND day <= %s"
            daily_params.append(day_param(end))
            tail_where += " AND viewed_at < %s"
            tail_params.append(day_start_param(end + timedelta(days=1)))
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT min(day) FROM {level.daily} WHERE {daily_where}", daily_params)
            found = [cursor.fetchone()[0]]
            cursor.execute(f"SELECT min(viewed_at) FROM {RAW} WHERE {tail_where}", tail_params)
            found.append(cursor.fetchone()[0])
        days = [as_date(value) for value in found if value is not None]
        return min(days) if days else None
