"""The Celery side for real: task names, the beat schedule, and worker + beat processes."""

import os
import random
import signal
import time

import pytest
from django.db import connection

from core.testing import child_env, project_process, wait_until
from ingest.models import BlogView
from rollups.models import AbsorbState
from rollups.services import rollups_absorb_pending, rollups_status
from rollups.tests.recount import assert_summaries_exact, summaries_in_db
from worker.celery import app, beat_schedule


def test_task_names_are_stable():
    app.loader.import_default_modules()
    names = {name for name in app.tasks if not name.startswith("celery.")}
    assert {
        "rollups.absorb_pending",
        "rollups.rebuild_job",
        "rollups.reap_rebuild_jobs",
    } <= names


def test_beat_schedule_runs_absorb_every_interval_and_every_entry_expires(settings):
    assert app.conf.beat_schedule == beat_schedule(
        rollup_interval_seconds=settings.ROLLUP_INTERVAL_SECONDS
    )
    schedule = beat_schedule(rollup_interval_seconds=7)
    assert schedule["absorb pending views"]["task"] == "rollups.absorb_pending"
    assert schedule["absorb pending views"]["schedule"] == 7.0
    for entry in schedule.values():
        options = entry["options"]
        assert isinstance(options, dict)
        assert options["expires"] <= entry["schedule"]


def test_the_absorb_task_takes_its_last_bound_a_tenth_of_the_interval_in(
    ingest_random, settings, trailing_sleeps
):
    from rollups.tasks import absorb_pending_task

    settings.ROLLUP_INTERVAL_SECONDS = 20
    ingest_random(30)
    assert absorb_pending_task() == 35
    assert len(trailing_sleeps) == 1
    assert 1 < trailing_sleeps[0] <= 2
    assert rollups_status().pending_views == 0


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
