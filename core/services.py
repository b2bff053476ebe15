import logging

from django.core.cache import cache
from django.db import connection

from worker.celery import app as celery_app

logger = logging.getLogger(__name__)

READY_PROBE_KEY = "readyz:probe"
# Every broker socket operation of the probe is bounded: a broker that accepts connections but
# does not answer (overloaded, half-open) would otherwise hold /readyz for minutes.
BROKER_PROBE_SECONDS = 2


def _database_check() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _cache_check() -> None:
    cache.set(READY_PROBE_KEY, "ok", timeout=10)
    if cache.get(READY_PROBE_KEY) != "ok":
        raise RuntimeError("a value written to the cache could not be read back")


def _broker_check() -> None:
    with celery_app.connection_for_write(
        connect_timeout=BROKER_PROBE_SECONDS,
        transport_options={
            "socket_connect_timeout": BROKER_PROBE_SECONDS,
            "socket_timeout": BROKER_PROBE_SECONDS,
        },
    ) as broker:
        broker.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_PROBE_SECONDS
        )
        broker.default_channel  # noqa: B018 (opening a channel proves the transport works)


def dependencies_check() -> dict[str, str]:
    """Probe the database, the cache and the Celery broker; map each to "ok" or its error."""
    results = {}
    for name, probe in (
        ("database", _database_check),
        ("cache", _cache_check),
        ("broker", _broker_check),
    ):
        try:
            probe()
        except Exception as exc:  # any failure of a dependency means "not ready"
            logger.warning("readiness: %s unavailable: %s", name, exc)
            results[name] = f"unavailable: {type(exc).__name__}: {exc}"
        else:
            results[name] = "ok"
    return results
