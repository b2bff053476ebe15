"""Celery tasks of the write side: thin wrappers around ingest.services, with stable names."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from ingest import services


@shared_task(
    name="ingest.delete_expired_idempotency_keys",
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
)
def delete_expired_idempotency_keys_task() -> int:
    """Delete the idempotency keys past their replay window; return how many.

    Limits: the CELERY_TASK_* defaults. It deletes in short chunks, each committed, so a run
    stopped at its limit keeps what it deleted and the next run goes on from there."""
    return services.idempotency_keys_delete_expired()
