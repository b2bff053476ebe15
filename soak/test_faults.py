"""Faults under real processes: the worker SIGKILLed in the middle of an absorb and of a
rebuild, and the Redis that is both cache and broker stopped and started while clients ingest
and read.

Each time, nothing acknowledged is lost and nothing is counted twice: the API's all-time total
(past the cache) grows by exactly the views acknowledged with 202, and once the worker caught up
every summary table equals a recount from the raw views.
"""

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
import requests

from core.testing import wait_until
from rollups.models import DailyViews
from soak.load import Load, Tally
from soak.stack import Stack

pytestmark = pytest.mark.soak

CATCH_UP_SECONDS = 180
# How long a rebuild job whose worker was killed may take to end: REBUILD_STALE_SECONDS (10 in
# the stack) plus the reaper's period (60 s), with room for a busy machine.
JOB_END_SECONDS = 120
BIG_BATCH = 40_000
DAILY = DailyViews._meta.db_table


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


def _waiting_to_write(stack: Stack, table: str) -> bool:
    """Whether a session of the stack waits for a lock to write ``table``."""
    rows = stack.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND backend_type = 'client backend' "
        f"AND query ~* '(INSERT INTO|UPDATE|DELETE FROM) {table}\\M'"
    )
    return rows[0][0] > 0


@contextmanager
def table_held(stack: Stack, table: str) -> Iterator[None]:
    """Hold ``table`` against writers (readers go on) until the block ends; then let go."""
    blocker = psycopg2.connect(stack.database_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        yield
    finally:
        blocker.rollback()
        blocker.close()


def test_worker_killed_mid_absorb_loses_and_doubles_nothing(stack: Stack) -> None:
    stack.revive()
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
    with table_held(stack, DAILY):
        stack.worker.start()
        assert wait_until(
            lambda: _waiting_to_write(stack, DAILY), seconds=CATCH_UP_SECONDS, interval=0.2
        ), "no absorb reached the daily totals"
        stack.worker.kill()

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


@pytest.fixture(scope="module")
def killed_rebuild(stack: Stack) -> str:
    """A rebuild of all days whose worker was SIGKILLed while it replaced the summaries (the
    last, single-transaction step), then restarted; the job's id."""
    stack.revive()
    api = stack.api()
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS)
    with table_held(stack, DAILY):
        queued = api.post("/api/rollups/rebuild/", {})
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["job_id"]
        assert wait_until(
            lambda: _waiting_to_write(stack, DAILY), seconds=CATCH_UP_SECONDS, interval=0.2
        ), "the rebuild did not reach the daily totals"
        assert api.get(f"/api/rollups/jobs/{job_id}/").json()["state"] == "running"
        stack.worker.kill()
    stack.worker.start()
    return str(job_id)


def test_worker_killed_mid_rebuild_keeps_the_numbers(stack: Stack, killed_rebuild: str) -> None:
    # The killed swap committed nothing: every summary still equals the raw views.
    stack.recount()
    api = stack.api()
    assert api.total_views() == api.total_views(no_cache=False)


def test_worker_killed_mid_rebuild_the_job_ends(stack: Stack, killed_rebuild: str) -> None:
    api = stack.api()
    job = f"/api/rollups/jobs/{killed_rebuild}/"
    assert wait_until(
        lambda: api.get(job).json()["state"] in ("done", "failed"),
        seconds=JOB_END_SECONDS,
        interval=1.0,
    ), api.get(job).json()
    # Then the same range can be rebuilt again, to the same numbers.
    before = api.total_views()
    queued = api.post("/api/rollups/rebuild/", {})
    assert queued.status_code == 202, queued.text
    again = f"/api/rollups/jobs/{queued.json()['job_id']}/"
    assert wait_until(
        lambda: api.get(again).json()["state"] == "done", seconds=CATCH_UP_SECONDS, interval=0.5
    ), api.get(again).json()
    assert api.total_views() == before
    stack.recount()


@dataclass(frozen=True)
class RedisOutage:
    tally: Tally
    before: int
    # While Redis was down and no request in flight: views acknowledged so far, the growth of
    # the total read past the cache and through it, and what /readyz said.
    acknowledged_then: int
    counted_then: int
    counted_then_through_cache: int
    ready_then: tuple[int, list[str]]


@pytest.fixture(scope="module")
def redis_outage(stack: Stack) -> RedisOutage:
    """Four clients ingesting and reading while the stack's Redis (cache and broker) is
    stopped for ten seconds and started again, empty."""
    stack.revive()
    api = stack.api()
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS)
    before = api.total_views()
    with Load(stack, clients=4, ingest_share=0.5, seed=11) as load:
        time.sleep(5)
        stack.redis_stop()
        time.sleep(5)
        load.pause()
        acknowledged_then = load.tally.views_acknowledged
        counted_then = api.total_views() - before
        counted_then_through_cache = api.total_views(no_cache=False) - before
        ready = requests.get(f"{stack.base_url}/readyz", timeout=30)
        load.resume()
        time.sleep(5)
        stack.redis_start()
        time.sleep(5)
    print(f"\nRedis stopped and started under load\n{load.tally.summary()}")
    return RedisOutage(
        tally=load.tally,
        before=before,
        acknowledged_then=acknowledged_then,
        counted_then=counted_then,
        counted_then_through_cache=counted_then_through_cache,
        ready_then=(ready.status_code, ready.json().get("unavailable", [])),
    )


def test_redis_down_reads_stay_exact_and_nothing_fails(redis_outage: RedisOutage) -> None:
    tally = redis_outage.tally
    assert tally.server_errors == []
    assert not tally.transport_errors
    assert tally.views_uncertain == 0
    # The cache fails open: answers computed afresh, exact, whether asked past it or not.
    assert redis_outage.counted_then == redis_outage.acknowledged_then > 0
    assert redis_outage.counted_then_through_cache == redis_outage.acknowledged_then
    assert redis_outage.ready_then == (503, ["cache", "broker"])


def test_redis_restart_the_worker_catches_up(stack: Stack, redis_outage: RedisOutage) -> None:
    api = stack.api()
    # The worker and beat found the broker again and absorbed everything.
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS), api.status()
    assert stack.worker.running and stack.beat.running
    assert api.total_views() - redis_outage.before == redis_outage.tally.views_acknowledged
    stack.recount()
