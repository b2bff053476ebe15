"""Faults under real processes: the worker SIGKILLed in the middle of an absorb, and the Redis
that is both cache and broker stopped and started while clients ingest and read.

Each time, nothing acknowledged is lost and nothing is counted twice: the API's all-time total
(past the cache) grows by exactly the views acknowledged with 202, and once the worker caught up
every summary table equals a recount from the raw views.
"""

import random
import time
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
import requests

from core.testing import wait_until
from rollups.models import DailyViews
from soak.load import Load
from soak.stack import Stack

pytestmark = pytest.mark.soak

CATCH_UP_SECONDS = 180
BIG_BATCH = 40_000


def _views(stack: Stack, *, count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [
        {
            "blog_id": rng.choice(stack.blog_ids),
            "country_code": rng.choice(["US", "DE", "IN", "BR", "ZZ"]),
            "viewed_at": (now - timedelta(seconds=rng.randrange(500 * 86400))).isoformat(),
        }
        for _ in range(count)
    ]


def _absorb_waiting_on(stack: Stack, table: str) -> bool:
    rows = stack.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        f"AND wait_event_type = 'Lock' AND query ILIKE '%%INSERT INTO {table} %%'"
    )
    return rows[0][0] > 0


def test_worker_killed_mid_absorb_loses_and_doubles_nothing(stack: Stack) -> None:
    api = stack.api()
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS)
    before = api.total_views()
    # A large batch waits while no worker runs (beat goes on sending absorbs).
    stack.worker.stop()
    acknowledged = api.ingest(_views(stack, count=BIG_BATCH, seed=3))
    status = api.status()
    assert status["pending_views"] == acknowledged
    # This session holds the daily totals table: the absorb that starts next stalls there,
    # inside its transaction, with the batch staged and three summaries already written.
    table = DailyViews._meta.db_table
    blocker = psycopg2.connect(stack.database_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        stack.worker.start()
        assert wait_until(
            lambda: _absorb_waiting_on(stack, table), seconds=CATCH_UP_SECONDS, interval=0.2
        ), "no absorb reached the daily totals"
        stack.worker.kill()
    finally:
        blocker.rollback()
        blocker.close()

    # The killed run committed nothing: the watermark did not move, every view still pending.
    after_kill = api.status()
    assert after_kill["absorbed_through_id"] == status["absorbed_through_id"]
    assert after_kill["pending_views"] == acknowledged
    assert api.total_views() - before == acknowledged

    stack.worker.start()
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS), api.status()
    assert api.total_views() - before == acknowledged
    assert api.total_views(no_cache=False) - before == acknowledged
    stack.recount()


def test_redis_restart_under_load_loses_nothing(stack: Stack) -> None:
    api = stack.api()
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS)
    before = api.total_views()
    with Load(stack, clients=4, ingest_share=0.5, seed=11) as load:
        time.sleep(5)
        stack.redis_stop()
        time.sleep(5)
        # Cache and broker down: reads answer, exactly, past the cache and through it.
        load.pause()
        acknowledged = load.tally.views_acknowledged
        assert api.total_views() - before == acknowledged
        assert api.total_views(no_cache=False) - before == acknowledged
        ready = requests.get(f"{stack.base_url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert "cache" in ready.json()["unavailable"]
        load.resume()
        time.sleep(5)
        stack.redis_start()
        time.sleep(5)
    tally = load.tally
    print(f"\nRedis stopped and started under load\n{tally.summary()}")
    assert tally.server_errors == []
    assert not tally.transport_errors
    assert tally.views_uncertain == 0
    # The worker (and beat) found the broker again and absorbed everything.
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS), api.status()
    assert stack.worker.running and stack.beat.running
    assert api.total_views() - before == tally.views_acknowledged
    stack.recount()
