"""The retry policy of the periodic database tasks, declared once.

A task that only reads and writes the database and is safe to run again retries when the
database is briefly away (a restart, a failover): a few times, backing off up to a minute.
Spread into ``shared_task(...)``: ``@shared_task(name=..., **RETRIED_ON_DATABASE_ERRORS)``.
"""

from typing import Any

from django.db import InterfaceError, OperationalError

RETRIED_ON_DATABASE_ERRORS: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 5,
}
