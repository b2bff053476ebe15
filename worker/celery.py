"""The Celery app (configured from Django's ``CELERY_*`` settings) and the beat schedule.

Beat runs django-celery-beat's ``DatabaseScheduler``, which copies this schedule into its tables
on start (and keeps what operators add in the admin).
"""

import logging
import os
from typing import Any

from celery import Celery, Task
from celery.signals import (
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_shutdown,
)
from prometheus_client import start_http_server

from worker.redis_transport import use_for_redis_urls

logger = logging.getLogger(__name__)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
# Before any broker connection: redis:// URLs get the transport that survives Redis restarting.
use_for_redis_urls()

app = Celery("blogviews")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def beat_schedule(
    *,
    rollup_interval_seconds: int,
    recent_interval_seconds: int = 5,
    audit_interval_seconds: int = 86400,
) -> dict[str, dict[str, object]]:
    """The periodic tasks. Each entry expires: a run that waited past its interval is dropped,
    because the next one does the same work."""
    return {
        "absorb pending views": {
            "task": "rollups.absorb_pending",
            "schedule": float(rollup_interval_seconds),
            "options": {"expires": rollup_interval_seconds},
        },
        "absorb pending views into the per-minute rows": {
            "task": "rollups.absorb_recent",
            "schedule": float(recent_interval_seconds),
            "options": {"expires": recent_interval_seconds},
        },
        "reap lost rebuild jobs": {
            "task": "rollups.reap_rebuild_jobs",
            "schedule": 60.0,
            "options": {"expires": 60},
        },
        "vacuum and analyze the realtime tables": {
            "task": "rollups.tend_recent_tables",
            "schedule": 60.0,
            "options": {"expires": 60},
        },
        "verify rollups against the raw views": {
            "task": "rollups.verify_rollups",
            "schedule": float(audit_interval_seconds),
            "options": {"expires": audit_interval_seconds},
        },
        "create the raw views' monthly partitions ahead": {
            "task": "ingest.ensure_raw_partitions",
            "schedule": 86400.0,
            "options": {"expires": 86400},
        },
        "drop raw views past their retention": {
            "task": "rollups.apply_raw_retention",
            "schedule": 86400.0,
            "options": {"expires": 86400},
        },
        "delete expired idempotency keys": {
            "task": "ingest.delete_expired_idempotency_keys",
            "schedule": 3600.0,
            "options": {"expires": 3600},
        },
    }


@app.on_after_configure.connect
def _schedule(sender: Celery, **kwargs: object) -> None:
    from django.conf import settings

    sender.conf.beat_schedule = beat_schedule(
        rollup_interval_seconds=settings.ROLLUP_INTERVAL_SECONDS,
        recent_interval_seconds=settings.RECENT_ROLLUP_INTERVAL_SECONDS,
        audit_interval_seconds=settings.AUDIT_INTERVAL_SECONDS,
    )


# --- Observability: request ids into tasks, task failures and retries as metrics ----------------

REQUEST_ID_TASK_HEADER = "request_id"


@before_task_publish.connect
def _request_id_send(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """A task sent while a request runs carries its id (the request's log lines and the task's
    then share it)."""
    from core.logs import request_id_var

    request_id = request_id_var.get()
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_TASK_HEADER, request_id)


@task_prerun.connect
def _request_id_set(task: Task | None = None, **kwargs: Any) -> None:
    from core.logs import request_id_var, task_var

    if task is None:
        return
    request_id_var.set(getattr(task.request, REQUEST_ID_TASK_HEADER, None))
    task_var.set(f"{task.name}[{task.request.id}]")


@task_postrun.connect
def _request_id_clear(**kwargs: Any) -> None:
    from core.logs import request_id_var, task_var

    request_id_var.set(None)
    task_var.set(None)


@task_failure.connect
def _task_failed(sender: Task | None = None, **kwargs: Any) -> None:
    from core.metrics import TASK_FAILURES

    TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()


@task_retry.connect
def _task_retried(sender: Task | None = None, **kwargs: Any) -> None:
    from core.metrics import TASK_RETRIES

    TASK_RETRIES.labels(getattr(sender, "name", "unknown")).inc()


@worker_init.connect
def _metrics_start(**kwargs: Any) -> None:
    """The worker's metrics: the previous run's files leave the multiprocess folder; with
    ``WORKER_METRICS_PORT`` set, the worker's counters are served on that port (for a worker
    that does not share the folder with the web process, e.g. its own container)."""
    from core.metrics import metrics_dir_prune, process_registry

    metrics_dir_prune()
    port = os.environ.get("WORKER_METRICS_PORT", "").strip()
    if port:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            logger.warning(
                "WORKER_METRICS_PORT without PROMETHEUS_MULTIPROC_DIR: the pool processes' "
                "counts are not summed; set both"
            )
        address = os.environ.get("WORKER_METRICS_ADDRESS", "127.0.0.1")
        start_http_server(int(port), addr=address, registry=process_registry())


@worker_process_shutdown.connect
def _metrics_process_dead(pid: int | None = None, **kwargs: Any) -> None:
    from core.metrics import metrics_process_dead

    metrics_process_dead(pid or os.getpid())
