"""Absorb sooner when views pile up: ingest asks for a run once a tail passes its threshold.

Every exact read adds the raw tail (``id > watermark``) to the summaries, so its cost grows
with the views not absorbed yet. Beat's run every ``ROLLUP_INTERVAL_SECONDS`` bounds the tail
by the ingest rate times the interval: 30 s of 20,000 views/s is 600,000 views. So once a batch
has committed, ingest reads both tails in one statement (three index lookups): past
``ABSORB_TRIGGER_PENDING`` above the summaries' watermark it sends an absorb task, past
``RECENT_TRIGGER_PENDING`` above the per-minute levels' own watermark (``RecentState``) one of
theirs. A realtime answer reads that second tail from raw, about 1 ms per 1,000 views, and the
per-minute run is cheap, so its threshold is lower: beat's run every
``RECENT_ROLLUP_INTERVAL_SECONDS`` leaves up to 5 s of views (10,000 at 2,000 views/s). Each
interval becomes a maximum, and each tail stays near its threshold whatever the rate.

A burst of batches sends at most one task of each kind per ``ABSORB_TRIGGER_SECONDS``: the
first batch to find a tail over its threshold takes that kind's cache key, which expires after
that time (``cache.add`` is atomic in Redis, so one process of all wins it; the embedded
default's cache is per process, so there each process sends at most one per window). A run the
trigger sent is an ordinary absorb run: runs serialize on their state row and each absorbs only
what is above the watermark it finds, so a duplicate or late one absorbs nothing twice
(``rollups.absorb``). A failure to send (broker or cache away) is logged and leaves the views
to beat's next run: the batch is already committed and its answer must not turn into an error
a client would retry.
"""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from core.metrics import ABSORB_TRIGGERS
from rollups.jobs import PUBLISH_SOCKET_SECONDS
from rollups.models import AbsorbState, RecentState
from rollups.tables import RAW, STATE_NAME

logger = logging.getLogger(__name__)

TRIGGER_CACHE_KEY = "rollups:absorb-trigger"
RECENT_TRIGGER_CACHE_KEY = "rollups:absorb-recent-trigger"


def _above(state: type[AbsorbState] | type[RecentState]) -> str:
    """The ids above ``state``'s watermark (or from the first id, before its row is written)
    up to the largest id. Gaps from rolled-back writes count too, which only makes the trigger
    a little early."""
    return (
        f"coalesce(top.id - coalesce((SELECT absorbed_through_id FROM {state._meta.db_table} "
        f"WHERE name = %s), (SELECT min(id) - 1 FROM {RAW})), 0)"
    )


# Both tails in one round trip: the largest id, then each state row (the first id only
# without a state row).
_PENDING_SQL = (
    f"SELECT {_above(AbsorbState)}, {_above(RecentState)} "
    f"FROM (SELECT max(id) AS id FROM {RAW}) top"
)


def pending_ids_both() -> tuple[int, int]:
    """How many ids are above the summaries' watermark and above the per-minute levels' (upper
    bounds of the views pending for each)."""
    with connection.cursor() as cursor:
        cursor.execute(_PENDING_SQL, [STATE_NAME, STATE_NAME])
        summaries, recent = cursor.fetchone()
        return int(summaries), int(recent)


def absorb_trigger() -> bool:
    """Send an absorb task for each tail past its threshold (``ABSORB_TRIGGER_PENDING`` for
    the summaries, ``RECENT_TRIGGER_PENDING`` for the per-minute levels; 0 turns one off) that
    no other batch sent in the last ``ABSORB_TRIGGER_SECONDS``; return whether this call sent
    any.

    Called by ingest after its transaction committed. Never raises: see the module docstring.
    """
    thresholds = (settings.ABSORB_TRIGGER_PENDING, settings.RECENT_TRIGGER_PENDING)
    if not any(thresholds):
        return False
    try:
        due = [
            key
            for key, threshold, pending in zip(
                (TRIGGER_CACHE_KEY, RECENT_TRIGGER_CACHE_KEY),
                thresholds,
                pending_ids_both(),
                strict=True,
            )
            if threshold > 0 and pending >= threshold
        ]
        # One window per kind: the summaries' run is sent by the first batch past its
        # threshold in a window, whatever the per-minute levels' own window says.
        sent = [key for key in due if cache.add(key, 1, timeout=settings.ABSORB_TRIGGER_SECONDS)]
        if not sent:
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
            if TRIGGER_CACHE_KEY in sent:
                absorb_pending_task.apply_async(
                    kwargs={"triggered": True},
                    producer=producer,
                    expires=settings.ROLLUP_INTERVAL_SECONDS,
                    retry=False,
                )
            if RECENT_TRIGGER_CACHE_KEY in sent:
                absorb_recent_task.apply_async(
                    producer=producer,
                    expires=settings.RECENT_ROLLUP_INTERVAL_SECONDS,
                    retry=False,
                )
    except Exception:
        logger.warning(
            "could not trigger an absorb run; beat's next run absorbs the views", exc_info=True
        )
        return False
    for key in sent:
        ABSORB_TRIGGERS.labels("summaries" if key == TRIGGER_CACHE_KEY else "recent").inc()
    return True
