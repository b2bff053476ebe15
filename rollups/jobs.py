"""Rebuild jobs: create one per request (or find the one doing it), run it in a worker,
reap the ones no worker runs.

The only module that sends a task: it imports ``rollups.tasks`` inside the function that
sends, since the tasks call back into it."""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.exceptions import ApplicationError
from core.sql import postgres
from rollups.models import RebuildJob
from rollups.rebuild import (
    REBUILD_FIRST_DAY,
    REBUILD_LAST_DAY,
    rebuild_range_errors,
    rollups_rebuild,
)

logger = logging.getLogger(__name__)

# A running rebuild job beats this many times per REBUILD_STALE_SECONDS (see _job_heartbeat).
HEARTBEATS_PER_STALE = 6
# How long the end of a rebuild job waits for a beat already under way (see _job_heartbeat).
HEARTBEAT_JOIN_SECONDS = 5.0
# Sending a rebuild job's task must not hang a request on a broker that does not answer: each
# attempt's socket waits at most this long, and the send is tried at most 3 times, about 4 s in all.
PUBLISH_SOCKET_SECONDS = 1.0
# What a 503 for a broker that could not take a job tells the client to wait before trying again.
BROKER_RETRY_AFTER_SECONDS = 10
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
ACTIVE_JOB_STATES = (RebuildJob.State.QUEUED, RebuildJob.State.RUNNING)
# Key of the PostgreSQL advisory lock that makes rebuild requests take turns (any fixed number
# that nothing else in the database uses).
JOBS_LOCK_KEY = 720_190_009


@dataclass(frozen=True)
class RebuildJobRequest:
    """The job that answers a rebuild request: a new one, or the queued or running one of the
    same range (``created`` false)."""

    job: RebuildJob
    created: bool


def _range_text(start_date: date | None, end_date: date | None) -> str:
    return f"{start_date or 'earliest data'}..{end_date or 'latest data'}"


class RebuildJobConflict(ApplicationError):
    """A queued or running job covers part of the requested range, and not exactly that range."""

    def __init__(self, job: RebuildJob) -> None:
        super().__init__(
            f"Rebuild job {job.pk} ({_range_text(job.start_date, job.end_date)}, {job.state}) "
            "overlaps the requested range. Wait until it ends, or request exactly its range "
            "to follow it.",
            status=409,
            code="rebuild_overlaps",
            details=[{"field": None, "reason": f"overlaps rebuild job {job.pk}"}],
        )
        self.job = job


class RebuildJobNotQueued(ApplicationError):
    """The broker did not take a new job's task: the job is failed, no worker will run it."""

    def __init__(self, *, job_id: str, reason: str) -> None:
        super().__init__(
            f"The task broker is unavailable: rebuild job {job_id} could not be queued and is "
            "marked failed. Try again once the broker is back.",
            status=503,
            code="broker_unavailable",
            details=[{"field": None, "reason": reason}],
            headers={"Retry-After": str(BROKER_RETRY_AFTER_SECONDS)},
        )
        self.job_id = job_id


def _jobs_lock() -> None:
    """Make rebuild requests take turns until this transaction ends. SQLite needs nothing: its
    transactions begin IMMEDIATE, holding the database's one write lock."""
    if postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [JOBS_LOCK_KEY])


def _rebuild_job_send(*, job_id: str, expires: datetime) -> None:
    """Send a committed job's task; if the broker cannot take it, fail the job and raise
    ``RebuildJobNotQueued``. Bounded in time by ``PUBLISH_SOCKET_SECONDS`` and
    ``PUBLISH_RETRY_POLICY``."""
    from rollups.tasks import rebuild_job_task

    timeouts = {
        "socket_timeout": PUBLISH_SOCKET_SECONDS,
        "socket_connect_timeout": PUBLISH_SOCKET_SECONDS,
    }
    try:
        with rebuild_job_task.app.connection_for_write(transport_options=timeouts) as broker:
            rebuild_job_task.apply_async(
                (job_id,),
                producer=broker.Producer(auto_declare=False),
                expires=expires,
                # The message carries the limits the worker applies (the sender's): these
                # settings, read now.
                soft_time_limit=settings.REBUILD_SOFT_TIME_LIMIT_SECONDS,
                time_limit=settings.REBUILD_TIME_LIMIT_SECONDS,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
    except Exception as exc:
        # Whatever stopped the send (broker down, refusing, misconfigured), no worker will get
        # this job: say so on the job rather than leave it queued.
        logger.exception("could not send rebuild job %s to the broker", job_id)
        reason = f"{type(exc).__name__}: {exc}"
        RebuildJob.objects.filter(id=job_id, state=RebuildJob.State.QUEUED).update(
            state=RebuildJob.State.FAILED,
            error=f"The task broker could not take this job, so no worker will run it "
            f"({reason}). Start a new one once the broker is back.",
            finished_at=timezone.now(),
        )
        raise RebuildJobNotQueued(job_id=job_id, reason=reason) from exc


def rebuild_job_create(
    *, start_date: date | None, end_date: date | None, requested_by: Any = None
) -> RebuildJobRequest:
    """Queue a rebuild of ``start_date..end_date`` (an open end: the earliest / latest data), or
    find the job already doing it.

    - A queued or running job of exactly this range answers the request (``created`` false).
    - A queued or running job of an overlapping other range: ``RebuildJobConflict`` (409).
    - Otherwise a new job is recorded, and its task is sent once the record is committed (when
      the caller's transaction commits, if there is one). The message expires when the reaper
      fails a job that no worker started (``REBUILD_QUEUE_TIMEOUT_SECONDS``). If the broker does
      not take it, the job is failed with the reason and ``RebuildJobNotQueued`` (503) is raised
      from that commit.

    Requests take turns (an advisory lock on PostgreSQL), so concurrent identical requests make
    one job. A range outside ``REBUILD_FIRST_DAY..REBUILD_LAST_DAY``, or reversed, raises
    ``ApplicationError`` (400) naming the field.
    """
    errors = rebuild_range_errors(start_date=start_date, end_date=end_date)
    if errors:
        raise ApplicationError(
            "Invalid rebuild range.",
            details=[{"field": field, "reason": reason} for field, reason in errors.items()],
        )
    first = start_date or REBUILD_FIRST_DAY
    last = end_date or REBUILD_LAST_DAY
    with transaction.atomic():
        _jobs_lock()
        # A job whose worker died must not block this request until the next periodic reap.
        rebuild_jobs_reap()
        overlapping = (
            RebuildJob.objects.filter(state__in=ACTIVE_JOB_STATES)
            .filter(Q(start_date__isnull=True) | Q(start_date__lte=last))
            .filter(Q(end_date__isnull=True) | Q(end_date__gte=first))
            .order_by("created_at")
        )
        for active in overlapping:
            if (active.start_date, active.end_date) == (start_date, end_date):
                return RebuildJobRequest(job=active, created=False)
        conflict = overlapping.first()
        if conflict is not None:
            raise RebuildJobConflict(conflict)
        job = RebuildJob.objects.create(
            start_date=start_date,
            end_date=end_date,
            requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
        )
        job_id = str(job.id)
        expires = job.created_at + timedelta(seconds=settings.REBUILD_QUEUE_TIMEOUT_SECONDS)
        transaction.on_commit(lambda: _rebuild_job_send(job_id=job_id, expires=expires))
    return RebuildJobRequest(job=job, created=True)


def rebuild_job_run(*, job_id: str) -> RebuildJob:
    """Run a queued rebuild job, recording its state, progress, timings and any error.

    A job that is not queued (already run, reaped, or a redelivered message) is left as it is.
    A job stopped by the task's soft time limit ends failed, saying so.
    Raises ``RebuildJob.DoesNotExist`` for an unknown id.
    """
    claimed = RebuildJob.objects.filter(id=job_id, state=RebuildJob.State.QUEUED).update(
        state=RebuildJob.State.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    if not claimed:
        job = RebuildJob.objects.get(id=job_id)
        logger.warning("rebuild job %s is %s, not queued; skipped", job_id, job.state)
        return job

    def report(fraction: float) -> None:
        RebuildJob.objects.filter(id=job_id).update(
            progress=round(fraction, 4), heartbeat_at=timezone.now()
        )

    # Everything after the claim is inside the try, so that a soft time limit arriving at any
    # point of a running job ends it failed rather than leaving it running for the reaper.
    try:
        job = RebuildJob.objects.get(id=job_id)
        with _job_heartbeat(job_id=job_id):
            result = rollups_rebuild(
                start_date=job.start_date, end_date=job.end_date, progress=report
            )
    except Exception as exc:
        logger.exception("rebuild job %s failed", job_id)
        if not connection.in_atomic_block and not connection.get_autocommit():
            # The soft time limit can strike inside Django's own bookkeeping of a transaction
            # (an atomic block's exit, after its commit, before autocommit is back on): the
            # failure would then go into a transaction that nobody commits, and the worker
            # drops such a connection after the task, so the job stayed running (once, on
            # SQLite in CI). A new connection writes it; the old one had nothing uncommitted.
            connection.close()
        if isinstance(exc, SoftTimeLimitExceeded):
            error = (
                "The rebuild ran past its time limit (REBUILD_SOFT_TIME_LIMIT_SECONDS) and was "
                "stopped. The summaries are swapped in one transaction, so none was half-changed. "
                "Rebuild shorter ranges, or raise the limit."
            )
        else:
            error = f"{type(exc).__name__}: {exc}"
        RebuildJob.objects.filter(id=job_id).update(
            state=RebuildJob.State.FAILED, error=error, finished_at=timezone.now()
        )
    else:
        RebuildJob.objects.filter(id=job_id).update(
            state=RebuildJob.State.DONE,
            progress=1.0,
            views_rebuilt=result.views,
            finished_at=timezone.now(),
        )
    return RebuildJob.objects.get(id=job_id)


@contextmanager
def _job_heartbeat(*, job_id: str) -> Iterator[None]:
    """Keep a running job's heartbeat fresh while the block runs, whatever it is doing.

    Progress reports beat too, but a step (the absorb before the rebuild, the final swap) can
    outlast ``REBUILD_STALE_SECONDS`` on a big range. A thread of its own, with its own database
    connection, beats ``HEARTBEATS_PER_STALE`` times per that bound; a beat that fails (say, it
    waits for SQLite's write lock) is logged and the next one tries again. Only a dead or frozen
    worker stops beating, so the reaper can use a short bound.
    """
    stop = threading.Event()
    interval = settings.REBUILD_STALE_SECONDS / HEARTBEATS_PER_STALE

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    RebuildJob.objects.filter(id=job_id, state=RebuildJob.State.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:
                    logger.warning("rebuild job %s: heartbeat failed", job_id, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"rebuild-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        # A beat already under way ends before the block's ending is reported, so nothing beats
        # after it. Joined with a bound: a beat stuck behind a lock must not hold up the job's
        # ending for long (a late beat only touches a job still running).
        thread.join(timeout=HEARTBEAT_JOIN_SECONDS)


def rebuild_jobs_reap(
    *, stale_after: timedelta | None = None, queue_timeout: timedelta | None = None
) -> int:
    """Fail the jobs that no worker is running; return how many.

    Those are the running jobs whose heartbeat is older than ``stale_after`` (default
    ``REBUILD_STALE_SECONDS``: their worker died or was killed), and the queued ones that no
    worker started within ``queue_timeout`` (default ``REBUILD_QUEUE_TIMEOUT_SECONDS``), when
    their task message expires: a message that still arrives finds the job failed and does
    nothing.
    """
    if stale_after is None:
        stale_after = timedelta(seconds=settings.REBUILD_STALE_SECONDS)
    if queue_timeout is None:
        queue_timeout = timedelta(seconds=settings.REBUILD_QUEUE_TIMEOUT_SECONDS)
    now = timezone.now()
    lost = RebuildJob.objects.filter(
        state=RebuildJob.State.RUNNING, heartbeat_at__lt=now - stale_after
    ).update(
        state=RebuildJob.State.FAILED,
        error="The worker running this job stopped reporting (lost or killed); start a new one.",
        finished_at=now,
    )
    waited = queue_timeout.total_seconds()
    waited_text = f"{waited / 60:g} minutes" if waited >= 120 else f"{waited:g} seconds"
    unclaimed = RebuildJob.objects.filter(
        state=RebuildJob.State.QUEUED, created_at__lt=now - queue_timeout
    ).update(
        state=RebuildJob.State.FAILED,
        error=f"No worker started this job within {waited_text} of its request (no worker "
        "running, or the queue was that far behind); its task has expired. Start a new one.",
        finished_at=now,
    )
    return lost + unclaimed
