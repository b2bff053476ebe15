"""Celery tasks: thin wrappers around rollups.absorb and rollups.jobs, with stable names (pinned
by tests)."""

import logging
from datetime import UTC, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from rollups import absorb, audit, jobs, retention, tending
from rollups.models import RebuildJob
from worker.retries import RETRIED_ON_DATABASE_ERRORS

logger = logging.getLogger(__name__)


# The two absorbs are idempotent by construction (each watermark moves with its rows in one
# transaction), so a message may be redelivered after a worker dies mid-run.
ABSORB_TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": settings.ABSORB_SOFT_TIME_LIMIT_SECONDS,
    "time_limit": settings.ABSORB_TIME_LIMIT_SECONDS,
    **RETRIED_ON_DATABASE_ERRORS,
}


@shared_task(name="rollups.absorb_pending", **ABSORB_TASK_OPTIONS)
def absorb_pending_task(triggered: bool = False) -> int:
    """Absorb every pending raw view into the summaries; return how many. (The per-minute
    levels are absorbed by ``rollups.absorb_recent``, beside it: the worker's two processes run
    the two at once.)

    A run from beat that absorbed views takes its last bound no sooner than a tenth of the
    interval after it started, so that the lag stays below the interval however fast the run
    is. A run that ingest sent (``triggered``, ``rollups.trigger``) ends as soon as it caught
    up: the next batch past the threshold sends another.
    """
    trail = 0.0 if triggered else settings.ROLLUP_INTERVAL_SECONDS * absorb.TRAIL_SHARE
    return absorb.rollups_absorb_pending(trail_seconds=trail, recent=False).views


@shared_task(name="rollups.absorb_recent", **ABSORB_TASK_OPTIONS)
def absorb_recent_task() -> int:
    """Absorb every pending raw view of the last hour into the per-minute levels (realtime);
    return how many."""
    return absorb.rollups_absorb_recent().views


@shared_task(
    name="rollups.rebuild_job",
    soft_time_limit=settings.REBUILD_SOFT_TIME_LIMIT_SECONDS,
    time_limit=settings.REBUILD_TIME_LIMIT_SECONDS,
)
def rebuild_job_task(job_id: str) -> None:
    """Run one rebuild job. Not retried: a failed job records its error and can be resubmitted.
    At the soft time limit the job ends failed, saying so."""
    try:
        jobs.rebuild_job_run(job_id=job_id)
    except RebuildJob.DoesNotExist:
        logger.warning("rebuild job %s does not exist (deleted?); nothing to do", job_id)


@shared_task(name="rollups.reap_rebuild_jobs")
def reap_rebuild_jobs_task() -> int:
    """Fail the rebuild jobs that no worker is running: running ones whose worker stopped
    reporting, queued ones that no worker started in time. Limits: the CELERY_TASK_* defaults."""
    return jobs.rebuild_jobs_reap()


@shared_task(
    name="rollups.verify_rollups",
    soft_time_limit=settings.AUDIT_SOFT_TIME_LIMIT_SECONDS,
    time_limit=settings.AUDIT_SOFT_TIME_LIMIT_SECONDS + 30,
)
def verify_rollups_task() -> int:
    """The periodic drift audit (``rollups.audit``) of the last ``AUDIT_RANGE_DAYS`` days (from
    the raw-view retention horizon at the earliest); return the drifting groups found. With
    ``AUDIT_REPAIR``, queues a rebuild of their days."""
    yesterday = timezone.now().astimezone(UTC).date() - timedelta(days=1)
    start = yesterday - timedelta(days=settings.AUDIT_RANGE_DAYS - 1)
    horizon = retention.raw_horizon()
    if horizon is not None:
        # The days before it have no raw views left to recount.
        start = max(start, horizon.day)
    days = audit.audit_days_sample(
        start=start,
        end=yesterday,
        random_days=settings.AUDIT_RANDOM_DAYS,
    )
    result = audit.rollups_verify(days=days)
    if result.drifts and settings.AUDIT_REPAIR:
        audit.audit_repair(audit=result.audit)
    return len(result.drifts)


@shared_task(
    name="rollups.apply_raw_retention",
    **RETRIED_ON_DATABASE_ERRORS,
)
def apply_raw_retention_task() -> int:
    """Drop the raw views of the whole months before the ``RAW_RETENTION_MONTHS`` horizon that
    the summaries hold (``rollups.retention``); return the months dropped. Nothing when the
    setting is off. Limits: the CELERY_TASK_* defaults (a month's drop is a catalog change)."""
    return len(retention.raw_retention_apply().months_dropped)


@shared_task(name="rollups.tend_recent_tables", **RETRIED_ON_DATABASE_ERRORS)
def tend_recent_tables_task() -> int:
    """Vacuum and analyze the realtime tables that are due (``rollups.tending``); return how
    many statements ran."""
    return len(tending.recent_tables_tend())
