"""Celery tasks: thin wrappers around rollups.absorb and rollups.jobs, with stable names (pinned
by tests)."""

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from rollups import absorb, jobs
from rollups.models import RebuildJob

logger = logging.getLogger(__name__)


@shared_task(
    name="rollups.absorb_pending",
    # Idempotent by construction (the watermark moves with the summaries in one transaction), so
    # a message may be redelivered after a worker dies mid-run.
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.ABSORB_SOFT_TIME_LIMIT_SECONDS,
    time_limit=settings.ABSORB_TIME_LIMIT_SECONDS,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
)
def absorb_pending_task() -> int:
    """Absorb every pending raw view into the summaries; return how many.

    A run that absorbed views takes its last bound no sooner than a tenth of the interval after
    it started, so that the lag stays below the interval however fast the run is.
    """
    trail = settings.ROLLUP_INTERVAL_SECONDS * absorb.TRAIL_SHARE
    return absorb.rollups_absorb_pending(trail_seconds=trail).views


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
