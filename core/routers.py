"""Where a query runs: the primary, or a streaming read replica for the analytics reads.

With ``DATABASE_REPLICA_URL`` set, an analytics answer that is not in the cache is computed on
the ``replica`` database alias; everything else (ingest, absorb, rebuild, the audit, the admin,
the rollup status, authentication) stays on the primary (``default``). An answer read on the
replica is exact as of the replica's position: the summaries and the watermark move in one
transaction on the primary and the tail is read in the same snapshot, so a replica that lags
shows an older state, never a mix. What it cannot give is read-your-writes, so a read sent with
``Cache-Control: no-cache`` (which promises every view committed before it) goes to the
primary, and so does every read while the replica is more than
``DATABASE_REPLICA_MAX_LAG_SECONDS`` behind or cannot be reached.

The choice is made once per answer (``analytics_read_source``) and holds for the block of
``reading_from``: the planner's raw SQL runs on ``read_alias()`` and the ORM's reads follow the
router below, so one answer's queries all run on one connection, in one snapshot.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, Error, connections
from django.utils import timezone

from core.metrics import ANALYTICS_READS

logger = logging.getLogger(__name__)

REPLICA = "replica"
# After the replica failed to answer, this process reads from the primary for this long before
# trying it again: a replica that is down must not cost every read a connection attempt.
REPLICA_RETRY_SECONDS = 5.0

# Whether the replica has replayed everything it received, and the primary's commit time of the
# last transaction it replayed (PostgreSQL's recovery information functions).
_POSITION_SQL = (
    "SELECT pg_is_in_recovery(), "
    "coalesce(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false), "
    "pg_last_xact_replay_timestamp()"
)


@dataclass(frozen=True)
class ReadSource:
    """The database alias an answer is read from, and what it is exact as of: ``None`` means
    now (the primary, or a replica that has replayed all it received), else the commit time
    of the last transaction a lagging replica replayed."""

    alias: str
    as_of: datetime | None = None


PRIMARY = ReadSource(DEFAULT_DB_ALIAS)

_source: ContextVar[ReadSource | None] = ContextVar("analytics_read_source", default=None)
_replica_failed_at = 0.0


class ReplicaRouter:
    """Django's database router: reads inside ``reading_from`` go to its alias; every write,
    every other read and every migration go to the primary."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        source = _source.get()
        return None if source is None else source.alias

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        # The replica holds the primary's rows: an object read there is the primary's object.
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


def read_source() -> ReadSource:
    """The source of the answer being computed (the primary outside ``reading_from``)."""
    return _source.get() or PRIMARY


def read_alias() -> str:
    return read_source().alias


@contextmanager
def reading_from(source: ReadSource) -> Iterator[ReadSource]:
    """Run the block's reads on ``source``."""
    token = _source.set(source)
    try:
        yield source
    finally:
        _source.reset(token)


def analytics_read_source(*, fresh: bool) -> ReadSource:
    """Where an analytics answer is computed: the replica when one is configured, answers, and is
    at most ``DATABASE_REPLICA_MAX_LAG_SECONDS`` behind, unless the caller wants ``fresh`` data
    (read-your-writes), which only the primary has. Costs one query on the replica."""
    global _replica_failed_at
    if not replica_configured():
        return PRIMARY
    if fresh:
        ANALYTICS_READS.labels("primary").inc()
        return PRIMARY
    if time.monotonic() - _replica_failed_at < REPLICA_RETRY_SECONDS:
        ANALYTICS_READS.labels("primary_replica_down").inc()
        return PRIMARY
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(_POSITION_SQL)
            in_recovery, caught_up, replayed_at = cursor.fetchone()
    except Error:
        logger.warning("read replica unavailable: reading from the primary", exc_info=True)
        _replica_failed_at = time.monotonic()
        ANALYTICS_READS.labels("primary_replica_down").inc()
        return PRIMARY
    if not in_recovery or caught_up:
        # Not a standby (promoted, or the primary itself), or one that has replayed all it
        # received: current but for the WAL in flight.
        ANALYTICS_READS.labels("replica").inc()
        return ReadSource(REPLICA)
    lag = None if replayed_at is None else (timezone.now() - replayed_at).total_seconds()
    if lag is None or lag > settings.DATABASE_REPLICA_MAX_LAG_SECONDS:
        ANALYTICS_READS.labels("primary_replica_lag").inc()
        return PRIMARY
    ANALYTICS_READS.labels("replica").inc()
    return ReadSource(REPLICA, as_of=replayed_at)
