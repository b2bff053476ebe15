"""SQL as values: a fragment carries its text and the parameters it binds, so that pieces
compose without a list of parameters kept in order by hand; and the few pieces that differ
between PostgreSQL and the embedded SQLite, shared by the rollups (write) and analytics (read)
sides so that both compute days and months alike.

    >>> country = sql("country_id IN ({codes})", codes=values(["DE", "FR"]))
    >>> since = sql("day >= {low}", low="2025-01-01")
    >>> query = sql("SELECT * FROM {t} WHERE {where}", t=name("t"), where=all_of([since, country]))
    >>> query.text
    'SELECT * FROM t WHERE day >= %s AND country_id IN (%s, %s)'
    >>> query.params
    ('2025-01-01', 'DE', 'FR')

A value is written where it is used (``{low}``), and binds as ``%s`` there: it is never pasted
into the text. Only fragments (``SQL``) and checked identifiers (``name``) become text. This is
``psycopg2.sql``'s idea, kept small so that it works on SQLite too.
"""

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import connection, connections
from django.db.backends.utils import CursorWrapper

from core.routers import read_alias

Param = int | str | date | datetime | None

_FORMATTER = string.Formatter()
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


@dataclass(frozen=True, slots=True)
class SQL:
    """A piece of SQL text and the parameters its ``%s`` placeholders take, in their order."""

    text: str
    params: tuple[Param, ...] = ()

    def __add__(self, other: "SQL") -> "SQL":
        return SQL(self.text + other.text, self.params + other.params)

    def join(self, parts: Iterable["SQL"]) -> "SQL":
        """The parts with this fragment between them (``SQL(", ").join(...)``)."""
        pieces = list(parts)
        return SQL(
            self.text.join(piece.text for piece in pieces),
            tuple(value for piece in pieces for value in piece.params),
        )


def sql(template: str, **pieces: "SQL | Param") -> SQL:
    """``template`` with each ``{name}`` filled: a ``SQL`` piece goes in as its text (with its
    parameters), any other value is bound as ``%s``. The parameters come out in the order the
    placeholders appear, however the pieces were built."""
    text: list[str] = []
    params: list[Param] = []
    for literal, field, spec, conversion in _FORMATTER.parse(template):
        if "%" in literal:
            # A placeholder written by hand would take a parameter out of its piece's order.
            raise ValueError(f"SQL template text holds '%': {template!r}")
        text.append(literal)
        if field is None:
            continue
        if spec or conversion or field not in pieces:
            raise KeyError(f"SQL template field {{{field}}} has no plain piece")
        piece = pieces[field]
        if isinstance(piece, SQL):
            text.append(piece.text)
            params.extend(piece.params)
        else:
            text.append("%s")
            params.append(piece)
    return SQL("".join(text), tuple(params))


def name(identifier: str) -> SQL:
    """A table or column name (``table`` or ``alias.column``), checked to be one."""
    if not _IDENTIFIER.fullmatch(identifier):
        raise ValueError(f"not an SQL identifier: {identifier!r}")
    return SQL(identifier)


def names(identifiers: Iterable[str], prefix: str = "") -> SQL:
    """A comma-separated list of names, each with ``prefix`` (e.g. ``"t."``) if given."""
    return SQL(", ").join(name(prefix + identifier) for identifier in identifiers)


def values(items: Sequence[Param]) -> SQL:
    """``%s, %s, ...`` binding ``items`` (for ``IN (...)``; ``items`` must not be empty)."""
    if not items:
        raise ValueError("an SQL value list needs at least one value")
    return SQL(", ".join(["%s"] * len(items)), tuple(items))


def ordinals(count: int) -> SQL:
    """``1, 2, ..., count``: the first ``count`` select-list columns, for GROUP BY / ORDER BY."""
    return SQL(", ".join(str(n) for n in range(1, count + 1)))


def all_of(conditions: Iterable[SQL]) -> SQL:
    """The conditions joined by ``AND``; ``true`` when there are none."""
    found = list(conditions)
    return SQL(" AND ").join(found) if found else SQL("true")


def where_clause(conditions: Iterable[SQL]) -> SQL:
    """`` WHERE a AND b``, or nothing when there are no conditions: PostgreSQL flattens a
    ``UNION ALL`` branch into the outer query only when the branch has no WHERE at all (a
    ``WHERE true`` costs it a subquery scan, measured +4-6% on the unfiltered reads)."""
    found = list(conditions)
    return sql(" WHERE {conditions}", conditions=all_of(found)) if found else SQL("")


def execute(cursor: CursorWrapper, query: SQL) -> None:
    cursor.execute(query.text, query.params)


def fetch_all(query: SQL) -> list[tuple[Any, ...]]:
    """Run ``query`` and return every row: on the primary, or inside
    ``core.routers.reading_from`` on the database it names (an analytics read on a replica)."""
    with connections[read_alias()].cursor() as cursor:
        cursor.execute(query.text, query.params)
        return cursor.fetchall()


def fetch_one(query: SQL) -> tuple[Any, ...]:
    """Run ``query`` (which returns one row, on the same database as ``fetch_all``) and return
    that row."""
    with connections[read_alias()].cursor() as cursor:
        cursor.execute(query.text, query.params)
        row = cursor.fetchone()
        assert row is not None, "the query returned no row"
        return tuple(row)


# --- What differs between PostgreSQL and SQLite ---------------------------------------------------


def postgres() -> bool:
    return connection.vendor == "postgresql"


def binary_order(column: SQL) -> SQL:
    """``column`` compared by code point, as API.md orders ties (PostgreSQL's default collation
    would put "ana" before "Zed"; SQLite compares code points already)."""
    return column + SQL(' COLLATE "C"') if postgres() else column


def day_of(column: SQL) -> SQL:
    """The UTC calendar day of a timestamp column."""
    if postgres():
        return sql("({column} AT TIME ZONE 'UTC')::date", column=column)
    # Django keeps SQLite datetimes as naive UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
    return sql("substr({column}, 1, 10)", column=column)


def month_of(day_column: SQL) -> SQL:
    """The first day of the month of a date column."""
    if postgres():
        return sql("date_trunc('month', {day})::date", day=day_column)
    return sql("substr({day}, 1, 8) || '01'", day=day_column)


def year_of(day_column: SQL) -> SQL:
    """The first day of the year of a date column."""
    if postgres():
        return sql("date_trunc('year', {day})::date", day=day_column)
    return sql("substr({day}, 1, 5) || '01-01'", day=day_column)


def next_month_of(column: SQL) -> SQL:
    """The first day of the month after a month-start date column."""
    if postgres():
        return sql("({month} + interval '1 month')::date", month=column)
    return sql("date({month}, '+1 month')", month=column)


def next_year_of(column: SQL) -> SQL:
    """The first day of the year after a year-start date column."""
    if postgres():
        return sql("({year} + interval '1 year')::date", year=column)
    return sql("date({year}, '+1 year')", year=column)


def day_param(day: date) -> date | str:
    """A day as a date column compares with it."""
    return day if postgres() else day.isoformat()


def day_start_param(day: date) -> datetime | str:
    """The instant a UTC day starts, as a timestamp column compares with it."""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return moment if postgres() else moment.replace(tzinfo=None).isoformat(" ")


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def minute_of(column: SQL) -> SQL:
    """The UTC minute of a timestamp column: a naive UTC timestamp (PostgreSQL; ``to_char``
    would cost twice as much per row) or text ``YYYY-MM-DD HH:MM`` (SQLite)."""
    if postgres():
        return sql("date_trunc('minute', {column} AT TIME ZONE 'UTC')", column=column)
    return sql("substr({column}, 1, 16)", column=column)


def moment_param(moment: datetime) -> datetime | str:
    """An aware instant as a timestamp column compares with it."""
    utc = moment.astimezone(UTC)
    return utc if postgres() else utc.replace(tzinfo=None).isoformat(" ")


def minute_start_of(column: SQL) -> SQL:
    """The first instant of a timestamp column's UTC minute, of the column's own type (the
    per-minute summaries store it): ``timestamptz`` (PostgreSQL) or text ``YYYY-MM-DD HH:MM:00``
    (SQLite, as Django stores a whole-minute datetime). On PostgreSQL ``date_bin`` (whole
    minutes from a UTC minute) rather than ``date_trunc('minute', ...)``, which goes through the
    session's time zone: grouping the 1 M views of an absorb by minute took 80 ms less."""
    if postgres():
        return block_start_of(column, 1)
    return sql("substr({column}, 1, 16) || ':00'", column=column)


def block_start_of(column: SQL, minutes: int) -> SQL:
    """The first instant of the ``minutes``-long UTC block (aligned to the hour) holding a
    timestamp column's instant, of the column's own type (see ``minute_start_of``)."""
    if postgres():
        return sql(
            "date_bin({width}::interval, {column}, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
            width=f"{int(minutes)} minutes",
            column=column,
        )
    return sql(
        "substr({column}, 1, 14) || substr('0' || (CAST(substr({column}, 15, 2) AS integer) "
        "/ {n} * {n}), -2) || ':00'",
        column=column,
        n=int(minutes),
    )


# --- Values the database returned ------------------------------------------------------------


def as_date(value: object) -> date:
    """A day as the database returned it (``date``, or ISO text on SQLite)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def as_moment(value: object) -> datetime:
    """An instant as the database returned it (``datetime``, or UTC text on SQLite), aware."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
