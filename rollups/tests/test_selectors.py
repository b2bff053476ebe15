"""The rollups' reads (rollups.selectors)."""

import random
from datetime import timedelta

import time_machine
from django.utils import timezone

from rollups.absorb import rollups_absorb_pending
from rollups.selectors import rollups_status
from rollups.tests.recount import watermark


def test_status(ingest_random):
    status = rollups_status()
    assert (status.pending_views, status.lag_seconds, status.last_run_at) == (0, 0.0, None)
    ingest_random(30)
    assert rollups_status().pending_views == 30
    started = timezone.now()
    with time_machine.travel(started, tick=False):
        rollups_absorb_pending()
    with time_machine.travel(started + timedelta(seconds=12), tick=False):
        ingest_random(5, rng=random.Random(4))
        status = rollups_status()
    assert status.pending_views == 5
    assert status.absorbed_through_id == watermark()
    assert status.last_run_duration_ms is not None
    # Every pending view was committed after the last run took its bound.
    assert status.lag_seconds == 12.0
