"""The drift audit: recount a sample of days from the raw views and compare them with the daily
summaries, group by group.

Absorb and rebuild are meant to keep every summary equal to a recount of the raw views; the
audit checks that they did (a bug, a hand-edited row, a restore of one table without the others
would all show). It reads everything in one snapshot: on PostgreSQL a REPEATABLE READ, READ ONLY
transaction, on SQLite a deferred transaction (one WAL snapshot). In it, the absorb watermark W
says which views the summaries count: exactly those with ``id <= W``. The recount takes only
those, so views committed after the last absorb (the tail) never look like drift.

Each day costs one indexed range read of its raw views (``blogview_viewed_at``) and one read of
its summary rows per level: at 10 M views, tens of milliseconds (``bench/audit_speed.py``).

The days: always yesterday and the first day of each month in range (month boundaries are where
day arithmetic goes wrong), plus ``random_days`` others. Every daily level is compared; the
monthly rows are not (a month's recount reads the whole month). Days before the raw-view
retention horizon (``rollups.retention``) are skipped: their raw views are gone, and a recount
would report every one of their groups as drift.
"""

import logging
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from core.sql import day_param, day_start_param, execute, name, names, postgres, sql
from rollups.models import AbsorbState, RollupAudit
from rollups.retention import raw_horizon
from rollups.tables import LEVELS, RAW, STATE_NAME

logger = logging.getLogger(__name__)

# Most drifting groups an audit keeps (and logs) one by one; the count is always exact.
DRIFTS_KEPT = 1000


@dataclass(frozen=True)
class Drift:
    """A summary group whose views differ from the recount (``found`` 0: the row is missing;
    ``expected`` 0: the row should not exist)."""

    day: date
    table: str
    blog_id: int | None
    country_id: str | None
    expected: int
    found: int

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "table": self.table,
            "blog_id": self.blog_id,
            "country_id": self.country_id,
            "expected": self.expected,
            "found": self.found,
        }


def audit_days_sample(
    *, start: date, end: date, random_days: int, rng: random.Random | None = None
) -> list[date]:
    """The days to recount in ``start..end``: yesterday (UTC) when in range, the first day of
    each month in range, and ``random_days`` more drawn from the rest."""
    if end < start:
        return []
    yesterday = timezone.now().astimezone(UTC).date() - timedelta(days=1)
    chosen = {yesterday} if start <= yesterday <= end else set()
    month = start.replace(day=1)
    while month <= end:
        if month >= start:
            chosen.add(month)
        month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    span = (end - start).days + 1
    rest = span - len(chosen)
    if random_days > 0 and rest > 0:
        rng = rng or random.Random()
        others = [
            start + timedelta(days=offset)
            for offset in range(span)
            if start + timedelta(days=offset) not in chosen
        ]
        chosen.update(rng.sample(others, min(random_days, rest)))
    return sorted(chosen)


@contextmanager
def _snapshot() -> Iterator[None]:
    """One consistent read of raw, summaries and watermark (see the module docstring). Inside
    an outer transaction (tests) the block joins it."""
    if connection.in_atomic_block:
        yield
    elif postgres():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SET LOCAL jit = off")
            yield
    else:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("BEGIN DEFERRED")
            try:
                yield
            finally:
                cursor.execute("COMMIT")


def _day_drifts(cursor: CursorWrapper, day: date, watermark: int) -> tuple[int, list[Drift]]:
    """The views of ``day`` up to ``watermark`` and every daily summary group that differs."""
    execute(
        cursor,
        sql(
            "SELECT blog_id, country_id, count(*) FROM {raw} WHERE viewed_at >= {low} "
            "AND viewed_at < {high} AND id <= {watermark} GROUP BY blog_id, country_id",
            raw=name(RAW),
            low=day_start_param(day),
            high=day_start_param(day + timedelta(days=1)),
            watermark=watermark,
        ),
    )
    base = {(blog, country): count for blog, country, count in cursor.fetchall()}
    drifts = []
    for level in LEVELS:
        expected: Counter[tuple[Any, ...]] = Counter()
        for (blog, country), count in base.items():
            values = {"blog_id": blog, "country_id": country}
            expected[tuple(values[column] for column in level.columns)] += count
        execute(
            cursor,
            sql(
                "SELECT {columns} FROM {table} WHERE day = {day}",
                columns=names((*level.columns, "views")),
                table=name(level.daily),
                day=day_param(day),
            ),
        )
        found = {tuple(row[:-1]): row[-1] for row in cursor.fetchall()}
        for key in sorted(expected.keys() | found.keys(), key=str):
            if expected.get(key, 0) != found.get(key, 0):
                values = dict(zip(level.columns, key, strict=True))
                drifts.append(
                    Drift(
                        day=day,
                        table=level.daily,
                        blog_id=values.get("blog_id"),
                        country_id=values.get("country_id"),
                        expected=expected.get(key, 0),
                        found=found.get(key, 0),
                    )
                )
    return sum(base.values()), drifts


@dataclass(frozen=True)
class AuditResult:
    audit: RollupAudit
    drifts: list[Drift]


def rollups_verify(*, days: list[date]) -> AuditResult:
    """Recount ``days`` from raw in one snapshot, record the audit, log every drifting group.

    Days before the raw-view retention horizon are skipped (not recorded as recounted). The
    recount counts only the views the summaries are meant to hold (``id <=`` the
    snapshot's watermark), so a run concurrent with ingest and absorb reports no false drift.
    """
    started = timezone.now()
    horizon = raw_horizon()
    if horizon is not None and any(day < horizon.day for day in days):
        logger.info(
            "rollup audit: skipping %d day(s) before %s (%s)",
            sum(day < horizon.day for day in days),
            horizon.day,
            horizon.reason,
        )
        days = [day for day in days if day >= horizon.day]
    drifts: list[Drift] = []
    views = 0
    with _snapshot(), connection.cursor() as cursor:
        execute(
            cursor,
            sql(
                "SELECT absorbed_through_id FROM {state} WHERE name = {name}",
                state=name(AbsorbState._meta.db_table),
                name=STATE_NAME,
            ),
        )
        row = cursor.fetchone()
        watermark = int(row[0]) if row else 0
        for day in days:
            day_views, day_drifts = _day_drifts(cursor, day, watermark)
            views += day_views
            drifts.extend(day_drifts)
    audit = RollupAudit.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        days=[day.isoformat() for day in days],
        absorbed_through_id=watermark,
        views_recounted=views,
        drift_groups=len(drifts),
        drift_days=sorted({drift.day.isoformat() for drift in drifts}),
        drifts=[drift.as_json() for drift in drifts[:DRIFTS_KEPT]],
    )
    for drift in drifts[:DRIFTS_KEPT]:
        logger.error(
            "rollup drift: %s %s blog %s country %s: expected %d views, found %d",
            drift.table,
            drift.day,
            drift.blog_id,
            drift.country_id,
            drift.expected,
            drift.found,
            extra={"drift": drift.as_json(), "audit_id": audit.pk},
        )
    logger.info(
        "rollup audit %d: %d day(s), %d views recounted through id %d, %d drifting group(s)",
        audit.pk,
        len(days),
        views,
        watermark,
        len(drifts),
        extra={
            "audit_id": audit.pk,
            "days": len(days),
            "views": views,
            "absorbed_through_id": watermark,
            "drift_groups": len(drifts),
        },
    )
    return AuditResult(audit=audit, drifts=drifts)


def drift_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Consecutive days as ``(first, last)`` ranges, in order."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] + timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def audit_repair(*, audit: RollupAudit, requested_by: Any = None) -> list[str]:
    """Queue a rebuild of the days ``audit`` found drifting (one job per run of consecutive
    days); return the job ids, also kept on the audit. A job already doing a range answers for
    it; an overlapping one raises ``RebuildJobConflict`` (409)."""
    from rollups.jobs import rebuild_job_create

    days = [date.fromisoformat(day) for day in audit.drift_days]
    job_ids = []
    for first, last in drift_ranges(days):
        answer = rebuild_job_create(start_date=first, end_date=last, requested_by=requested_by)
        job_ids.append(str(answer.job.pk))
    audit.repair_jobs = [*audit.repair_jobs, *job_ids]
    audit.save(update_fields=["repair_jobs"])
    return job_ids


def audit_latest() -> RollupAudit | None:
    """The last audit that finished."""
    return RollupAudit.objects.order_by("-finished_at").first()
