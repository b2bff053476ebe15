"""Raw-view retention: drop the raw views of whole months older than ``RAW_RETENTION_MONTHS``
once the summaries hold them.

The trade (README, *Raw storage*): the answers for those months still come, exact, from the
summaries, since reads take raw views only above the absorb watermark (the tail) and for the
last 30 minutes (realtime). What goes is the means to recompute them: a rebuild or a drift
audit of a day before the horizon is refused, there being no raw views left to count from.

A month's raw views go when all of these hold:

- the month lies before the horizon (``ingest.partitions.retention_horizon``: the first day of
  the month ``RAW_RETENTION_MONTHS`` before the current one);
- every view of it is absorbed: its largest id is at most the watermark W, checked with the
  raw table locked (no view can arrive meanwhile) and the state row locked (W cannot move);
- the monthly fold covers it (``monthly_open_from`` after its last day), so the monthly
  (blog, country) rows, which answer for whole months, count it.

On a partitioned raw table (PostgreSQL) the month's partition is detached and dropped; the views
before the horizon in the default partition (late views of a month already dropped, backfill
from long ago) and, on SQLite, in the plain table are deleted under the same conditions. The
state row records the horizon (``raw_retained_from``) in the same transaction, so that a rebuild
that read raw views before the drop finds out in its final swap and fails rather than write
partial sums (``rollups.rebuild``), and no later change of the setting opens those days again.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from core.sql import day_start_param, execute, name, next_month, sql
from ingest.partitions import (
    DEFAULT_PARTITION,
    LOCK_TIMEOUT_MS,
    partition_name,
    raw_is_partitioned,
    raw_partition_drop,
    raw_partitions,
    retention_horizon,
)
from rollups.models import AbsorbState
from rollups.staging import state_locked
from rollups.tables import RAW, STATE_NAME

logger = logging.getLogger(__name__)

# Attempts at a month's locks per run (each waits up to LOCK_TIMEOUT_MS), and the pause between.
LOCK_ATTEMPTS = 3
LOCK_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class RawHorizon:
    """The first day whose raw views are all kept, and why the days before it are not."""

    day: date
    reason: str


def raw_horizon(*, today: date | None = None) -> RawHorizon | None:
    """The first day a rebuild or an audit may reach (``None``: every raw view is kept).

    The later of the configured horizon and the one the retention recorded when it dropped raw
    views (which holds even after ``RAW_RETENTION_MONTHS`` is raised or turned off).
    """
    configured = retention_horizon(today=today)
    recorded = (
        AbsorbState.objects.filter(name=STATE_NAME)
        .values_list("raw_retained_from", flat=True)
        .first()
    )
    if recorded is not None and (configured is None or recorded > configured):
        return RawHorizon(
            recorded, f"the raw views before {recorded} were dropped by the raw-view retention"
        )
    if configured is not None:
        return RawHorizon(
            configured,
            f"the raw-view retention (RAW_RETENTION_MONTHS={settings.RAW_RETENTION_MONTHS}) "
            f"drops the raw views before {configured} once they are summarized",
        )
    return None


@dataclass
class RetentionResult:
    """One retention run: the horizon, the months whose raw views went, the months before it
    kept (with why) and the views deleted one by one (default partition, SQLite)."""

    horizon: date | None
    months_dropped: list[date] = field(default_factory=list)
    months_kept: dict[date, str] = field(default_factory=dict)
    views_deleted: int = 0


def raw_retention_apply(*, today: date | None = None) -> RetentionResult:
    """Drop the raw views before the horizon that the summaries hold (see the module
    docstring); nothing when ``RAW_RETENTION_MONTHS`` is off.

    Each month is one short transaction: the raw table is locked (``ACCESS EXCLUSIVE``, at
    most ``LOCK_TIMEOUT_MS`` of waiting, ``LOCK_ATTEMPTS`` tries) only to check it and detach
    the partition, so ingest and reads pause for milliseconds once a month. A month that is
    not absorbed or folded yet, or whose lock could not be had, is kept for the next run.
    """
    today = today or timezone.now().astimezone(UTC).date()
    horizon = retention_horizon(today=today)
    result = RetentionResult(horizon)
    if horizon is None:
        return result
    if raw_is_partitioned():
        for partition in raw_partitions():
            if partition.month is None or next_month(partition.month) > horizon:
                continue
            kept = _month_drop(partition.month, horizon)
            if kept is None:
                result.months_dropped.append(partition.month)
            else:
                result.months_kept[partition.month] = kept
        table = DEFAULT_PARTITION if any(p.month is None for p in raw_partitions()) else None
    else:
        table = RAW
    if table is not None:
        result.views_deleted = _views_delete(table, horizon)
    logger.info(
        "raw-view retention before %s: dropped %s; kept %s; %d views deleted",
        horizon,
        ", ".join(f"{month:%Y-%m}" for month in result.months_dropped) or "no month",
        ", ".join(f"{month:%Y-%m} ({why})" for month, why in result.months_kept.items())
        or "no month",
        result.views_deleted,
        extra={
            "horizon": horizon.isoformat(),
            "months_dropped": [month.isoformat() for month in result.months_dropped],
            "views_deleted": result.views_deleted,
        },
    )
    return result


def _held(state: AbsorbState, horizon: date) -> None:
    """Record, in the drop's transaction, that raw views before ``horizon`` may be gone."""
    if state.raw_retained_from is None or state.raw_retained_from < horizon:
        state.raw_retained_from = horizon
        state.save(update_fields=["raw_retained_from"])


def _month_drop(month: date, horizon: date) -> str | None:
    """Detach and drop ``month``'s partition if the summaries hold all of it; else say why not."""
    for attempt in range(LOCK_ATTEMPTS):
        if attempt:
            time.sleep(LOCK_RETRY_SECONDS)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                state = state_locked()
                cursor.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                # The parent first: readers and writers reach the partitions through it, so
                # holding it no one holds a partition's lock while waiting for the parent's.
                cursor.execute(f"LOCK TABLE ONLY {RAW} IN ACCESS EXCLUSIVE MODE")
                why = _month_unsummarized(cursor, state, month)
                if why is not None:
                    return why
                raw_partition_drop(cursor, month)
                _held(state, horizon)
                return None
        except OperationalError as error:
            logger.warning(
                "raw-view retention: %s not dropped this time (%s)", f"{month:%Y-%m}", error
            )
    return f"its locks were busy {LOCK_ATTEMPTS} times"


def _month_unsummarized(cursor: CursorWrapper, state: AbsorbState, month: date) -> str | None:
    """Why ``month``'s raw views are not all in the summaries yet, or ``None``."""
    open_from = state.monthly_open_from
    if open_from is not None and open_from < next_month(month):
        return f"the monthly rows count the days before {open_from} only"
    execute(cursor, sql("SELECT max(id) FROM {part}", part=name(partition_name(month))))
    highest = cursor.fetchone()[0]
    if highest is not None and highest > state.absorbed_through_id:
        return f"view {highest} is not absorbed yet (watermark {state.absorbed_through_id})"
    return None


def _views_delete(table: str, horizon: date) -> int:
    """Delete the absorbed and folded views before ``horizon`` from ``table`` (the default
    partition, or SQLite's plain table); return how many."""
    with transaction.atomic(), connection.cursor() as cursor:
        state = state_locked()
        before = horizon
        if state.monthly_open_from is not None:
            before = min(before, state.monthly_open_from)
        execute(
            cursor,
            sql(
                "DELETE FROM {table} WHERE viewed_at < {before} AND id <= {watermark}",
                table=name(table),
                before=day_start_param(before),
                watermark=state.absorbed_through_id,
            ),
        )
        deleted = max(cursor.rowcount, 0)
        if deleted:
            _held(state, horizon)
    return deleted
