"""Worker and beat under broker and database outages: they live through them and catch up.

Each end-to-end test runs the Procfile's own worker and beat commands against a Redis server
(and, for the database, a PostgreSQL cluster) of its own, stops it for a few seconds while views
keep arriving, starts it again on the same address, and checks that every view is absorbed
afterwards, exactly.
"""

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
import pytest
from celery.worker.consumer.consumer import Consumer
from django.conf import settings
from kombu import Connection, Exchange, Queue

from core.testing import (
    RedisServer,
    child_env,
    postgres_bin_dir,
    postgres_cluster,
    procfile_process,
    redis_server,
    wait_until,
)
from rollups.selectors import rollups_status
from rollups.tests.recount import assert_summaries_exact
from worker.celery import app as celery_app
from worker.redis_transport import Transport

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs the redis-server program"
)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def _connection_as_a_worker_leaves_it(url: str, transport: str) -> Connection:
    """A broker connection in the state a worker's is in when Redis goes away under it.

    Its default channel consumes a queue, holds a delivered message not acknowledged yet and
    waits in BRPOP; a second channel (as the worker's remote-control one) consumes an
    auto-delete fanout queue.
    """
    connection = Connection(url, transport=transport)
    connection.connect()
    channel: Any = connection.default_channel  # the Redis channel, private methods and all
    tasks = Queue("outage-tasks", Exchange("outage-tasks"), "outage-tasks")
    tasks(channel).declare()
    connection.Producer(channel).publish(
        {"n": 1}, exchange=tasks.exchange, routing_key="outage-tasks"
    )
    delivered: list[object] = []
    connection.Consumer(
        tasks, channel=channel, callbacks=[lambda body, message: delivered.append(message)]
    ).consume()
    connection.drain_events(timeout=10)
    assert len(delivered) == 1
    control: Any = connection.channel()
    broadcast = Queue("outage-control", Exchange("outage-control", type="fanout"), auto_delete=True)
    connection.Consumer(
        broadcast, channel=control, callbacks=[lambda body, message: None]
    ).consume()
    control.client  # noqa: B018 (a channel in use has its client)
    channel._brpop_start()
    return connection


def _celery_recovers(connection: Connection) -> None:
    """What the worker's consumer does when the broker connection breaks (Celery's own code)."""
    consumer: Any = SimpleNamespace(  # the attributes that method reads
        connection=connection,
        app=SimpleNamespace(
            conf=SimpleNamespace(
                worker_cancel_long_running_tasks_on_connection_loss=True,
                worker_enable_prefetch_count_reduction=False,
            )
        ),
    )
    Consumer.on_connection_error_after_connected(consumer, ConnectionError("Redis went away"))


@needs_redis_server
def test_the_worker_recovers_from_redis_going_away_with_a_message_unacknowledged(private_redis):
    connection = _connection_as_a_worker_leaves_it(private_redis.url, "redis")
    private_redis.stop()
    _celery_recovers(connection)  # raises nothing: the worker reconnects


@needs_redis_server
def test_kombu_alone_still_needs_the_fix(private_redis):
    """The bug worker/redis_transport.py works around, with kombu's own transport.

    When this test fails, kombu has fixed it: remove worker/redis_transport.py and its call in
    worker/celery.py.
    """
    connection = _connection_as_a_worker_leaves_it(
        private_redis.url, "kombu.transport.redis:Transport"
    )
    private_redis.stop()
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'hostname'"):
        _celery_recovers(connection)


@pytest.mark.parametrize(
    ("url", "fixed"),
    [("redis://127.0.0.1:1/0", True), ("rediss://127.0.0.1:1/0", True), ("filesystem://", False)],
)
def test_redis_broker_urls_get_the_fixed_transport_and_others_their_own(url, fixed):
    with celery_app.connection_for_read(url) as connection:  # not connected: no broker needed
        assert isinstance(connection.transport, Transport) is fixed


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')}" for log in sorted(folder.glob("*.log"))
    )


@needs_redis_server
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the embedded default has no Redis")
@pytest.mark.django_db(transaction=True)
def test_worker_and_beat_live_through_redis_restarts_and_absorb_every_view(
    ingest_random, private_redis, tmp_path
):
    env = child_env(
        REDIS_URL=private_redis.url,
        ROLLUP_INTERVAL_SECONDS="1",
        LOG_LEVEL="INFO",
        CELERY_CONCURRENCY="2",
    )
    rng = random.Random(9)
    with (
        procfile_process("worker", log=tmp_path / "worker.log", env=env) as worker,
        procfile_process("beat", log=tmp_path / "beat.log", env=env) as beat,
    ):

        def all_absorbed() -> bool:
            return rollups_status().pending_views == 0

        ingest_random(300, rng=rng)
        assert wait_until(all_absorbed, seconds=90), _logs(tmp_path)
        for _ in range(2):
            private_redis.stop()
            # Ingest writes to the database only: it goes on while the broker is away.
            ingest_random(200, rng=rng)
            time.sleep(3)  # away long enough for worker and beat to notice
            private_redis.start()
            ingest_random(200, rng=rng)
            assert wait_until(all_absorbed, seconds=90), _logs(tmp_path)
            assert worker.poll() is None and beat.poll() is None, _logs(tmp_path)
    assert_summaries_exact()


def _child(args: list[str], *, env: dict[str, str], log: Path) -> None:
    """``python <args>`` from the project root; fails the test, with its output, if it fails."""
    with log.open("ab") as output:
        finished = subprocess.run(
            [sys.executable, *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert finished.returncode == 0, f"{args} failed\n" + _logs(log.parent)


@needs_redis_server
@pytest.mark.skipif(postgres_bin_dir() is None, reason="needs PostgreSQL's server programs")
@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="the PostgreSQL restart test runs with the PostgreSQL backend",
)
def test_worker_and_beat_live_through_a_postgresql_restart_and_absorb_every_view(
    private_redis, tmp_path
):
    with postgres_cluster() as cluster:
        admin = psycopg2.connect(cluster.url("postgres"))
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE blogviews")
        admin.close()
        env = child_env(
            DATABASE_URL=cluster.url("blogviews"),
            REDIS_URL=private_redis.url,
            ROLLUP_INTERVAL_SECONDS="1",
            LOG_LEVEL="INFO",
            CELERY_CONCURRENCY="2",
        )
        driver = tmp_path / "driver.log"
        _child(["manage.py", "migrate", "--noinput", "--verbosity", "0"], env=env, log=driver)
        _child(["-m", "rollups.tests.outage_child", "ingest", "300", "1"], env=env, log=driver)
        with (
            procfile_process("worker", log=tmp_path / "worker.log", env=env) as worker,
            procfile_process("beat", log=tmp_path / "beat.log", env=env) as beat,
        ):
            absorbed = ["-m", "rollups.tests.outage_child", "absorbed", "90"]
            _child(absorbed, env=env, log=driver)
            cluster.stop()
            time.sleep(5)  # away long enough for several absorb runs to fail
            cluster.start()
            _child(["-m", "rollups.tests.outage_child", "ingest", "200", "2"], env=env, log=driver)
            _child(absorbed, env=env, log=driver)
            assert worker.poll() is None and beat.poll() is None, _logs(tmp_path)
