"""Rebuild jobs (rollups.jobs): their lifecycle, failures, reaping and time limits."""

import time
from datetime import date, datetime, timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.utils import timezone

from core.testing import wait_until
from ingest.models import BlogView
from rollups import jobs
from rollups.jobs import rebuild_job_create, rebuild_job_run, rebuild_jobs_reap
from rollups.models import (
    RebuildJob,
)


def test_rebuild_job_lifecycle(ingest_random):
    ingest_random(100)
    job = RebuildJob.objects.create(start_date=date(2024, 1, 1), end_date=date(2024, 6, 30))
    finished = rebuild_job_run(job_id=str(job.id))
    assert finished.state == RebuildJob.State.DONE
    assert finished.progress == 1.0
    assert finished.views_rebuilt == sum(
        1
        for v in BlogView.objects.values_list("viewed_at", flat=True)
        if date(2024, 1, 1) <= v.date() <= date(2024, 6, 30)
    )
    assert finished.started_at and finished.finished_at
    assert finished.started_at <= finished.finished_at
    # A job runs once: a redelivered message does nothing.
    assert rebuild_job_run(job_id=str(job.id)).finished_at == finished.finished_at


def test_rebuild_job_failure_is_recorded(db, monkeypatch):
    job = RebuildJob.objects.create()

    def broken(**kwargs):
        raise ValueError("disk full")

    monkeypatch.setattr(jobs, "rollups_rebuild", broken)
    finished = rebuild_job_run(job_id=str(job.id))
    assert finished.state == RebuildJob.State.FAILED
    assert finished.error == "ValueError: disk full"


def test_jobs_whose_worker_died_are_failed(db):
    now = timezone.now()
    lost = RebuildJob.objects.create(state="running", heartbeat_at=now - timedelta(minutes=11))
    alive = RebuildJob.objects.create(state="running", heartbeat_at=now - timedelta(minutes=1))
    assert rebuild_jobs_reap() == 1
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert (lost.state, alive.state) == ("failed", "running")
    assert "start a new one" in lost.error


@pytest.mark.django_db(transaction=True)
def test_a_rebuild_request_fails_a_job_whose_worker_died_and_takes_its_range(
    settings, private_broker
):
    settings.REBUILD_STALE_SECONDS = 120
    lost = RebuildJob.objects.create(
        start_date=date(2024, 1, 1),
        end_date=date(2024, 1, 31),
        state="running",
        heartbeat_at=timezone.now() - timedelta(seconds=121),
    )
    # Not left to the next periodic reap: the request itself finds the job dead.
    answer = rebuild_job_create(start_date=date(2024, 1, 1), end_date=date(2024, 1, 31))
    lost.refresh_from_db()
    assert lost.state == "failed"
    assert "stopped reporting" in lost.error
    assert answer.created
    assert answer.job.pk != lost.pk
    assert len(private_broker()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_time_limit_that_leaves_autocommit_off_still_ends_the_job_failed(monkeypatch):
    """The soft time limit can strike inside Django's bookkeeping of a transaction, between
    its commit and autocommit coming back on: the job's failure is still committed (a worker
    drops a connection left out of autocommit after the task, and with it anything
    uncommitted)."""
    job = RebuildJob.objects.create()

    def interrupted(**kwargs):
        connection.set_autocommit(False)
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(jobs, "rollups_rebuild", interrupted)
    rebuild_job_run(job_id=str(job.id))
    connection.close()
    failed = RebuildJob.objects.get(pk=job.pk)
    assert failed.state == RebuildJob.State.FAILED
    assert "ran past its time limit" in failed.error


@pytest.mark.django_db(transaction=True)
def test_a_running_job_beats_while_a_step_reports_no_progress(settings):
    settings.REBUILD_STALE_SECONDS = 0.6  # a beat every 0.1 s
    long_ago = timezone.now() - timedelta(hours=1)
    job = RebuildJob.objects.create(state="running", heartbeat_at=long_ago)

    def heartbeat():
        return RebuildJob.objects.get(pk=job.pk).heartbeat_at

    with jobs._job_heartbeat(job_id=str(job.pk)):
        assert wait_until(lambda: heartbeat() > long_ago, seconds=30)
        assert rebuild_jobs_reap() == 0
    stopped_at = heartbeat()
    time.sleep(0.5)
    assert heartbeat() == stopped_at


def test_queued_jobs_that_no_worker_started_are_failed(db, settings):
    settings.REBUILD_QUEUE_TIMEOUT_SECONDS = 3600
    now = timezone.now()
    waiting = RebuildJob.objects.create()
    forgotten = RebuildJob.objects.create()
    RebuildJob.objects.filter(pk=waiting.pk).update(created_at=now - timedelta(minutes=59))
    RebuildJob.objects.filter(pk=forgotten.pk).update(created_at=now - timedelta(minutes=61))
    assert rebuild_jobs_reap() == 1
    waiting.refresh_from_db()
    forgotten.refresh_from_db()
    assert (waiting.state, forgotten.state) == ("queued", "failed")
    assert forgotten.error.startswith("No worker started this job within 60 minutes")
    assert forgotten.finished_at is not None
    # Its message, should it still arrive, finds the job failed and does nothing.
    assert rebuild_job_run(job_id=str(forgotten.pk)).error == forgotten.error


@pytest.mark.django_db(transaction=True)
def test_a_job_message_expires_when_the_reaper_would_fail_the_job(settings, private_broker):
    settings.REBUILD_QUEUE_TIMEOUT_SECONDS = 5400
    answer = rebuild_job_create(start_date=date(2024, 1, 1), end_date=date(2024, 1, 31))
    [message] = private_broker()
    headers = message["headers"]
    assert (headers["task"], headers["id"] != "", headers["argsrepr"]) == (
        "rollups.rebuild_job",
        True,
        repr((str(answer.job.pk),)),
    )
    expires = datetime.fromisoformat(headers["expires"])
    assert expires == answer.job.created_at + timedelta(seconds=5400)
    # And the limits the worker applies: the settings' where the job was queued.
    assert headers["timelimit"] == [3720, 3600]
