"""Celery tasks of the write side: thin wrappers around ingest.services, with stable names."""

from celery import shared_task

from ingest import partitions, services
from worker.retries import RETRIED_ON_DATABASE_ERRORS


@shared_task(
    name="ingest.delete_expired_idempotency_keys",
    **RETRIED_ON_DATABASE_ERRORS,
)
def delete_expired_idempotency_keys_task() -> int:
    """Delete the idempotency keys past their replay window; return how many.

    Limits: the CELERY_TASK_* defaults. It deletes in short chunks, each committed, so a run
    stopped at its limit keeps what it deleted and the next run goes on from there."""
    return services.idempotency_keys_delete_expired()


@shared_task(
    name="ingest.ensure_raw_partitions",
    **RETRIED_ON_DATABASE_ERRORS,
)
def ensure_raw_partitions_task() -> int:
    """Create the raw table's monthly partitions of this month and the next ones, and of any
    month whose views landed in the default partition (PostgreSQL; ``ingest.partitions``);
    return how many were created. Limits: the CELERY_TASK_* defaults."""
    return len(partitions.raw_partitions_ensure())
