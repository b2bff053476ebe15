"""Absorb sooner when views pile up: ingest asks for a run once the tail passes a threshold.

Every exact read adds the raw tail (``id > watermark``) to the summaries, so its cost grows
with the views not absorbed yet. Beat's run every ``ROLLUP_INTERVAL_SECONDS`` bounds the tail
by the ingest rate times the interval: 30 s of 20,000 views/s is 600,000 views. So once a batch
has committed, ingest compares the tail with ``ABSORB_TRIGGER_PENDING`` (one index lookup) and,
past it, sends one absorb task (and one of the per-minute levels', which have their own
watermark and tail): the interval becomes a maximum, and the tail stays near the threshold
whatever the rate.

A burst of batches sends at most one task per ``ABSORB_TRIGGER_SECONDS``: the first batch to
find the tail over the threshold takes a cache key that expires after that time (``cache.add``
is atomic in Redis, so one process of all wins it; the embedded default's cache is per process,
so there each process sends at most one per window). A run the trigger sent is an ordinary
absorb run: runs serialize on the state row and each absorbs only what is above the watermark
it finds, so a duplicate or late one absorbs nothing twice (``rollups.absorb``). A failure to
send (broker or cache away) is logged and leaves the views to beat's next run: the batch is
already committed and its answer must not turn into an error a client would retry.
"""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from core.metrics import ABSORB_TRIGGERS
from rollups.jobs import PUBLISH_SOCKET_SECONDS
from rollups.models import AbsorbState
from rollups.tables import RAW, STATE_NAME

logger = logging.getLogger(__name__)

TRIGGER_CACHE_KEY = "rollups:absorb-trigger"

# The tail's size, as ids: above the watermark (or from the first id, before the state row is
# written) up to the largest id. Gaps from rolled-back writes count too, which only makes the
# trigger a little early. Two index lookups (the first id only without a state row).
_PENDING_SQL = (
    f"SELECT coalesce((SELECT max(id) FROM {RAW}) - coalesce(("
    f"SELECT absorbed_through_id FROM {AbsorbState._meta.db_table} WHERE name = %s), ("
    f"SELECT min(id) - 1 FROM {RAW})), 0)"
)


def pending_ids() -> int:
    """How many ids are above the watermark (an upper bound of the pending views)."""
    with connection.cursor() as cursor:
        cursor.execute(_PENDING_SQL, [STATE_NAME])
        return int(cursor.fetchone()[0])


def absorb_trigger() -> bool:
    """Send one absorb task if the tail has passed ``ABSORB_TRIGGER_PENDING`` and no other
    batch sent one in the last ``ABSORB_TRIGGER_SECONDS``; return whether this call sent it.

    Called by ingest after its transaction committed. Never raises: see the module docstring.
    """
    threshold = settings.ABSORB_TRIGGER_PENDING
    if threshold <= 0:
        return False
    try:
        if pending_ids() < threshold:
            return False
        if not cache.add(TRIGGER_CACHE_KEY, 1, timeout=settings.ABSORB_TRIGGER_SECONDS):
            return False
        from rollups.tasks import absorb_pending_task, absorb_recent_task

        # One try, bounded in time: a broker that is away costs a batch at most about a
        # second, once per window.
        timeouts = {
            "socket_timeout": PUBLISH_SOCKET_SECONDS,
            "socket_connect_timeout": PUBLISH_SOCKET_SECONDS,
        }
        with absorb_pending_task.app.connection_for_write(transport_options=timeouts) as broker:
            # A run that waited in the queue past beat's interval is dropped: beat's own run,
            # or a later trigger, does the same work.
            producer = broker.Producer(auto_declare=False)
            absorb_pending_task.apply_async(
                kwargs={"triggered": True},
                producer=producer,
                expires=settings.ROLLUP_INTERVAL_SECONDS,
                retry=False,
            )
            absorb_recent_task.apply_async(
                producer=producer, expires=settings.ROLLUP_INTERVAL_SECONDS, retry=False
            )
    except Exception:
        logger.warning(
            "could not trigger an absorb run; beat's next run absorbs the views", exc_info=True
        )
        return False
    ABSORB_TRIGGERS.inc()
    return True
