"""The Celery side for real: task names, the beat schedule, and worker + beat processes."""

import os
import random
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection

from core.testing import child_env, project_process, wait_until
from ingest.models import BlogView
from rollups.absorb import rollups_absorb_pending
from rollups.jobs import rebuild_job_create, rebuild_jobs_reap
from rollups.models import AbsorbState, RebuildJob
from rollups.selectors import rebuild_version, rollups_status
from rollups.tasks import absorb_pending_task, rebuild_job_task
from rollups.tests.conftest import broker_at, filesystem_broker_options
from rollups.tests.recount import assert_summaries_exact, summaries_in_db
from worker.celery import app, beat_schedule


def test_task_names_are_stable():
    app.loader.import_default_modules()
    names = {name for name in app.tasks if not name.startswith("celery.")}
    assert {
        "rollups.absorb_pending",
        "rollups.absorb_recent",
        "rollups.rebuild_job",
        "rollups.reap_rebuild_jobs",
        "ingest.delete_expired_idempotency_keys",
        "ingest.ensure_raw_partitions",
        "rollups.apply_raw_retention",
        "rollups.tend_recent_tables",
    } <= names


def test_beat_schedule_runs_absorb_every_interval_and_every_entry_expires(settings):
    assert app.conf.beat_schedule == beat_schedule(
        rollup_interval_seconds=settings.ROLLUP_INTERVAL_SECONDS,
        recent_interval_seconds=settings.RECENT_ROLLUP_INTERVAL_SECONDS,
        audit_interval_seconds=settings.AUDIT_INTERVAL_SECONDS,
    )
    schedule = beat_schedule(rollup_interval_seconds=7, recent_interval_seconds=3)
    assert schedule["absorb pending views"]["task"] == "rollups.absorb_pending"
    assert schedule["absorb pending views"]["schedule"] == 7.0
    # The per-minute levels, on their own watermark and interval, beside it (the worker runs
    # both at once).
    recent = schedule["absorb pending views into the per-minute rows"]
    assert (recent["task"], recent["schedule"]) == ("rollups.absorb_recent", 3.0)
    daily = {entry["task"]: entry["schedule"] for entry in schedule.values()}
    assert daily["ingest.ensure_raw_partitions"] == daily["rollups.apply_raw_retention"] == 86400
    for entry in schedule.values():
        options = entry["options"]
        assert isinstance(options, dict)
        assert options["expires"] <= entry["schedule"]


def test_the_absorb_task_takes_its_last_bound_a_tenth_of_the_interval_in(
    ingest_random, settings, trailing_sleeps
):
    # The app takes its beat schedule from the settings when it is first configured: before
    # this test changes them (the test above compares the two).
    assert app.conf.beat_schedule
    settings.ROLLUP_INTERVAL_SECONDS = 20
    ingest_random(30)
    assert absorb_pending_task() == 35
    assert len(trailing_sleeps) == 1
    assert 1 < trailing_sleeps[0] <= 2
    assert rollups_status().pending_views == 0


def test_every_task_has_soft_and_hard_time_limits(settings):
    app.loader.import_default_modules()
    tasks = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert tasks
    for name, task in tasks.items():
        soft = task.soft_time_limit or app.conf.task_soft_time_limit
        hard = task.time_limit or app.conf.task_time_limit
        assert soft and hard and soft < hard, name
    assert (app.conf.task_soft_time_limit, app.conf.task_time_limit) == (120, 150)
    # Imported above, before any test changes the settings that they take their limits from.
    absorb, rebuild = absorb_pending_task, rebuild_job_task
    assert (tasks[absorb.name], tasks[rebuild.name]) == (absorb, rebuild)
    assert (absorb.soft_time_limit, absorb.time_limit) == (300, 330)
    assert (rebuild.soft_time_limit, rebuild.time_limit) == (3600, 3720)
    # Absorb may take several intervals to catch up; a queued rebuild may wait behind one that
    # runs to its hard limit before the reaper fails it.
    assert absorb.soft_time_limit >= 10 * settings.ROLLUP_INTERVAL_SECONDS
    assert settings.REBUILD_QUEUE_TIMEOUT_SECONDS == 2 * 3720


def _filesystem_broker_env(tmp_path) -> dict[str, str]:
    # Its own broker folder on the embedded default, so that no other worker takes its tasks.
    return (
        {"CELERY_FILESYSTEM_DIR": str(tmp_path / "celery")}
        if not os.environ.get("REDIS_URL")
        else {}
    )


@pytest.mark.django_db(transaction=True)
def test_worker_and_beat_absorb_new_views_on_their_own(ingest_random, tmp_path):
    if os.environ.get("REDIS_URL"):
        app.control.purge()  # leftovers of earlier runs on the shared test broker
    env = child_env(
        ROLLUP_INTERVAL_SECONDS="1", LOG_LEVEL="INFO", **_filesystem_broker_env(tmp_path)
    )
    ingest_random(300)
    worker_args = [
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "--pool=solo",
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        "rollups-tests@%h",
        "--loglevel=INFO",
    ]
    beat_args = [
        "-m",
        "celery",
        "-A",
        "worker",
        "beat",
        "--loglevel=INFO",
        "--schedule",
        str(tmp_path / "beat-schedule"),
    ]
    with (
        project_process(worker_args, log=tmp_path / "worker.log", env=env),
        project_process(beat_args, log=tmp_path / "beat.log", env=env),
    ):
        absorbed = wait_until(lambda: rollups_status().pending_views == 0, seconds=60)
        logs = (tmp_path / "worker.log").read_text() + (tmp_path / "beat.log").read_text()
        assert absorbed, logs
        assert_summaries_exact()
        # And again for views that arrive while they run, late ones included.
        ingest_random(200, rng=random.Random(8), days=(0, 10))
        assert wait_until(lambda: rollups_status().pending_views == 0, seconds=60), logs
    assert_summaries_exact()


def _holds_write_transaction(process) -> bool:
    """Whether the child is inside its absorb transaction (PostgreSQL: its INSERT is running;
    SQLite: it holds the write lock)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE %s AND pid <> pg_backend_pid()",
                ["%absorb_stage%"],
            )
            return cursor.fetchone()[0] > 0
    raw = connection.connection
    try:
        raw.execute("PRAGMA busy_timeout = 0")
        raw.execute("BEGIN IMMEDIATE")
    except Exception:
        return True
    else:
        raw.execute("ROLLBACK")
        return False
    finally:
        raw.execute("PRAGMA busy_timeout = 30000")


@pytest.mark.django_db(transaction=True)
def test_absorb_killed_with_sigkill_loses_and_doubles_nothing(ingest_random, tmp_path):
    for seed in range(8):
        ingest_random(25_000, rng=random.Random(seed))
    connection.ensure_connection()
    with project_process(
        ["manage.py", "run_rollups"], log=tmp_path / "run.log", env=child_env()
    ) as process:
        caught = wait_until(lambda: _holds_write_transaction(process), seconds=60, interval=0.01)
        assert caught, (tmp_path / "run.log").read_text()
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    # Nothing of the killed run is visible...
    time.sleep(0.5)
    state = AbsorbState.objects.filter(name="views").first()
    assert state is None or state.absorbed_through_id == 0
    assert all(not rows for rows in summaries_in_db().values())
    # ...and the retry counts everything exactly once.
    assert rollups_absorb_pending().views == BlogView.objects.count() == 200_000
    assert_summaries_exact()


@pytest.fixture
def shared_broker(tmp_path):
    """The broker that this process sends to and a worker it starts reads from: on the embedded
    default a filesystem broker of this test's own, else the test Redis (emptied first). Gives
    the worker's environment."""
    if os.environ.get("REDIS_URL"):
        app.control.purge()  # leftovers of earlier runs on the shared test broker
        yield child_env()
        return
    with broker_at("filesystem://", filesystem_broker_options(tmp_path / "celery")):
        yield child_env(CELERY_FILESYSTEM_DIR=str(tmp_path / "celery"))


WORKER_ARGS = [
    "-m",
    "celery",
    "-A",
    "worker",
    "worker",
    "--pool=prefork",  # as deployed: the pool that enforces time limits
    "--concurrency=1",
    "--without-gossip",
    "--without-mingle",
    "--hostname",
    "rebuild-tests@%h",
    "--loglevel=INFO",
]
# A rebuild that takes many seconds on a few thousand views: one raw id per step.
SLOW_REBUILD = {"REBUILD_CHUNK_IDS": "1"}


def _job(job_id: uuid.UUID) -> RebuildJob:
    return RebuildJob.objects.get(pk=job_id)


@pytest.mark.django_db(transaction=True)
def test_a_rebuild_past_its_soft_time_limit_ends_failed_and_changes_nothing(
    ingest_random, shared_broker, tmp_path, settings
):
    ingest_random(20_000)
    rollups_absorb_pending()
    version = rebuild_version()
    # Where the job is queued: in its message. One id per chunk makes the rebuild last far
    # longer than this, and the limit leaves time for progress reports on a busy machine.
    settings.REBUILD_SOFT_TIME_LIMIT_SECONDS = 3
    log = tmp_path / "worker.log"
    with project_process(WORKER_ARGS, log=log, env={**shared_broker, **SLOW_REBUILD}):
        job = rebuild_job_create(start_date=None, end_date=None).job
        ended = wait_until(lambda: _job(job.pk).state == "failed", seconds=120)
        assert ended, (_job(job.pk).state, log.read_text())
    error = _job(job.pk).error
    assert "ran past its time limit (REBUILD_SOFT_TIME_LIMIT_SECONDS)" in error
    # Stopped before the end (on a busy machine the limit may come before the first report).
    assert _job(job.pk).progress < 0.9
    assert rebuild_version() == version
    assert_summaries_exact()


def _worker_processes(worker: subprocess.Popen[bytes]) -> list[int]:
    """The worker's pool processes, then the worker itself."""
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return [*map(int, children), worker.pid]


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_rebuild_leaves_a_failed_job_and_exact_summaries(
    ingest_random, shared_broker, tmp_path
):
    ingest_random(20_000)
    rollups_absorb_pending()
    before = summaries_in_db()
    version = rebuild_version()
    log = tmp_path / "worker.log"
    with project_process(WORKER_ARGS, log=log, env={**shared_broker, **SLOW_REBUILD}) as worker:
        job = rebuild_job_create(start_date=None, end_date=None).job
        running = wait_until(
            lambda: _job(job.pk).state == "running" and _job(job.pk).progress > 0, seconds=120
        )
        assert running, (_job(job.pk).state, log.read_text())
        for pid in _worker_processes(worker):
            os.kill(pid, signal.SIGKILL)
        worker.wait()
    assert _job(job.pk).state == "running"
    # The reaper, with a short bound, finds the job that stopped reporting...
    assert wait_until(lambda: rebuild_jobs_reap(stale_after=timedelta(seconds=2)), seconds=30)
    killed = _job(job.pk)
    assert killed.state == "failed"
    assert "stopped reporting (lost or killed)" in killed.error
    # ...and nothing of the rebuild was applied: the summaries are as they were, and exact.
    assert summaries_in_db() == before
    assert rebuild_version() == version
    assert_summaries_exact()
    # The range can be rebuilt again.
    assert rebuild_job_create(start_date=None, end_date=None).created
