"""The Celery app (configured from Django's ``CELERY_*`` settings) and the beat schedule.

Beat runs django-celery-beat's ``DatabaseScheduler``, which copies this schedule into its tables
on start (and keeps what operators add in the admin).
"""

import os

from celery import Celery

from worker.redis_transport import use_for_redis_urls

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
# Before any broker connection: redis:// URLs get the transport that survives Redis restarting.
use_for_redis_urls()

app = Celery("blogviews")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def beat_schedule(*, rollup_interval_seconds: int) -> dict[str, dict[str, object]]:
    """The periodic tasks. Each entry expires: a run that waited past its interval is dropped,
    because the next one does the same work."""
    return {
        "absorb pending views": {
            "task": "rollups.absorb_pending",
            "schedule": float(rollup_interval_seconds),
            "options": {"expires": rollup_interval_seconds},
        },
        "reap lost rebuild jobs": {
            "task": "rollups.reap_rebuild_jobs",
            "schedule": 60.0,
            "options": {"expires": 60},
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
        rollup_interval_seconds=settings.ROLLUP_INTERVAL_SECONDS
    )
