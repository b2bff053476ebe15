"""The query planner shared by every analytics endpoint: it writes every query of an answer.

A question (a ``Spec`` plus the dimensions the endpoint groups by) is answered from a virtual
fact table ``(day, blog_id, country_id, views)`` restricted to the filters. The planner builds it
as ``UNION ALL`` of:

- the smallest summary *level* of the registry (``rollups.tables.level_for``) holding the needed
  columns and filter columns:
  ``(day, country)`` when neither blogs nor authors matter, ``(day|month, blog)`` when countries
  do not, else ``(day|month, blog, country)``;
- for the blog levels, monthly rows for the whole months inside the range and daily rows for the
  edge days, or, for an edge that covers most of its month, that month's rows minus the daily
  rows of its other days (monthly rows are skipped when the caller needs days, e.g. weekly
  buckets);
- the *tail*: raw views not absorbed yet (``id > watermark``), grouped the same way.

Around it, one function per answer shape (``country_groups``, ``author_groups``,
``blog_groups``, ``views_per_day``, ``blogs_created``) writes the whole query, chooses how the
database at hand counts distinct blogs, and keeps the groups whose views are positive; the
selectors (``api.selectors``) only give the answer its form. SQL is built from ``core.sql``
fragments, each carrying its own parameters.

All of one answer's queries run in one snapshot (``read_snapshot``) that also reads the
watermark, so summaries and tail never overlap or leave a gap while a rollup run commits. Each of
them gets at most ``ANALYTICS_STATEMENT_TIMEOUT_MS``; one that takes longer is stopped and the
answer is a 503 ``query_timeout``, so a costly question cannot hold a web worker.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, OperationalError, connections
from django.utils import timezone
from rest_framework import status

from api.spec import Spec
from core.dates import FIRST_DAY
from core.exceptions import ApplicationError
from core.models import Blog, Country
from core.routers import read_alias, read_source
from core.sql import (
    SQL,
    all_of,
    as_date,
    binary_order,
    day_of,
    day_param,
    day_start_param,
    fetch_all,
    fetch_one,
    minute_of,
    minute_start_of,
    moment_param,
    month_start,
    name,
    next_month,
    postgres,
    sql,
    values,
    where_clause,
)
from rollups.selectors import read_position
from rollups.tables import (
    ALL_TIME_COUNTRY_BLOGS,
    BLOG_COUNTRY_LEVEL,
    BLOG_LEVEL,
    COUNTRY_BLOGS,
    COUNTRY_LEVEL,
    DAY_LEVEL,
    LAST_DAY_COUNTRY_BLOGS,
    LAST_DAYS,
    MONTH_RANGE_COUNTRY_BLOGS,
    NO_DAYS,
    PRESENCE,
    RAW,
    RECENT_BLOG,
    RECENT_BLOG_COUNTRY,
    RECENT_COUNTRY,
    RECENT_TOTAL,
    RECENT_WINDOW_BLOG,
    RECENT_WINDOW_BLOG_COUNTRY,
    RECENT_WINDOW_COUNTRY,
    TRAILING_SPANS,
    Level,
    RecentLevel,
    RecentWindow,
    last_days_slot,
    level_for,
    window_ends_from,
    year_masks,
)

BLOG = Blog._meta.db_table
# The tail of one answer read once, grouped by (country, blog) (Facts.shared_tail_cte).
SHARED_TAIL = "shared_tail"
COUNTRY = Country._meta.db_table
USER = get_user_model()._meta.db_table
USERNAME = get_user_model().USERNAME_FIELD
READ_WORK_MEM = "32MB"
# A question that names at most this many countries reads an author's rows through the
# country-first indexes (see ``Facts._names_countries``).
FEW_COUNTRIES = 10
# PostgreSQL's SQLSTATE for a statement cancelled (here: by statement_timeout).
QUERY_CANCELED = "57014"
# SQLite calls the progress handler every this many virtual-machine instructions: often enough
# to stop within a fraction of a millisecond, rarely enough to cost nothing measurable.
PROGRESS_INSTRUCTIONS = 10_000


@dataclass(frozen=True)
class Snapshot:
    """The state one answer is computed at: everything committed before ``as_of``."""

    as_of: datetime
    watermark: int
    rebuild_version: int
    # The monthly (blog, country) rows count the days before this one (None: every day).
    monthly_open_from: date | None = None
    # The per-minute rows count the views up to their own watermark (``RecentState``: absorbed
    # on their own, beside the summaries) viewed from this instant on (None: none).
    recent_watermark: int = 0
    recent_from: datetime | None = None
    # The window rows sum them over the windows ending at this instant and a minute later, as
    # of this per-minute watermark (they hold only while it is ``recent_watermark``).
    recent_window_end: datetime | None = None
    recent_window_through_id: int | None = None
    # The first and the last day of the absorbed views (None: none).
    first_absorbed_day: date | None = None
    last_absorbed_day: date | None = None

    @property
    def today(self) -> date:
        """The UTC day of ``as_of``."""
        return self.as_of.astimezone(UTC).date()

    def recent_window_holds(self, end: datetime) -> bool:
        """Whether the window rows sum the absorbed views of the realtime window ending at
        ``end`` (``rollups.absorb.recent_windows_refresh``)."""
        return (
            self.recent_window_end is not None
            and self.recent_window_through_id == self.recent_watermark
            and end in window_ends_from(self.recent_window_end)
        )


@contextmanager
def read_snapshot() -> Iterator[Snapshot]:
    """Run the block's queries in one consistent snapshot; yield what it was taken at.

    PostgreSQL: a REPEATABLE READ, READ ONLY transaction. SQLite: a deferred transaction, which
    in WAL mode reads one snapshot without taking the write lock. Either way each query gets at
    most ``ANALYTICS_STATEMENT_TIMEOUT_MS`` (else ``ApplicationError`` 503 ``query_timeout``),
    and the limit ends with the block: the connection outlives the request (``CONN_MAX_AGE``)
    and also serves writes. Inside an outer transaction (tests), the block simply joins it,
    under the outer transaction's settings.

    The queries run where ``core.routers.reading_from`` sends them (the primary by default, or
    a read replica); a replica that is behind gives the time its state is exact at as ``as_of``.
    """
    source = read_source()
    as_of = source.as_of or timezone.now()
    connection = connections[source.alias]
    timeout_ms = settings.ANALYTICS_STATEMENT_TIMEOUT_MS
    if connection.in_atomic_block:
        yield _snapshot_read(as_of)
    elif postgres():
        # The transaction is opened by hand, as on SQLite below, so that opening it, setting
        # its limits and reading the state rows take one round trip (Django's atomic block
        # sends BEGIN on its own, then the settings: three round trips before the position).
        # JIT compiling costs more than these queries run (measured: +130 ms on a 25 ms
        # query); distinct counts sort in memory rather than spilling to disk. SET LOCAL ends
        # with this transaction.
        connection.ensure_connection()
        with connection.cursor() as cursor:
            try:
                yield _snapshot_read(
                    as_of,
                    first=(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL jit = off; "
                        f"SET LOCAL work_mem = '{READ_WORK_MEM}'; "
                        f"SET LOCAL statement_timeout = {int(timeout_ms)}; "
                    ),
                )
            except BaseException as error:
                _rollback_quietly(cursor)
                if isinstance(error, OperationalError) and (
                    getattr(error.__cause__, "pgcode", None) == QUERY_CANCELED
                ):
                    raise _timed_out(timeout_ms) from error
                raise
            cursor.execute("COMMIT")
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

    connection = connections[read_source().alias]
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


def _rollback_quietly(cursor: Any) -> None:
    """End a failed read's transaction; a connection that broke is Django's to close."""
    with suppress(DatabaseError):
        cursor.execute("ROLLBACK")


def _snapshot_read(as_of: datetime, *, first: str = "") -> Snapshot:
    position = read_position(first=first)
    return Snapshot(
        as_of=as_of,
        watermark=position.watermark,
        rebuild_version=position.rebuild_version,
        monthly_open_from=position.monthly_open_from,
        recent_watermark=position.recent_watermark,
        recent_from=position.recent_from,
        recent_window_end=position.recent_window_end,
        recent_window_through_id=position.recent_window_through_id,
        first_absorbed_day=position.first_absorbed_day,
        last_absorbed_day=position.last_absorbed_day,
    )


# --- Ranges --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaySplit:
    """A day range split into whole months (for monthly rows) and edge day ranges."""

    months: tuple[date | None, date | None] | None
    edges: tuple[tuple[date, date], ...]


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
        # Both ends are days here (``first`` and ``after`` come from them).
        assert start is not None and end is not None
        return DaySplit(months=None, edges=((start, end),))
    edges: list[tuple[date, date]] = []
    if start is not None and first is not None and start < first:
        edges.append((start, first - timedelta(days=1)))
    if end is not None and after is not None and after <= end:
        edges.append((after, end))
    last_month = None if after is None else month_start(after - timedelta(days=1))
    return DaySplit(months=(first, last_month), edges=tuple(edges))


def _month_pieces(low: date, high: date) -> list[tuple[date, date]]:
    """``low..high`` cut at month boundaries."""
    pieces = []
    while next_month(low) <= high:
        pieces.append((low, next_month(low) - timedelta(days=1)))
        low = next_month(low)
    return [*pieces, (low, high)]


def _months_with(
    months: tuple[date | None, date | None] | None, month: date
) -> tuple[date | None, date | None]:
    """The run of whole months ``months`` (``None``: none) with ``month`` added; ``month`` is
    next to it (an edge's month) or the run is empty or a neighbour edge's month."""
    if months is None:
        return (month, month)
    first, last = months
    if first is not None and month < first:
        return (month, last)
    if last is not None and month > last:
        return (first, month)
    return months


# --- The virtual fact table ----------------------------------------------------------------------


def _partition_bounds(first: date | None, last: date | None) -> list[SQL]:
    """PostgreSQL: conditions for the tail's fence (the views ``id > watermark``) that keep
    only the raw partitions of the months ``first..last``, at plan time.

    Whole months: in every partition kept they hold for every view, so they never make the
    viewed_at index look cheap to the planner. (The range itself there would: on the
    statistics of a partition that grows, its recent days look nearly empty, and the planner
    could read every view of them rather than the tail's.) A range of past months then reads
    no partition with views of now (50,000 pending, Feb-May: the tail's part 8.7 -> 0.1 ms),
    and every plan leaves out the months outside the range.
    """
    if not postgres():
        return []
    bounds = []
    if first is not None:
        bounds.append(sql("viewed_at >= {low}", low=day_start_param(month_start(first))))
    if last is not None:
        bounds.append(sql("viewed_at < {high}", high=day_start_param(next_month(last))))
    return bounds


def _columns(columns: tuple[str, ...], *first: SQL, last: SQL | None = None) -> SQL:
    """A select list: ``first``, the named ``columns``, then ``last``."""
    return SQL(", ").join([*first, *(name(column) for column in columns), *filter(None, [last])])


class Facts:
    """Builds the ``(day, [blog_id], [country_id], views)`` subquery for one question."""

    def __init__(
        self,
        spec: Spec,
        snapshot: Snapshot,
        *,
        author_id: int | None,
        shared_tail: bool = False,
        shown: SQL | None = None,
    ) -> None:
        self.spec = spec
        self.snapshot = snapshot
        self.author_id = author_id
        # Parts over the spec's range read the tail from SHARED_TAIL (``shared_tail_cte``).
        self.shared_tail = shared_tail
        # Besides the spec's filters, only the countries this query selects (a page of them).
        self.shown = shown

    def reading_shared_tail(self, *, shown: SQL | None = None) -> "Facts":
        """These facts with ``shared_tail`` (and ``shown``)."""
        return Facts(
            self.spec, self.snapshot, author_id=self.author_id, shared_tail=True, shown=shown
        )

    def level(self, *, blogs: bool, countries: bool) -> Level:
        """The smallest level holding the needed dimensions and the filtered columns."""
        needed = set()
        if blogs or self.author_id is not None:
            needed.add("blog_id")
        if countries or self.spec.countries_filtered:
            needed.add("country_id")
        return level_for(needed)

    def _filters(
        self,
        level_columns: tuple[str, ...],
        *,
        only: tuple[str, ...] | None = None,
        blog_by_blog: bool = False,
    ) -> list[SQL]:
        """WHERE conditions for the spec's filters on a table with ``level_columns``.

        ``only`` replaces the spec's country filters by "country in ``only``". With
        ``blog_by_blog`` (PostgreSQL), the author's blogs are an array: the planner then walks
        a blog-first key blog by blog, where for an author with many views it would hash the
        blogs and scan every row of the range (the per-minute rows: 26 instead of 77 ms for
        an author with a third of the window's views; 90 days of the daily blog rows of a
        144-blog author: 10 instead of 41 ms).
        """
        where = self._country_filters(level_columns, only=only)
        if self.author_id is not None:
            blogs = sql(
                "SELECT id FROM {blog} WHERE author_id = {author}",
                blog=name(BLOG),
                author=self.author_id,
            )
            if blog_by_blog and postgres():
                where.append(sql("blog_id = ANY(ARRAY({blogs}))", blogs=blogs))
            else:
                where.append(sql("blog_id IN ({blogs})", blogs=blogs))
        return where

    def _names_countries(
        self, level_columns: tuple[str, ...], only: tuple[str, ...] | None = None
    ) -> bool:
        """Whether rows with ``level_columns`` are read for a few named countries only (at most
        ``FEW_COUNTRIES``: not a page of a breakdown's countries)."""
        named = only if only is not None else self.spec.country_codes
        return "country_id" in level_columns and named is not None and len(named) <= FEW_COUNTRIES

    def _country_filters(
        self, level_columns: tuple[str, ...], *, only: tuple[str, ...] | None = None
    ) -> list[SQL]:
        """The country conditions of ``_filters``."""
        where: list[SQL] = []
        if "country_id" in level_columns:
            include = only if only is not None else self.spec.country_codes
            exclude = None if only is not None else self.spec.exclude_country_codes
            if include is not None:
                where.append(sql("country_id IN ({codes})", codes=values(include)))
            if exclude is not None:
                where.append(sql("country_id NOT IN ({codes})", codes=values(exclude)))
            if self.shown is not None:
                where.append(sql("country_id IN ({shown})", shown=self.shown))
        return where

    def sql(
        self,
        *,
        blogs: bool = False,
        countries: bool = False,
        monthly: bool = True,
        start: date | None = None,
        end: date | None = None,
        days: bool = True,
    ) -> SQL:
        """The fact subquery over ``start..end`` (default: the spec's range).

        ``days=False`` is for callers that do not group by day: the tail's rows then carry no
        day (NULL), which spares it the day of each raw view and grouping by it (see ``_tail``).

        A question not about countries (blogs, or a series) with a country filter reads only
        the rows of the countries it keeps, or, when it only excludes some, the level without
        countries (blogs, or days) *minus* the excluded countries' rows (negative ``views``):
        both touch few rows through the country-first indexes. The answer shapes below keep
        only groups whose ``sum(views)`` is positive.
        """
        if start is None and end is None:
            start, end = self.spec.first_day, self.spec.last_day
        level = self.level(blogs=blogs, countries=countries)
        columns = level.columns
        parts: list[SQL] = []
        without_countries = {BLOG_COUNTRY_LEVEL: BLOG_LEVEL, COUNTRY_LEVEL: DAY_LEVEL}
        if level in without_countries and not countries and self.spec.countries_filtered:
            whole = without_countries[level]
            columns = whole.columns
            include = self.spec.country_codes
            exclude = set(self.spec.exclude_country_codes or ())
            if include is not None:
                kept = tuple(code for code in include if code not in exclude)
                if kept:
                    parts += self._summary_parts(
                        level, columns, start, end, monthly, only=kept, undated=not days
                    )
            else:
                parts += self._summary_parts(whole, columns, start, end, monthly, undated=not days)
                parts += self._summary_parts(
                    level,
                    columns,
                    start,
                    end,
                    monthly,
                    only=tuple(sorted(exclude)),
                    negate=True,
                    undated=not days,
                )
        else:
            parts += self._summary_parts(level, columns, start, end, monthly, undated=not days)
        parts.append(self._tail(columns=columns, start=start, end=end, days=days))
        return SQL(" UNION ALL ").join(parts)

    def shared_tail_cte(self) -> SQL:
        """The ``WITH`` part that facts with ``shared_tail`` read the tail from: the spec's tail
        views grouped by (country, blog), once for every part of the answer.

        A tail costs per raw view (50,000 pending: about 20 ms to read and group on this
        machine kind), a summary part per row: an answer with two parts over the tail (views
        and distinct blogs per country) read it twice.
        """
        start, end = self.spec.first_day, self.spec.last_day
        pairs = ("country_id", "blog_id")
        return sql(
            "{shared} AS MATERIALIZED ({tail})",
            shared=name(SHARED_TAIL),
            tail=self._raw_tail(columns=pairs, start=start, end=end, days=False),
        )

    def _tail(
        self, *, columns: tuple[str, ...], start: date | None, end: date | None, days: bool = True
    ) -> SQL:
        """The tail's views grouped by day (``days``) and ``columns``: from the shared tail
        when there is one for this range, else from the raw views."""
        if not (
            self.shared_tail
            and not days
            and (start, end) == (self.spec.first_day, self.spec.last_day)
        ):
            return self._raw_tail(columns=columns, start=start, end=end, days=days)
        keys = _columns(columns)
        where = where_clause(self._country_filters(columns) if self.shown is not None else [])
        if sorted(columns) == ["blog_id", "country_id"]:
            return sql(
                "SELECT NULL AS day, {keys}, views FROM {shared}{where}",
                keys=keys,
                shared=name(SHARED_TAIL),
                where=where,
            )
        return sql(
            "SELECT NULL AS day, {selected} FROM {shared}{where}{group_by}",
            selected=_columns(columns, last=SQL("coalesce(sum(views), 0) AS views")),
            shared=name(SHARED_TAIL),
            where=where,
            group_by=sql(" GROUP BY {keys}", keys=keys) if columns else SQL(""),
        )

    def _raw_tail(
        self, *, columns: tuple[str, ...], start: date | None, end: date | None, days: bool = True
    ) -> SQL:
        """The raw views the summaries do not hold yet (``id > watermark``), grouped by day
        (``days``) and ``columns``.

        Its cost is per raw view, not per group (the views of a tail are mostly today's, spread
        over many (blog, country) pairs): without ``days`` each view skips its UTC day and the
        grouping a smaller key. The range still bounds the views by ``viewed_at``.
        """
        where = []
        if start is not None:
            where.append(sql("viewed_at >= {low}", low=day_start_param(start)))
        if end is not None:
            where.append(sql("viewed_at < {high}", high=day_start_param(end + timedelta(days=1))))
        day = self._tail_day() if days else SQL("NULL")
        keys = _columns(columns, day) if days else _columns(columns)
        # The tail's views through the primary key, behind a fence (OFFSET 0; SQLite needs a
        # LIMIT before it), then the range and the filters: its cost stays that of the tail.
        # Without the fence an author's filter made PostgreSQL read each of the author's blogs'
        # views in the range through (blog_id, viewed_at) and intersect them with the tail's ids
        # (measured: 270 ms per query for 5 blogs over Feb-May at 10 M views, 50,000 pending).
        inside = [
            sql("id > {watermark}", watermark=self.snapshot.watermark),
            *_partition_bounds(start, end),
        ]
        views = sql(
            "(SELECT viewed_at, blog_id, country_id FROM {raw} WHERE {inside}{fence}) t",
            raw=name(RAW),
            inside=all_of(inside),
            fence=SQL(" OFFSET 0" if postgres() else " LIMIT -1 OFFSET 0"),
        )
        return sql(
            "SELECT {selected} FROM {views}{where}{group_by}",
            selected=_columns(columns, day + SQL(" AS day"), last=SQL("count(*) AS views")),
            views=views,
            where=where_clause([*where, *self._filters(("blog_id", "country_id"))]),
            # Without days nor columns, one row: the count (no GROUP BY, which would drop it
            # when empty; a zero row is harmless to a sum).
            group_by=sql(" GROUP BY {keys}", keys=keys) if columns or days else SQL(""),
        )

    def _tail_day(self) -> SQL:
        """The UTC day of a tail view. On PostgreSQL today's views (most of a tail) are told by
        two comparisons, not by converting each one's time (50,000 pending: 24 -> 17 ms)."""
        day = day_of(SQL("viewed_at"))
        if not postgres():
            return day
        today = self.snapshot.today
        return sql(
            "CASE WHEN viewed_at >= {low} AND viewed_at < {high} THEN {today} ELSE {day} END",
            low=day_start_param(today),
            high=day_start_param(today + timedelta(days=1)),
            today=day_param(today),
            day=day,
        )

    def _summary_parts(
        self,
        level: Level,
        columns: tuple[str, ...],
        start: date | None,
        end: date | None,
        monthly: bool,
        *,
        only: tuple[str, ...] | None = None,
        negate: bool = False,
        undated: bool = False,
    ) -> list[SQL]:
        """The SELECTs of ``level``'s rows over ``start..end`` (monthly where it can; with
        ``undated``, for callers that neither group by day nor by month, the last 30 or 90 days
        from the level's trailing rows and whole years from its yearly rows, where it has them).

        Whole months come from the monthly rows, the days around them from the daily rows. An
        edge that covers most of a month whose monthly rows are complete is read as that
        month's rows *minus* the daily rows of its days outside the range (negative
        ``views``, as for excluded countries): the 90 days ending on the 1st then read three
        months and 3 days of daily rows, not two months and 29 days of them.
        """
        # An author's rows blog by blog (see ``_filters``), except where an index serves
        # better: the countries' rows first when the question names countries, and the monthly
        # blog rows, a small table that a scan reads faster than a probe per blog.
        walk = not self._names_countries(level.columns, only)
        daily_filters = self._filters(level.columns, only=only, blog_by_blog=walk)
        monthly_filters = self._filters(
            level.columns, only=only, blog_by_blog=walk and "country_id" in level.columns
        )
        daily_from = name(level.daily)
        named = only if only is not None else self.spec.country_codes
        if (
            postgres()
            and level is BLOG_COUNTRY_LEVEL
            and self.author_id is None
            and named is not None
            and not walk
        ):
            # A few countries' daily (blog, country) rows, country by country through the
            # country-first index: with ``country_id IN (...)`` PostgreSQL walked the day-first
            # key over every country's rows of the days (4 days of three countries at 10 M
            # views: 1,682 buffers for 6,220 rows, 8.5-15 ms; so 440 buffers, 4-6.6 ms).
            daily_from = sql(
                "(VALUES {codes}) AS named (code) JOIN {table} ON country_id = named.code",
                # Each country once (a join, unlike IN, would count a repeated one twice).
                codes=SQL(", ").join(sql("({code})", code=code) for code in sorted(set(named))),
                table=name(level.daily),
            )
            excluded = () if only is not None else self.spec.exclude_country_codes or ()
            daily_filters = (
                [sql("country_id NOT IN ({codes})", codes=values(excluded))] if excluded else []
            )

        def part(
            table: str, day_column: str, low: date | None, high: date | None, minus: bool = False
        ) -> SQL:
            filters = daily_filters if table == level.daily else monthly_filters
            day = name(day_column)
            conditions = []
            if low is not None:
                conditions.append(sql("{day} >= {low}", day=day, low=day_param(low)))
            if high is not None:
                conditions.append(sql("{day} <= {high}", day=day, high=day_param(high)))
            return sql(
                "SELECT {selected} FROM {table}{where}",
                selected=_columns(
                    columns,
                    day + SQL(" AS day"),
                    last=SQL("-views AS views" if negate != minus else "views AS views"),
                ),
                table=daily_from if table == level.daily else name(table),
                where=where_clause([*conditions, *filters]),
            )

        span = self._trailing_span(level, start, end) if undated else None
        if span is not None and level.trailing is not None:
            # The span's days before the open day from the trailing rows, the later ones from
            # the daily rows.
            parts = [
                sql(
                    "SELECT {selected} FROM {table} WHERE {where}",
                    selected=_columns(
                        columns,
                        SQL("NULL AS day"),
                        last=SQL("-views AS views" if negate else "views AS views"),
                    ),
                    table=name(level.trailing),
                    where=all_of([sql("span = {span}", span=span), *monthly_filters]),
                )
            ]
            open_from = self.snapshot.monthly_open_from
            if open_from is not None and (end is None or end >= open_from):
                parts.append(part(level.daily, "day", open_from, end))
            return parts
        if not monthly or level.monthly is None:
            return [part(level.daily, "day", start, end)]
        split = split_range(start, end)
        open_from = self.snapshot.monthly_open_from
        folded = level.monthly_folded and open_from is not None
        months = split.months
        parts = []
        # The edges, month by month: read as daily rows, or as their month minus the others.
        for low, high in (piece for edge in split.edges for piece in _month_pieces(*edge)):
            month, after = month_start(low), next_month(low)
            inside = (high - low).days + 1
            closed = not folded or (open_from is not None and after <= open_from)
            if not closed or 2 * inside <= (after - month).days:
                parts.append(part(level.daily, "day", low, high))
                continue
            months = _months_with(months, month)
            if month < low:
                parts.append(part(level.daily, "day", month, low - timedelta(days=1), True))
            if high < after - timedelta(days=1):
                parts.append(
                    part(
                        level.daily,
                        "day",
                        high + timedelta(days=1),
                        after - timedelta(days=1),
                        True,
                    )
                )
        if months is None:
            return parts
        first_month, last_month = months
        if (
            folded
            and open_from is not None
            and (last_month is None or next_month(last_month) > open_from)
        ):
            # The monthly rows count the days before the open day; the later days of the whole
            # months come from the daily rows.
            parts.append(
                part(
                    level.daily,
                    "day",
                    open_from if first_month is None else max(first_month, open_from),
                    None if last_month is None else next_month(last_month) - timedelta(days=1),
                )
            )
            last_month = month_start(open_from)
        if first_month is not None and last_month is not None and first_month > last_month:
            return parts
        if undated and level.yearly is not None:
            # The run's whole years from the yearly rows, which count the days the monthly rows
            # count: with folding, the open year's up to the open day, whose month closes the
            # run then.
            first_year = (
                None if first_month is None else first_month.year + (first_month.month != 1)
            )
            last_year = None
            if last_month is not None:
                closes_year = last_month.month == 12 or (
                    folded and open_from is not None and last_month == month_start(open_from)
                )
                last_year = last_month.year - (not closes_year)
            if first_year is None or last_year is None or first_year <= last_year:
                parts.append(
                    part(
                        level.yearly,
                        "year",
                        None if first_year is None else date(first_year, 1, 1),
                        None if last_year is None else date(last_year, 1, 1),
                    )
                )
                if first_month is not None and first_year is not None and first_month.month != 1:
                    parts.append(
                        part(level.monthly, "month", first_month, date(first_year - 1, 12, 1))
                    )
                if last_month is not None and last_year is not None and last_year < last_month.year:
                    parts.append(
                        part(level.monthly, "month", date(last_year + 1, 1, 1), last_month)
                    )
                return parts
        parts.append(part(level.monthly, "month", first_month, last_month))
        return parts

    def _trailing_span(self, level: Level, start: date | None, end: date | None) -> int | None:
        """The span of ``level``'s trailing rows that, with the daily rows from the open day
        on, hold exactly the days ``start..end``; ``None`` if none does."""
        open_from = self.snapshot.monthly_open_from
        if level.trailing is None or open_from is None or start is None:
            return None
        span = (open_from - start).days + 1
        if span not in TRAILING_SPANS or (end is not None and end < open_from - timedelta(days=1)):
            return None
        return span

    def _presence_range(self, prefix: str = "") -> SQL:
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
        year, days = name(f"{prefix}year"), name(f"{prefix}days")
        ranges: list[SQL] = []
        if full_low is None or full_high is None or full_low <= full_high:
            bounds = []
            if full_low is not None:
                bounds.append(sql("{year} >= {low}", year=year, low=full_low))
            if full_high is not None:
                bounds.append(sql("{year} <= {high}", year=year, high=full_high))
            ranges.append(all_of(bounds))
        for one_year, (low, high) in partial.items():
            ranges.append(
                sql(
                    "({year} = {one_year} AND {days} & {mask}::bit(366) <> {none}::bit(366))",
                    year=year,
                    one_year=one_year,
                    days=days,
                    mask=year_masks(low, high)[one_year],
                    none=NO_DAYS,
                )
            )
        return sql("({ranges})", ranges=SQL(" OR ").join(ranges))

    def _kept_counts(self, start: date | None, end: date | None) -> SQL | None:
        """(country_id, blogs) of the range's absorbed views from a count kept with the
        presence rows, when one answers it exactly; else ``None``. The counts are of every
        blog: with an author, from the author's pairs' last days instead (``_author_last_days``).

        - A whole single year: the per-(year, country) counts; whole months of one year (such
          as February to May): the per-(year, month range, country) counts.
        - A range holding every absorbed day (open at both ends, or around the first and the
          last day of the daily views, which the snapshot read): the all-time counts.
        - A range reaching the last absorbed day: a pair has a view in it exactly when its last
          view is in it, so the per-(country, last day) counts from the range's first day on.
        """
        if self.author_id is not None:
            return self._author_last_days(start, end)
        countries = self._filters(("country_id",))
        if (
            start is not None
            and end is not None
            and start.year == end.year
            and start.day == 1
            and end == next_month(end) - timedelta(days=1)
        ):
            year = sql("year = {year}", year=start.year)
            if (start.month, end.month) == (1, 12):
                return sql(
                    "SELECT country_id, blogs FROM {country_blogs} WHERE {in_year}",
                    country_blogs=name(COUNTRY_BLOGS),
                    in_year=all_of([year, *countries]),
                )
            months = sql(
                "first_month = {first} AND last_month = {last}",
                first=start.month,
                last=end.month,
            )
            return sql(
                "SELECT country_id, blogs FROM {month_ranges} WHERE {in_months}",
                month_ranges=name(MONTH_RANGE_COUNTRY_BLOGS),
                in_months=all_of([year, months, *countries]),
            )
        first, last = self.snapshot.first_absorbed_day, self.snapshot.last_absorbed_day
        reaches_last = end is None or last is None or end >= last
        if reaches_last and (start is None or first is None or start <= first):
            return sql(
                "SELECT country_id, blogs FROM {all_time}{countries}",
                all_time=name(ALL_TIME_COUNTRY_BLOGS),
                countries=where_clause(countries),
            )
        if reaches_last and start is not None:
            return sql(
                "SELECT country_id, blogs FROM {last_days} WHERE {from_start}",
                last_days=name(LAST_DAY_COUNTRY_BLOGS),
                from_start=all_of([sql("day >= {start}", start=day_param(start)), *countries]),
            )
        return None

    def _author_last_days(self, start: date | None, end: date | None) -> SQL | None:
        """(country_id, blogs) of the range's absorbed views of the author's blogs from their
        pairs' last days (``LAST_DAYS``), when the range reaches the last absorbed day (a pair
        has a view in it exactly when its last one is from the range's first day on); else
        ``None``.

        One row per (country, block of blog ids) that holds the author's blogs and a subscript
        per blog, where the presence rows are one per (year, country, blog), each read from the
        table for its bits: at 100 M views every pair of a 144-blog author exists, and its
        country breakdown over 30 days read 14,400 of them (47 k buffers, 35 ms).
        """
        last = self.snapshot.last_absorbed_day
        if end is not None and last is not None and end < last:
            return None
        block, slot = last_days_slot("id")
        return sql(
            "SELECT a.country_id, count(*) AS blogs FROM ("
            "SELECT {block} AS block, array_agg({slot}) AS slots FROM {blog} "
            "WHERE author_id = {author} GROUP BY 1) b "
            "JOIN {last_days} a ON a.block = b.block CROSS JOIN LATERAL unnest(b.slots) s (slot) "
            "WHERE {where} GROUP BY a.country_id",
            block=SQL(block),
            slot=SQL(slot),
            blog=name(BLOG),
            author=self.author_id,
            last_days=name(LAST_DAYS),
            where=all_of(
                [
                    sql("a.days[s.slot] >= {since}", since=day_param(start or FIRST_DAY)),
                    *self._country_filters(("country_id",)),
                ]
            ),
        )

    def counts_every_countrys_blogs_cheaply(self) -> bool:
        """Whether the distinct blogs of every country cost little at once (PostgreSQL): from
        the counts kept with the presence rows, or from one author's pairs' last days."""
        return self._kept_counts(self.spec.first_day, self.spec.last_day) is not None

    def _new_in_tail(self, tail: SQL) -> SQL:
        """(country_id, pairs) of the ``tail``'s distinct (country, blog) pairs that have no
        absorbed view in the range (PostgreSQL only).

        A range that reaches the last absorbed day holds a pair's absorbed views exactly when
        it holds the pair's last day: one subscript of its block's days a pair, after a join
        of one row per (country, block) (12 k pairs with 50,000 pending views). Other ranges
        (past ones, which a tail reaches only with late views) probe the presence index pair by
        pair.
        """
        start, end = self.spec.first_day, self.spec.last_day
        last = self.snapshot.last_absorbed_day
        if last is None or end is None or end >= last:
            # The pairs by block first: a join of one row per block (about 2,000 of them),
            # then a subscript per pair; the tail's row estimate is far too low (its ids are
            # past the statistics) and made it a nested loop of one index probe per pair.
            block, slot = last_days_slot("tail.blog_id")
            return sql(
                "SELECT g.country_id, count(*) FROM ("
                "SELECT country_id, {block} AS block, array_agg({slot}) AS slots "
                "FROM ({tail}) tail GROUP BY 1, 2) g "
                "LEFT JOIN {last_days} a ON a.country_id = g.country_id AND a.block = g.block "
                "CROSS JOIN LATERAL unnest(g.slots) s (slot) "
                "WHERE coalesce(a.days[s.slot], '-infinity') < {since} GROUP BY 1",
                tail=tail,
                last_days=name(LAST_DAYS),
                block=SQL(block),
                slot=SQL(slot),
                since=day_param(start or FIRST_DAY),
            )
        # The tail's rows are distinct (country, blog) pairs: count(*), which PostgreSQL can
        # hash, where count(DISTINCT) made it sort the tail's views first (50,000 pending: a
        # third of the statement in EXPLAIN ANALYZE; over HTTP within the noise).
        return sql(
            "SELECT country_id, count(*) FROM ({tail}) tail "
            "WHERE NOT EXISTS (SELECT 1 FROM {presence} p WHERE {p_range} "
            "AND p.country_id = tail.country_id AND p.blog_id = tail.blog_id) "
            "GROUP BY country_id",
            tail=tail,
            presence=name(PRESENCE),
            p_range=self._presence_range(prefix="p."),
        )

    def presence_blogs(self) -> SQL:
        """(country_id, distinct blogs with a matching view in the range), from the counts kept
        with the yearly presence bits or from the bits themselves (PostgreSQL only), plus the
        tail."""
        start, end = self.spec.first_day, self.spec.last_day
        presence = name(PRESENCE)
        columns = ("blog_id", "country_id")
        in_range = all_of(
            [
                self._presence_range(),
                *self._filters(columns, blog_by_blog=not self._names_countries(columns)),
            ]
        )
        tail = self._tail(columns=("country_id", "blog_id"), start=start, end=end, days=False)
        kept = self._kept_counts(start, end)
        if kept is not None:
            # The kept counts, plus the tail's pairs that have no presence row in the range.
            return sql(
                "SELECT country_id, sum(blogs) FROM ({kept} UNION ALL {new_in_tail}) counts "
                "GROUP BY country_id",
                kept=kept,
                new_in_tail=self._new_in_tail(tail),
            )
        if start is None or end is None or start.year != end.year:
            return sql(
                "SELECT country_id, count(DISTINCT blog_id) FROM ("
                "SELECT country_id, blog_id FROM {presence} WHERE {in_range} "
                "UNION ALL SELECT country_id, blog_id FROM ({tail}) tail) pairs "
                "GROUP BY country_id",
                presence=presence,
                in_range=in_range,
                tail=tail,
            )
        # Within one year a (country, blog) has one presence row: count rows, and add the
        # tail's pairs that have none (no DISTINCT over every pair: about 3x faster).
        return sql(
            "SELECT country_id, sum(blogs) FROM ("
            "SELECT country_id, count(*) AS blogs FROM {presence} WHERE {in_range} "
            "GROUP BY country_id UNION ALL {new_in_tail}) counts GROUP BY country_id",
            presence=presence,
            in_range=in_range,
            new_in_tail=self._new_in_tail(tail),
        )

    def first_day(self) -> date | None:
        """The earliest day with a matching view (before ``end``), or ``None``."""
        level = self.level(blogs=False, countries=False)
        filters = self._filters(level.columns)
        before_end: list[SQL] = []
        tail_where = [sql("id > {watermark}", watermark=self.snapshot.watermark), *filters]
        end = self.spec.last_day
        if end is not None:
            before_end.append(sql("day <= {end}", end=day_param(end)))
            tail_where.append(
                sql("viewed_at < {after}", after=day_start_param(end + timedelta(days=1)))
            )
        if self.author_id is None:
            daily = sql(
                "SELECT min(day) FROM {table} WHERE {where}",
                table=name(level.daily),
                where=all_of([*filters, *before_end]),
            )
        else:
            # Blog by blog through the blog-first indexes, each stopping at its first matching
            # row: one min() over all the author's rows with a country filter read them all
            # (518 ms for a 144-blog author and 2 countries at 10 M views; 3.7 ms so).
            daily = sql(
                "SELECT min((SELECT min(day) FROM {table} d WHERE {where})) FROM {blog} b "
                "WHERE b.author_id = {author}",
                table=name(level.daily),
                where=all_of(
                    [sql("d.blog_id = b.id"), *self._country_filters(level.columns), *before_end]
                ),
                blog=name(BLOG),
                author=self.author_id,
            )
        first_absorbed = fetch_one(daily)[0]
        if first_absorbed is not None:
            # Only a tail view before the first absorbed day can come first: the tail's views
            # are then read only in the raw partitions up to that day's month, none when they
            # are all of now (one author, 50,000 pending: 11.4 ms -> 1 ms).
            tail_where += _partition_bounds(None, as_date(first_absorbed))
        found = [
            first_absorbed,
            # The tail's views through the primary key (``id > watermark``), behind a fence:
            # else PostgreSQL answers min() by walking the viewed_at index from the oldest
            # view, skipping every absorbed one (measured: over 5 s at 10 M views with 10,000
            # pending, all of today).
            fetch_one(
                sql(
                    "SELECT min(viewed_at) FROM (SELECT viewed_at FROM {raw} WHERE {where}{fence})"
                    " tail",
                    raw=name(RAW),
                    where=all_of(tail_where),
                    fence=SQL(" OFFSET 0" if postgres() else " LIMIT -1 OFFSET 0"),
                )
            )[0],
        ]
        days = [as_date(value) for value in found if value is not None]
        return min(days) if days else None


# --- The answers' shapes ---------------------------------------------------------------------
#
# Each takes the facts of one question and returns the rows of its answer: the whole query,
# including which database counts distinct blogs how, and the rule that a group counts when
# its (possibly net, see Facts.sql) views are positive.

NO_SUCH_AUTHOR = -1


def facts_for(spec: Spec, snapshot: Snapshot) -> Facts | None:
    """The facts of ``spec`` at ``snapshot``; ``None`` when it names an unknown author (whose
    answers are empty, API.md)."""
    if spec.author_username is None:
        return Facts(spec, snapshot, author_id=None)
    found = (
        get_user_model()
        ._default_manager.filter(**{USERNAME: spec.author_username})
        .values_list("pk", flat=True)
        .first()
    )
    return None if found is None else Facts(spec, snapshot, author_id=int(found))


@dataclass
class Groups:
    """One page of an answer's rows, how many there are in all, and what ``meta`` adds."""

    rows: list[dict[str, Any]]
    total: int
    meta: dict[str, Any] = field(default_factory=dict)


def country_groups(facts: Facts, limit: int, offset: int) -> Groups:
    """Views and distinct viewed blogs per country, most viewed first, one page of them."""
    # Views from the smallest level with countries (at most 250 groups: these are fetched and
    # paged here); then distinct blogs, for the page's countries only, from the yearly presence
    # bits on PostgreSQL, else from the (day|month, blog, country) rows. Where the distinct
    # blogs of every country cost little, both in one statement that reads the tail once.
    if postgres() and facts.counts_every_countrys_blogs_cheaply():
        return _country_groups_at_once(facts, limit, offset)
    if postgres() and facts.author_id is not None:
        # The presence rows cost a probe per country of the page and blog of the author's, the
        # pairs a row per (blog, country, month or day) of the range: a page of a few
        # countries (a top 10) probes (100 M views, 144 blogs, Feb-May: 15 ms, 24 by pair).
        if limit <= FEW_COUNTRIES:
            return _country_groups_at_once(facts, limit, offset)
        return _country_groups_by_pair(facts, limit, offset)
    views = fetch_all(
        sql(
            # Summed per country before the names are joined: the facts can be tens of
            # thousands of rows (an author's blogs), the countries are at most 250.
            "SELECT v.country_id, c.name, v.views FROM ("
            "SELECT f.country_id, sum(f.views) AS views FROM ({facts}) f GROUP BY f.country_id "
            "HAVING sum(f.views) > 0) v JOIN {country} c ON c.code = v.country_id "
            "ORDER BY v.views DESC, {code}",
            facts=facts.sql(countries=True, days=False),
            country=name(COUNTRY),
            code=binary_order(SQL("v.country_id")),
        )
    )
    page = views[offset : offset + limit]
    if not page:
        return Groups([], len(views))
    if len(page) < len(views):
        # Counting distinct blogs is the costly part: only for the countries shown.
        shown = replace(
            facts.spec,
            country_codes=tuple(sorted(code for code, _, _ in page)),
            exclude_country_codes=None,
        )
        facts = Facts(shown, facts.snapshot, author_id=facts.author_id)
    if postgres():
        counts = facts.presence_blogs()
    else:
        counts = sql(
            "SELECT country_id, count(*) FROM (SELECT country_id, blog_id FROM ({pairs}) p "
            "GROUP BY country_id, blog_id HAVING sum(views) > 0) v GROUP BY country_id",
            pairs=facts.sql(blogs=True, countries=True, days=False),
        )
    blogs = dict(fetch_all(counts))
    rows = [
        {
            "country_code": code,
            "country_name": country,
            "blogs": int(blogs.get(code, 0)),
            "views": int(count),
        }
        for code, country, count in page
    ]
    return Groups(rows, len(views))


def _fetch_hashing(query: SQL) -> list[tuple[Any, ...]]:
    """``fetch_all`` with PostgreSQL's sorts disabled for the statement (``enable_sort``), so
    that it groups the tail by hashing: the tail's row estimate is far too low (its ids lie
    past the statistics of a growing partition, by far so when ids are not in time order, as in
    the benchmark's seed), and PostgreSQL sorted the tail's views to group them, by a text key
    under the database's collation. With 50,000 pending views a country breakdown's tail took
    45 ms sorted, 20 ms hashed (EXPLAIN ANALYZE; sorted by code point, 33 ms). A sort the
    answer needs (ORDER BY) still runs. Only for statements whose plans were looked at:
    elsewhere sorting may be what pays.

    A disabled sort adds a huge cost to every plan that must still sort, which would make
    PostgreSQL JIT-compile the statement (half a second, seen in the tests, whose reads run
    inside their own transaction): JIT goes off for the rest of the transaction too, as
    ``read_snapshot`` sets it for its own.
    """
    with connections[read_alias()].cursor() as cursor:
        # SET LOCAL: a failed statement (a timeout) ends the transaction, and the settings.
        cursor.execute("SET LOCAL jit = off; SET LOCAL enable_sort = off")
        cursor.execute(query.text, query.params)
        rows = cursor.fetchall()
        cursor.execute("SET LOCAL enable_sort TO DEFAULT")
        return rows


def _counted_page(groups: list[tuple[Any, ...]]) -> Groups:
    """``Groups`` from ``(total, country_code, country_name, views, blogs)`` rows: the page's
    countries, and the count of all groups that each row carries (a page past the end is one
    row of the count and NULLs)."""
    rows = [
        {"country_code": code, "country_name": country, "blogs": int(blogs), "views": int(views)}
        for _, code, country, views, blogs in groups
        if code is not None
    ]
    return Groups(rows, groups[0][0])


def _country_groups_at_once(facts: Facts, limit: int, offset: int) -> Groups:
    """``country_groups`` in one statement that reads the tail once (PostgreSQL): the views
    per country, the page of them, and the page's distinct blogs."""
    shared = facts.reading_shared_tail()
    shown = facts.reading_shared_tail(shown=SQL("SELECT country_id FROM page"))
    # The count of all groups comes with the page (also when the page is empty: the LEFT
    # JOIN keeps the total's row).
    groups = _fetch_hashing(
        sql(
            "WITH {tail}, views AS MATERIALIZED ("
            "SELECT f.country_id, sum(f.views) AS views FROM ({facts}) f "
            "GROUP BY f.country_id HAVING sum(f.views) > 0), "
            "page AS MATERIALIZED (SELECT v.country_id, c.name, v.views FROM views v "
            "JOIN {country} c ON c.code = v.country_id ORDER BY v.views DESC, {code} "
            "LIMIT {limit} OFFSET {offset}) "
            "SELECT total.n, p.country_id, p.name, p.views, coalesce(b.blogs, 0) "
            "FROM (SELECT count(*) AS n FROM views) total LEFT JOIN (page p "
            "LEFT JOIN ({blogs}) b (country_id, blogs) ON b.country_id = p.country_id) ON true "
            "ORDER BY p.views DESC, {page_code}",
            tail=shared.shared_tail_cte(),
            facts=shared.sql(countries=True, days=False),
            country=name(COUNTRY),
            code=binary_order(SQL("v.country_id")),
            limit=limit,
            offset=offset,
            blogs=shown.presence_blogs(),
            page_code=binary_order(SQL("p.country_id")),
        )
    )
    return _counted_page(groups)


def _country_groups_by_pair(facts: Facts, limit: int, offset: int) -> Groups:
    """``country_groups`` for one author (PostgreSQL) over a range that the pairs' last days
    do not answer (one not reaching the last absorbed day): the author's facts are (blog,
    country) rows, so the pairs with views in the range are those facts summed per pair, and a
    country's distinct blogs is its number of pairs, counted in the same pass as its views.

    The presence rows would be probed per country of the page and blog of the author's
    instead, one row each read from the table for its bits: 100 countries x 144 blogs at 100 M
    views, 47 k buffers and 32 ms for Feb-May, where the facts are 44 k index-only rows.
    """
    groups = _fetch_hashing(
        sql(
            "WITH pairs AS MATERIALIZED ("
            # A pair's views as bigint (they are a count of views), which its country's sum
            # adds faster than the numeric sum() gives (~1.3 of 19 ms in the case above).
            "SELECT f.country_id, sum(f.views)::bigint AS views FROM ({facts}) f "
            "GROUP BY f.country_id, f.blog_id HAVING sum(f.views) > 0), "
            "views AS MATERIALIZED (SELECT country_id, sum(views) AS views, count(*) AS blogs "
            "FROM pairs GROUP BY country_id), "
            "page AS MATERIALIZED (SELECT v.country_id, c.name, v.views, v.blogs FROM views v "
            "JOIN {country} c ON c.code = v.country_id ORDER BY v.views DESC, {code} "
            "LIMIT {limit} OFFSET {offset}) "
            "SELECT total.n, p.country_id, p.name, p.views, p.blogs "
            "FROM (SELECT count(*) AS n FROM views) total LEFT JOIN page p ON true "
            "ORDER BY p.views DESC, {page_code}",
            facts=facts.sql(blogs=True, countries=True, days=False),
            country=name(COUNTRY),
            code=binary_order(SQL("v.country_id")),
            limit=limit,
            offset=offset,
            page_code=binary_order(SQL("p.country_id")),
        )
    )
    return _counted_page(groups)


def author_groups(facts: Facts, limit: int, offset: int) -> Groups:
    """Views and distinct viewed blogs per author, most viewed first, one page of them."""
    username = name(f"u.{USERNAME}")
    # Per blog first. Only the page's rows leave the database; the count of all groups comes
    # with them (also when the page is empty: the LEFT JOIN keeps the total's row).
    rows = fetch_all(
        sql(
            "WITH authors AS ("
            "SELECT {username} AS username, count(*) AS blogs, sum(t.views) AS views FROM ("
            "SELECT f.blog_id, sum(f.views) AS views FROM ({facts}) f GROUP BY f.blog_id "
            "HAVING sum(f.views) > 0) t "
            "JOIN {blog} b ON b.id = t.blog_id JOIN {user} u ON u.id = b.author_id "
            "GROUP BY u.id, {username}) "
            "SELECT total.n, page.username, page.blogs, page.views "
            "FROM (SELECT count(*) AS n FROM authors) total LEFT JOIN ("
            "SELECT username, blogs, views FROM authors "
            "ORDER BY views DESC, {by_name} LIMIT {limit} OFFSET {offset}) page ON true "
            "ORDER BY page.views DESC, {page_by_name}",
            username=username,
            facts=facts.sql(blogs=True, days=False),
            blog=name(BLOG),
            user=name(USER),
            by_name=binary_order(SQL("username")),
            limit=limit,
            offset=offset,
            page_by_name=binary_order(SQL("page.username")),
        )
    )
    found = [
        {"username": author, "blogs": int(blogs), "views": int(views)}
        for _, author, blogs, views in rows
        if author is not None
    ]
    return Groups(found, int(rows[0][0]))


def blog_groups(facts: Facts, limit: int) -> Groups:
    """The ``limit`` most viewed blogs; ties by blog id."""
    rows = fetch_all(
        sql(
            "SELECT t.blog_id, b.title, {username}, t.views, t.total FROM ("
            "SELECT f.blog_id, sum(f.views) AS views, count(*) OVER () AS total "
            "FROM ({facts}) f GROUP BY f.blog_id HAVING sum(f.views) > 0 "
            "ORDER BY views DESC, f.blog_id LIMIT {limit}) t "
            "JOIN {blog} b ON b.id = t.blog_id JOIN {user} u ON u.id = b.author_id "
            "ORDER BY t.views DESC, t.blog_id",
            username=name(f"u.{USERNAME}"),
            facts=facts.sql(blogs=True, days=False),
            limit=limit,
            blog=name(BLOG),
            user=name(USER),
        )
    )
    results = [
        {"blog_id": blog_id, "title": title, "username": username, "views": int(views)}
        for blog_id, title, username, views, _ in rows
    ]
    return Groups(results, int(rows[0][4]) if rows else 0)


def views_per_day(facts: Facts, start: date, end: date, *, monthly: bool) -> list[tuple[date, int]]:
    """``(day, views)`` of the days ``start..end`` with views. With ``monthly``, a whole month
    may come as one row dated its first day (for callers that sum by month or year)."""
    rows = fetch_all(
        sql(
            "SELECT day, sum(views) FROM ({facts}) f GROUP BY day",
            facts=facts.sql(monthly=monthly, start=start, end=end),
        )
    )
    return [(as_date(day), int(views)) for day, views in rows]


def blogs_created(facts: Facts, start: date, end: date) -> dict[date, int]:
    """Blogs created per day in ``start..end``, by the filtered author if any (countries do
    not apply)."""
    blogs = Blog.objects.filter(
        created_at__gte=datetime(start.year, start.month, start.day, tzinfo=UTC),
        created_at__lt=datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1),
    )
    if facts.author_id is not None:
        blogs = blogs.filter(author_id=facts.author_id)
    counts: dict[date, int] = {}
    for created_at in blogs.values_list("created_at", flat=True):
        day = created_at.astimezone(UTC).date()
        counts[day] = counts.get(day, 0) + 1
    return counts


# --- Comparison: the views of an earlier range for the rows already found ---------------------
#
# One query each, over the earlier range's summaries and tail, restricted to the keys of the
# rows the current answer lists (rows of the earlier range that are not listed are not read).


def country_views(facts: Facts, codes: list[str], start: date, end: date) -> dict[str, int]:
    """Views per country of ``codes`` in ``start..end``."""
    if not codes:
        return {}
    # Within the spec's country filters, "only these" is the same question, and reads less.
    listed = Facts(
        replace(facts.spec, country_codes=tuple(sorted(codes)), exclude_country_codes=None),
        facts.snapshot,
        author_id=facts.author_id,
    )
    rows = fetch_all(
        sql(
            "SELECT f.country_id, sum(f.views) FROM ({facts}) f GROUP BY f.country_id",
            facts=listed.sql(countries=True, start=start, end=end, days=False),
        )
    )
    return {code: int(views) for code, views in rows}


def author_views(facts: Facts, usernames: list[str], start: date, end: date) -> dict[str, int]:
    """Views per author of ``usernames`` in ``start..end``."""
    if not usernames:
        return {}
    username = name(f"u.{USERNAME}")
    rows = fetch_all(
        sql(
            "SELECT {username}, sum(f.views) FROM ({facts}) f "
            "JOIN {blog} b ON b.id = f.blog_id JOIN {user} u ON u.id = b.author_id "
            "WHERE {username} IN ({names}) GROUP BY {username}",
            username=username,
            facts=facts.sql(blogs=True, start=start, end=end, days=False),
            blog=name(BLOG),
            user=name(USER),
            names=values(usernames),
        )
    )
    return {author: int(views) for author, views in rows}


def blog_views(facts: Facts, blog_ids: list[int], start: date, end: date) -> dict[int, int]:
    """Views per blog of ``blog_ids`` in ``start..end``."""
    if not blog_ids:
        return {}
    rows = fetch_all(
        sql(
            "SELECT f.blog_id, sum(f.views) FROM ({facts}) f WHERE f.blog_id IN ({ids}) "
            "GROUP BY f.blog_id",
            facts=facts.sql(blogs=True, start=start, end=end, days=False),
            ids=values(blog_ids),
        )
    )
    return {int(blog_id): int(views) for blog_id, views in rows}


# --- Realtime: the last minutes, from the raw views ---------------------------------------------


@dataclass
class Recent:
    """Views per minute of a window, and its most viewed blogs and countries."""

    per_minute: dict[str, int]
    top_blogs: list[dict[str, Any]]
    top_countries: list[dict[str, Any]]


def _minute_key(value: object) -> str:
    """A minute as ``minute_of`` returned it, as ``YYYY-MM-DD HH:MM``."""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)[:16]


def recent_views(facts: Facts, start: datetime, end: datetime, limit: int) -> Recent:
    """The views with ``start <= viewed_at < end`` (whole UTC minutes): per minute, and the
    ``limit`` most viewed blogs and countries. ``per_minute`` is keyed ``YYYY-MM-DD HH:MM``.

    From the per-minute levels (``rollups.tables.RECENT_LEVELS``) plus the tail, when they keep
    the whole window (``snapshot.recent_from <= start``), as they do while absorb runs; else
    from the raw views of the window.
    """
    kept_from = facts.snapshot.recent_from
    if kept_from is None or start < kept_from:
        return _recent_from_raw(facts, start, end, limit)
    return _recent_from_minutes(facts, start, end, limit)


def _recent_from_minutes(facts: Facts, start: datetime, end: datetime, limit: int) -> Recent:
    """``recent_views`` from the per-minute levels and the tail, in one statement.

    Each of the three parts reads the smallest level that holds its columns and the filtered
    ones: the minutes their totals without any filter, (minute, country) rows without an
    author, else (minute, blog[, country]) rows; the countries (minute, country) rows without
    an author; the blogs (minute, blog) rows without country filters, taking the window's
    whole 5-minute blocks from the block rows (a fifth of the rows), else the kept countries'
    (minute, blog, country) rows, or, when countries are only excluded, the blog rows minus
    the excluded countries' rows (as ``Facts.sql``). Without any filter, the countries and
    blogs come from the window rows instead when they sum this window at this watermark: the
    ``limit`` first of the window and those in the tail, whatever the number viewed. The tail
    (raw views of the window above the per-minute rows' own watermark, which moves apart from
    the summaries') is grouped once and added to each part. Only
    the ``limit`` first blogs and countries leave the database, with their titles, authors
    and names: one round trip in all.
    """
    spec = facts.spec
    author = facts.author_id is not None
    nothing = {
        "minute": SQL("CAST(NULL AS timestamptz)" if postgres() else "NULL"),
        "blog_id": SQL("CAST(NULL AS bigint)"),
        "country_id": SQL("CAST(NULL AS varchar(2))"),
    }

    def columns(part: str, kept: str) -> SQL:
        """The tag, then the four columns: ``kept`` as it is, the others NULL."""
        picked = {**nothing, kept: name(kept)}
        return sql(
            "{part} AS part, {minute} AS minute, {blog_id} AS blog_id, {country_id} AS country_id",
            part=part,
            minute=picked["minute"],
            blog_id=picked["blog_id"],
            country_id=picked["country_id"],
        )

    # The window rows sum this window at this watermark: the parts they have the columns of
    # read them, one row per key, instead of its per-minute rows.
    windows_hold = facts.snapshot.recent_window_holds(end)

    def rows(
        part: str,
        kept: str,
        level: RecentLevel,
        window: RecentWindow | None = None,
        *,
        blocks: bool = False,
        only: tuple[str, ...] | None = None,
        negate: bool = False,
    ) -> list[tuple[str, SQL]]:
        """The SELECTs of ``kept`` and the views of ``window``'s rows, where given and they
        hold, else of ``level``'s rows of the window (the blocks inside it by their rows, with
        ``blocks``), each tagged ``part``: summed with the part's other rows in one grouping."""
        views = SQL("-views AS views" if negate else "views")
        if window is not None and windows_hold:
            spans = [
                (
                    window.table,
                    all_of(
                        [
                            sql("window_end = {end}", end=moment_param(end)),
                            *facts._filters(window.columns, only=only, blog_by_blog=True),
                        ]
                    ),
                )
            ]
        else:
            spans = [
                (
                    table,
                    all_of(
                        [
                            sql("minute >= {low}", low=moment_param(low)),
                            sql("minute < {high}", high=moment_param(high)),
                            *facts._filters(level.columns, only=only, blog_by_blog=True),
                        ]
                    ),
                )
                for table, low, high in level.spans(start, end, blocks=blocks)
            ]
        return [
            (
                part,
                sql(
                    "SELECT {kept}, {views} FROM {table} WHERE {where}",
                    kept=name(kept),
                    views=views,
                    table=name(table),
                    where=where,
                ),
            )
            for table, where in spans
        ]

    def tail_by(column: SQL) -> SQL:
        """The tail's views per ``column`` (minute, blog_id or country_id): on PostgreSQL from
        ``tail_keys``, which counts all three in one pass over the tail, else grouped here."""
        if postgres():
            return sql(
                "SELECT {column}, views FROM tail_keys WHERE {column} IS NOT NULL", column=column
            )
        return sql("SELECT {column}, count(*) AS views FROM tail GROUP BY {column}", column=column)

    # The tail's views per blog or per country, for the parts from the window rows.
    ctes: list[SQL] = []

    def ranked(part: str, window: RecentWindow) -> tuple[str, SQL]:
        """The window's views plus the tail's, per key, of the keys that can rank among the
        ``limit`` first, tagged ``part``.

        Those keys have at least T views, the window's ``limit``-th (0 when it has fewer
        keys): its ``limit`` first keys have that many before the tail adds any, so a key
        short of T is passed by all of them. The tail adds at most M views to a key (its
        largest count), so a key reaching T has at least T - M in the window: only the
        window rows from T - M up are read (through the (window_end, views) index), summed
        with the tail's per key, and kept from T up. A key whose window row was not read
        sums at most M < T there, and is short of T in truth too. So the rows read are a few
        more than ``limit`` and the tail's keys, whatever the number viewed.
        """
        column = name(window.columns[0])
        table = name(window.table)
        added = name(f"tail_{part}")
        ctes.append(sql("{added} AS ({grouped})", added=added, grouped=tail_by(column)))
        least = sql(
            "(SELECT CASE WHEN count(*) < {limit} THEN 0 ELSE min(views) END FROM ("
            "SELECT views FROM {table} WHERE window_end = {end} "
            "ORDER BY views DESC LIMIT {limit}) l)",
            limit=limit,
            table=table,
            end=moment_param(end),
        )
        return part, sql(
            "SELECT {column}, views FROM ("
            "SELECT {column}, sum(views) AS views FROM ("
            "SELECT {column}, views FROM {table} WHERE window_end = {end} "
            "AND views >= {least} - (SELECT coalesce(max(views), 0) FROM {added}) "
            "UNION ALL SELECT {column}, views FROM {added}) u "
            "GROUP BY {column} HAVING sum(views) >= {least}) k",
            column=column,
            table=table,
            end=moment_param(end),
            least=least,
            added=added,
        )

    def blog_parts() -> list[tuple[str, SQL]]:
        """The blogs' rows of the window under the filters."""
        by_blog = rows("b", "blog_id", RECENT_BLOG, RECENT_WINDOW_BLOG, blocks=True)
        if not spec.countries_filtered:
            return by_blog
        if spec.country_codes is not None:
            excluded = set(spec.exclude_country_codes or ())
            kept = tuple(code for code in spec.country_codes if code not in excluded)
            if not kept:
                return []
            return rows("b", "blog_id", RECENT_BLOG_COUNTRY, RECENT_WINDOW_BLOG_COUNTRY, only=kept)
        return by_blog + rows(
            "b",
            "blog_id",
            RECENT_BLOG_COUNTRY,
            RECENT_WINDOW_BLOG_COUNTRY,
            only=tuple(sorted(spec.exclude_country_codes or ())),
            negate=True,
        )

    # The tail's views are added to each part, per minute, blog or country (the window rows'
    # parts add them themselves).
    tail_parts = ["minute", "blog_id", "country_id"]
    if not author and not spec.countries_filtered:
        # No filter: the minutes from their totals; the countries and blogs from the window
        # rows when they sum this window (absorb keeps them as it moves the watermark).
        parts = rows("m", "minute", RECENT_TOTAL)
        if windows_hold:
            parts += [ranked("c", RECENT_WINDOW_COUNTRY), ranked("b", RECENT_WINDOW_BLOG)]
            tail_parts = ["minute"]
        else:
            parts += rows("c", "country_id", RECENT_COUNTRY)
            parts += rows("b", "blog_id", RECENT_BLOG, blocks=True)
    else:
        minutes = RECENT_COUNTRY
        if author:
            minutes = RECENT_BLOG_COUNTRY if spec.countries_filtered else RECENT_BLOG
        parts = rows("m", "minute", minutes)
        if author:
            parts += rows("c", "country_id", RECENT_BLOG_COUNTRY, RECENT_WINDOW_BLOG_COUNTRY)
        else:
            parts += rows("c", "country_id", RECENT_COUNTRY, RECENT_WINDOW_COUNTRY)
        parts += blog_parts()
    parts += [
        (part, tail_by(name(kept)))
        for part, kept in (("m", "minute"), ("b", "blog_id"), ("c", "country_id"))
        if kept in tail_parts
    ]
    # The tail (views above the per-minute rows' own watermark) is found through the primary
    # key, behind a fence (OFFSET 0, as the summaries' tail), then cut to the window: with the
    # window's condition beside it, PostgreSQL may take the viewed_at index on stale
    # statistics (a burst of new views not analyzed yet) and read every view of the window.
    # Only the raw partitions of the window's month(s) are planned and read (whole months, as
    # for the summaries' tail: 0.41 -> 0.13 ms of planning with 16 partitions, and more with
    # every month kept).
    pending = sql(
        "SELECT {minute} AS minute, blog_id, country_id FROM ("
        "SELECT viewed_at, blog_id, country_id FROM {raw} WHERE {where}{fence}) p "
        "WHERE viewed_at >= {low} AND viewed_at < {high}",
        minute=minute_start_of(SQL("viewed_at")),
        raw=name(RAW),
        where=all_of(
            [
                sql("id > {watermark}", watermark=facts.snapshot.recent_watermark),
                *_partition_bounds(
                    start.astimezone(UTC).date(),
                    (end - timedelta(microseconds=1)).astimezone(UTC).date(),
                ),
                *facts._filters(("blog_id", "country_id")),
            ]
        ),
        fence=SQL(" OFFSET 0" if postgres() else " LIMIT -1 OFFSET 0"),
        low=moment_param(start),
        high=moment_param(end),
    )
    if postgres():
        # Read once and counted per minute, per blog and per country in one pass (the other
        # two keys are NULL in each row; none of the three is NULL in a raw view), without
        # storing the tail's views first (a CTE read three times was stored): 5,000 tail views
        # counted in 3.0 instead of 4.5 ms (EXPLAIN ANALYZE, 10 M views); the whole statement
        # 9.6-9.9 -> 7.4 ms with the partition bounds above, 4.8 -> 4.4 ms with 1,000.
        tail = sql(
            "tail_keys AS (SELECT minute, blog_id, country_id, count(*) AS views FROM "
            "({pending}) t GROUP BY GROUPING SETS ((minute), (blog_id), (country_id)))",
            pending=pending,
        )
    else:
        tail = sql("tail AS ({pending})", pending=pending)
    # Each key is summed on its own, the blogs and countries cut to the ``limit`` first (a
    # bounded sort of each, where one ranking over every part sorted all their rows), each from
    # its own parts in one grouping as PostgreSQL reads them: a CTE of every part, filtered per
    # key, was stored first and grouped twice (two countries, 4,000 window rows of 2,000
    # blogs: 5.3 -> 3.6 ms).
    ranking = {
        "b": sql(" ORDER BY sum(views) DESC, blog_id LIMIT {limit}", limit=limit),
        "c": sql(
            " ORDER BY sum(views) DESC, {code} LIMIT {limit}",
            code=binary_order(SQL("country_id")),
            limit=limit,
        ),
    }
    ranked_keys = SQL(" UNION ALL ").join(
        sql(
            "SELECT * FROM (SELECT {columns}, sum(views) AS views FROM ({own}) f "
            "GROUP BY {key} HAVING sum(views) > 0{ranking}) {alias}",
            columns=columns(part, key),
            own=SQL(" UNION ALL ").join(own),
            key=name(key),
            ranking=ranking.get(part, SQL("")),
            alias=name(f"ranked_{part}"),
        )
        for part, key in (("m", "minute"), ("b", "blog_id"), ("c", "country_id"))
        if (own := [select for tag, select in parts if tag == part])
    )
    found = fetch_all(
        sql(
            "WITH {ctes} "
            "SELECT r.part, r.minute, r.blog_id, r.country_id, r.views, b.title, {username}, "
            "c.name FROM ({ranked}) r "
            "LEFT JOIN {blog} b ON b.id = r.blog_id LEFT JOIN {user} u ON u.id = b.author_id "
            "LEFT JOIN {country} c ON c.code = r.country_id",
            ctes=SQL(", ").join([tail, *ctes]),
            ranked=ranked_keys,
            username=name(f"u.{USERNAME}"),
            blog=name(BLOG),
            user=name(USER),
            country=name(COUNTRY),
        )
    )
    by_blog = sorted(
        (row for row in found if row[0] == "b"), key=lambda row: (-row[4], int(row[2]))
    )
    by_country = sorted((row for row in found if row[0] == "c"), key=lambda row: (-row[4], row[3]))
    return Recent(
        per_minute={_minute_key(row[1]): int(row[4]) for row in found if row[0] == "m"},
        top_blogs=[
            {"blog_id": int(blog), "title": title, "username": username, "views": int(views)}
            for _, _, blog, _, views, title, username, _ in by_blog
        ],
        top_countries=[
            {"country_code": code, "country_name": country, "views": int(views)}
            for _, _, _, code, views, _, _, country in by_country
        ],
    )


def _recent_from_raw(facts: Facts, start: datetime, end: datetime, limit: int) -> Recent:
    """``recent_views`` from the raw views of the window, absorbed or not, read by
    ``viewed_at`` (its index): when the per-minute levels do not keep the whole window (none
    yet, or absorb has not run for ``RECENT_KEEP``). PostgreSQL counts per minute, per blog
    and per country in one scan of the window (``GROUPING SETS``); SQLite, which has none, in
    three. The cost grows with the window's views (the README's "Measured").
    """
    where = all_of(
        [
            sql("viewed_at >= {low}", low=moment_param(start)),
            sql("viewed_at < {high}", high=moment_param(end)),
            *facts._filters(("blog_id", "country_id")),
        ]
    )
    raw = name(RAW)
    minute = minute_of(SQL("viewed_at"))
    if postgres():
        grouped = fetch_all(
            sql(
                "SELECT {minute} AS minute, blog_id, country_id, count(*) FROM {raw} "
                "WHERE {where} GROUP BY GROUPING SETS ((1), (blog_id), (country_id))",
                minute=minute,
                raw=raw,
                where=where,
            )
        )
        per_minute = [(when, views) for when, blog, code, views in grouped if when is not None]
        by_blog = [(blog, views) for when, blog, code, views in grouped if blog is not None]
        by_country = [(code, views) for when, blog, code, views in grouped if code is not None]
        return _recent(
            per_minute,
            sorted(by_blog, key=lambda found: (-found[1], found[0]))[:limit],
            # Code-point order, as binary_order gives SQL.
            sorted(by_country, key=lambda found: (-found[1], found[0]))[:limit],
        )
    per_minute = fetch_all(
        sql(
            "SELECT {minute}, count(*) FROM {raw} WHERE {where} GROUP BY {minute}",
            minute=minute,
            raw=raw,
            where=where,
        )
    )
    top = "SELECT {key}, count(*) AS views FROM {raw} WHERE {where} GROUP BY {key} "
    top += "ORDER BY views DESC, {key} LIMIT {limit}"
    by_blog = fetch_all(sql(top, key=SQL("blog_id"), raw=raw, where=where, limit=limit))
    by_country = fetch_all(sql(top, key=SQL("country_id"), raw=raw, where=where, limit=limit))
    return _recent(per_minute, by_blog, by_country)


def _recent(
    per_minute: list[tuple[Any, int]],
    by_blog: list[tuple[Any, int]],
    by_country: list[tuple[Any, int]],
) -> Recent:
    """``Recent`` from the counts, with the top blogs' titles and authors and the top
    countries' names (one query each, for those rows only)."""
    blogs: dict[int, tuple[str, str]] = {}
    if by_blog:
        blogs = {
            int(blog_id): (title, username)
            for blog_id, title, username in fetch_all(
                sql(
                    "SELECT b.id, b.title, {username} FROM {blog} b "
                    "JOIN {user} u ON u.id = b.author_id WHERE b.id IN ({ids})",
                    username=name(f"u.{USERNAME}"),
                    blog=name(BLOG),
                    user=name(USER),
                    ids=values([int(blog_id) for blog_id, _ in by_blog]),
                )
            )
        }
    names: dict[str, str] = {}
    if by_country:
        names = dict(
            fetch_all(
                sql(
                    "SELECT code, name FROM {country} WHERE code IN ({codes})",
                    country=name(COUNTRY),
                    codes=values([str(code) for code, _ in by_country]),
                )
            )
        )
    return Recent(
        per_minute={_minute_key(when): int(views) for when, views in per_minute},
        top_blogs=[
            {
                "blog_id": int(blog_id),
                "title": blogs[int(blog_id)][0],
                "username": blogs[int(blog_id)][1],
                "views": int(views),
            }
            for blog_id, views in by_blog
        ],
        top_countries=[
            {"country_code": code, "country_name": names[code], "views": int(views)}
            for code, views in by_country
        ],
    )
