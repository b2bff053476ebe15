"""The raw views table's monthly partitions (PostgreSQL; SQLite keeps a plain table).

Why: the raw table grows by about 1.7 GB per 10 M views and is only ever appended to. Split
by month of ``viewed_at`` (declarative RANGE partitioning), a rebuild or audit of some days reads
their month's partition only, each partition's indexes stay the size of a month, and the raw-view
retention (``rollups.retention``) drops a whole month with a catalog operation instead of a
``DELETE`` that leaves gigabytes of dead rows to vacuum.

The layout:

- ``ingest_blogview`` is the partitioned parent: ``PARTITION BY RANGE (viewed_at)``, one
  partition per UTC month named ``ingest_blogview_pYYYY_MM``, plus ``ingest_blogview_default``
  (the DEFAULT partition) for a view of any month that has none. Ingest accepts any
  ``viewed_at`` in 1900..2100 (up to 5 minutes ahead of now), so no view is ever refused or
  lost for want of a partition: it lands in the default one and is counted like any other.
- PostgreSQL requires the partition key in every unique index, so the primary key is
  ``(id, viewed_at)``. The ids stay unique all the same: one identity sequence on the parent
  draws every id (nothing writes ids of its own but the conversion below, which copies them).
  The absorb watermark (``id > W``) reads each partition's primary-key index, whose first
  column is the id: a few index pages per partition, whatever the partitions hold.
- The project creates the partitions itself: the conversion creates this month's and the
  ``AHEAD_MONTHS`` after it, and one for every month holding views; ``raw_partitions_ensure``
  (a daily beat task, ``seed_data`` for the months it fills) keeps this month and the next ones
  there, and moves views that landed in the default partition into a partition of their own
  month when it creates one (within ``HISTORY_MONTHS``, and not before the retention horizon).
  A partition is created as a table and then attached, which locks the parent only against
  other schema changes (``SHARE UPDATE EXCLUSIVE``): ingest and reads go on.

The unique ``(user, key)`` constraint of idempotency keys is on their own table, which is not
partitioned.
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from core.dates import FIRST_DAY, LAST_DAY
from core.sql import month_start, next_month
from ingest.models import BlogView

logger = logging.getLogger(__name__)

RAW = BlogView._meta.db_table
DEFAULT_PARTITION = f"{RAW}_default"
# Partitions exist for this month and this many after it: the daily task has a month of slack.
AHEAD_MONTHS = 2
# Views of months further back than this (backfill from long ago) stay in the default partition
# rather than each month getting a partition of its own: every partition costs every query that
# cannot prune by month (the tail read ``id > W``, absorb) a little planning and an index probe.
HISTORY_MONTHS = 120
# How long creating or dropping a partition waits for a lock before giving up until the next
# run: a waiting ACCESS EXCLUSIVE request queues every reader and writer behind it.
LOCK_TIMEOUT_MS = 2000
# The PostgreSQL advisory lock key that makes partition changes take turns.
PARTITIONS_LOCK_KEY = 720_190_011
# The columns of the raw table, in its order.
COLUMNS = "id, viewed_at, blog_id, country_id"

_BOUND = re.compile(r"FROM \('(\d{4}-\d{2}-\d{2})[^)]*\) TO \('(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class RawPartition:
    """One partition of the raw table: its name and month (``None`` for the default one)."""

    name: str
    month: date | None


def add_months(month: date, count: int) -> date:
    """The first day of the month ``count`` months after (or before) ``month``'s."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date, last: date) -> list[date]:
    """The first day of every month from ``first``'s to ``last``'s, both included."""
    months = []
    month = month_start(first)
    while month <= last:
        months.append(month)
        month = next_month(month)
    return months


def partition_name(month: date) -> str:
    return f"{RAW}_p{month:%Y_%m}"


def _month_start_moment(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def retention_horizon(*, today: date | None = None) -> date | None:
    """The first day whose raw views ``RAW_RETENTION_MONTHS`` keeps: the first day of the month
    that many months before the current one (``None``: retention is off)."""
    months = settings.RAW_RETENTION_MONTHS
    if not months:
        return None
    today = today or timezone.now().astimezone(UTC).date()
    return max(add_months(month_start(today), -months), FIRST_DAY)


def raw_is_partitioned(cursor: CursorWrapper | None = None) -> bool:
    """Whether the raw table is the partitioned one (PostgreSQL after the conversion)."""
    if connection.vendor != "postgresql":
        return False
    if cursor is None:
        with connection.cursor() as own:
            return raw_is_partitioned(own)
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [RAW])
    row = cursor.fetchone()
    return row is not None and row[0] == "p"


def raw_partitions(cursor: CursorWrapper | None = None) -> list[RawPartition]:
    """The raw table's partitions, monthly ones by month, then the default one (if any)."""
    if not raw_is_partitioned(cursor):
        return []
    if cursor is None:
        with connection.cursor() as own:
            return raw_partitions(own)
    cursor.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        [RAW],
    )
    found = []
    for name, bound in cursor.fetchall():
        match = _BOUND.search(bound)
        found.append(RawPartition(name, date.fromisoformat(match.group(1)) if match else None))
    return sorted(found, key=lambda p: (p.month is None, p.month or FIRST_DAY))


def _months_with_views(cursor: CursorWrapper, table: str, low: date, high: date) -> list[date]:
    """The months in ``low..high`` (month starts) holding views in ``table``: one probe of its
    ``viewed_at`` index per month found (a skip scan), not a scan of the table."""
    cursor.execute(
        "WITH RECURSIVE months (month) AS ("
        f"SELECT (SELECT date_trunc('month', min(viewed_at) AT TIME ZONE 'UTC') FROM {table} "
        "WHERE viewed_at >= %s AND viewed_at < %s) "
        f"UNION ALL SELECT (SELECT date_trunc('month', min(viewed_at) AT TIME ZONE 'UTC') "
        f"FROM {table} WHERE viewed_at >= (months.month + interval '1 month') AT TIME ZONE 'UTC' "
        "AND viewed_at < %s) FROM months WHERE months.month IS NOT NULL) "
        "SELECT month::date FROM months WHERE month IS NOT NULL",
        [_month_start_moment(low), _month_start_moment(high), _month_start_moment(high)],
    )
    return [row[0] for row in cursor.fetchall()]


def _history_window(today: date) -> tuple[date, date]:
    """The months that get partitions of their own: from ``HISTORY_MONTHS`` back (or the
    retention horizon, if later) to ``AHEAD_MONTHS`` ahead; the first and the month after
    the last."""
    current = month_start(today)
    low = max(add_months(current, -HISTORY_MONTHS), FIRST_DAY)
    horizon = retention_horizon(today=today)
    if horizon is not None:
        low = max(low, horizon)
    high = min(add_months(current, AHEAD_MONTHS + 1), next_month(LAST_DAY))
    return low, high


def raw_partitions_ensure(*, months: Iterable[date] = (), today: date | None = None) -> list[date]:
    """Create the missing monthly partitions; return the months created.

    Wanted: this month and the ``AHEAD_MONTHS`` after it, the months of ``months`` (e.g. the
    months a bulk load is about to fill), and every month of the history window whose views
    sit in the default partition, which are moved into the new partition in the same
    transaction (ids unchanged). Each month is its own short transaction; one that cannot get
    its locks within ``LOCK_TIMEOUT_MS`` is left for the next run (its views are in the default
    partition meanwhile, counted like any other). Does nothing on SQLite or on a raw table that
    is not partitioned.
    """
    if not raw_is_partitioned():
        return []
    today = today or timezone.now().astimezone(UTC).date()
    current = month_start(today)
    low, high = _history_window(today)
    wanted = {add_months(current, ahead) for ahead in range(AHEAD_MONTHS + 1)}
    wanted |= {month_start(month) for month in months}
    with connection.cursor() as cursor:
        existing = {p.month for p in raw_partitions(cursor)}
        if None in existing:
            wanted |= set(_months_with_views(cursor, DEFAULT_PARTITION, low, high))
    created = []
    for month in sorted(wanted - existing):
        if not FIRST_DAY <= month <= LAST_DAY:
            continue
        try:
            if _partition_create(month):
                created.append(month)
        except OperationalError:
            logger.warning(
                "raw views: could not create the partition of %s within %d ms (locks held); "
                "the next run will",
                f"{month:%Y-%m}",
                LOCK_TIMEOUT_MS,
                exc_info=True,
            )
    if created:
        logger.info(
            "raw views: created the monthly partition(s) %s",
            ", ".join(f"{month:%Y-%m}" for month in created),
        )
    return created


def _partition_create(month: date) -> bool:
    """Create and attach ``month``'s partition, moving its views out of the default partition;
    return whether it was created (False: another run did it first)."""
    name = partition_name(month)
    low, high = _month_start_moment(month), _month_start_moment(next_month(month))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PARTITIONS_LOCK_KEY])
        cursor.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
        partitions = raw_partitions(cursor)
        if any(p.month == month for p in partitions):
            return False
        cursor.execute(f"CREATE TABLE {name} (LIKE {RAW})")
        # The check lets ATTACH skip scanning the new table for rows outside the month.
        cursor.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_month "
            "CHECK (viewed_at >= %s AND viewed_at < %s)",
            [low, high],
        )
        if any(p.month is None for p in partitions):
            # ATTACH scans the default partition for views of the month (there must be none
            # left) under an ACCESS EXCLUSIVE lock; take it first, so that none arrives between
            # the move and the attach.
            cursor.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
            cursor.execute(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "
                f"WHERE viewed_at >= %s AND viewed_at < %s RETURNING {COLUMNS}) "
                f"INSERT INTO {name} ({COLUMNS}) SELECT {COLUMNS} FROM moved",
                [low, high],
            )
            if cursor.rowcount:
                logger.info(
                    "raw views: moved %d views of %s out of the default partition",
                    cursor.rowcount,
                    f"{month:%Y-%m}",
                )
        cursor.execute(
            f"ALTER TABLE {RAW} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)",
            [low, high],
        )
        cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_month")
    return True


def raw_partition_drop(cursor: CursorWrapper, month: date) -> None:
    """Detach ``month``'s partition and drop it, in the caller's transaction (which has
    checked, holding the partition locked, that nothing in it is still needed)."""
    name = partition_name(month)
    cursor.execute(f"ALTER TABLE {RAW} DETACH PARTITION {name}")
    cursor.execute(f"DROP TABLE {name}")


# --- Converting the plain table (migration ingest 0003) and back ----------------------------


def _table_sequence(cursor: CursorWrapper, table: str) -> str:
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    return str(cursor.fetchone()[0])


def _sequence_position(cursor: CursorWrapper, sequence: str) -> tuple[int, bool]:
    cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
    last_value, is_called = cursor.fetchone()
    return int(last_value), bool(is_called)


def _rename_aside(cursor: CursorWrapper, suffix: str) -> tuple[str, int, bool]:
    """Rename the raw table, its indexes and its id sequence out of the way; return the table's
    new name and its sequence's position."""
    aside = f"{RAW}_{suffix}"
    sequence = _table_sequence(cursor, RAW)
    position = _sequence_position(cursor, sequence)
    cursor.execute(f"ALTER TABLE {RAW} RENAME TO {aside}")
    cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {aside}_id_seq")
    for index in (f"{RAW}_pkey", "blogview_viewed_at", "blogview_blog_viewed_at"):
        cursor.execute(f"ALTER INDEX IF EXISTS {index} RENAME TO {index}_{suffix}")
    return aside, *position


def _indexes_create(cursor: CursorWrapper, primary_key: str) -> None:
    """The raw table's primary key and its model's two indexes (``BlogView.Meta``), built after
    the rows are in (one sort per index instead of an insert per row)."""
    cursor.execute(f"ALTER TABLE {RAW} ADD CONSTRAINT {RAW}_pkey PRIMARY KEY ({primary_key})")
    cursor.execute(f"CREATE INDEX blogview_viewed_at ON {RAW} (viewed_at)")
    cursor.execute(f"CREATE INDEX blogview_blog_viewed_at ON {RAW} (blog_id, viewed_at)")


def _sequence_continue(cursor: CursorWrapper, last_value: int, is_called: bool) -> None:
    """Make the new table's id sequence go on where the old one stopped."""
    sequence = _table_sequence(cursor, RAW)
    cursor.execute("SELECT setval(%s, %s, %s)", [sequence, last_value, is_called])


_TABLE = (
    "CREATE TABLE {table} (id bigint GENERATED BY DEFAULT AS IDENTITY, "
    "viewed_at timestamp with time zone NOT NULL, blog_id bigint NOT NULL, "
    "country_id varchar(2) NOT NULL){partitioning}"
)


def _views_move_back(
    cursor: CursorWrapper, aside: str, last_value: int, is_called: bool, *, primary_key: str
) -> int:
    """The second half of a conversion, either way: copy every view from the table set
    ``aside`` into the new raw table with its id, build the indexes, let the id sequence go on
    where it was, drop the old table; return the views moved."""
    cursor.execute(f"INSERT INTO {RAW} ({COLUMNS}) SELECT {COLUMNS} FROM {aside}")
    moved = cursor.rowcount
    _indexes_create(cursor, primary_key)
    _sequence_continue(cursor, last_value, is_called)
    cursor.execute(f"DROP TABLE {aside}")
    cursor.execute(f"ANALYZE {RAW}")
    return moved


def raw_table_partition(db: BaseDatabaseWrapper, *, today: date | None = None) -> int:
    """Convert the plain raw table, with its views, into the partitioned one; return the views
    moved. Every view keeps its id and the id sequence goes on where it was, so the absorb
    watermark stays valid.

    Holds the raw table exclusively while it copies it (ingest and reads wait): one pass of
    ``INSERT ... SELECT`` routed to the partitions, then the indexes are built (see the README
    for the time per 10 M views). Run inside the migration's transaction: on any error
    nothing has changed.
    """
    today = today or timezone.now().astimezone(UTC).date()
    with db.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {RAW} IN ACCESS EXCLUSIVE MODE")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        aside, last_value, is_called = _rename_aside(cursor, "unpartitioned")
        cursor.execute(
            _TABLE.format(table=RAW, partitioning=" PARTITION BY RANGE (viewed_at)"),
        )
        current = month_start(today)
        low, high = _history_window(today)
        months = {add_months(current, ahead) for ahead in range(AHEAD_MONTHS + 1)}
        months |= set(_months_with_views(cursor, aside, low, high))
        for month in sorted(months):
            cursor.execute(
                f"CREATE TABLE {partition_name(month)} PARTITION OF {RAW} "
                "FOR VALUES FROM (%s) TO (%s)",
                [_month_start_moment(month), _month_start_moment(next_month(month))],
            )
        cursor.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {RAW} DEFAULT")
        return _views_move_back(cursor, aside, last_value, is_called, primary_key="id, viewed_at")


def raw_table_unpartition(db: BaseDatabaseWrapper) -> int:
    """The reverse of ``raw_table_partition``: one plain table with every view and its id;
    return the views moved."""
    with db.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {RAW} IN ACCESS EXCLUSIVE MODE")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        aside, last_value, is_called = _rename_aside(cursor, "partitioned")
        cursor.execute(_TABLE.format(table=RAW, partitioning=""))
        return _views_move_back(cursor, aside, last_value, is_called, primary_key="id")
