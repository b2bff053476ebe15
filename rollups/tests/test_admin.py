from datetime import date, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from rollups.absorb import rollups_absorb_pending
from rollups.jobs import rebuild_job_run, rebuild_jobs_reap
from rollups.models import AbsorbState, RebuildJob, RecentState
from rollups.tests.recount import assert_summaries_exact


def _admin_client(django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser(username="root", password="x")
    client = Client()
    client.force_login(admin)
    return client


@pytest.mark.django_db(transaction=True)  # the task is sent when the admin's transaction commits
def test_admin_page_queues_a_rebuild(django_user_model, private_broker):
    client = _admin_client(django_user_model)
    assert client.get("/admin/rollups/rebuildjob/add/").status_code == 200
    response = client.post(
        "/admin/rollups/rebuildjob/add/",
        {"start_date": "2024-01-01", "end_date": "2024-01-31"},
    )
    assert response.status_code == 302
    job = RebuildJob.objects.get()
    assert (job.start_date, job.end_date, job.state) == (
        date(2024, 1, 1),
        date(2024, 1, 31),
        "queued",
    )
    [message] = private_broker()
    assert message["headers"]["argsrepr"] == repr((str(job.pk),))
    # The job's page shows its state, and says it was queued.
    assert response["Location"] == _job_page(job)
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert b"queued" in page.content
    assert f"Rebuild job {job.pk} queued".encode() in page.content


def _job_page(job: RebuildJob) -> str:
    return f"/admin/rollups/rebuildjob/{job.pk}/change/"


def _add(client: Client, start: str, end: str) -> Any:
    return client.post(
        "/admin/rollups/rebuildjob/add/", {"start_date": start, "end_date": end}, follow=True
    )


def test_admin_refuses_a_range_outside_the_supported_days(django_user_model):
    client = _admin_client(django_user_model)
    page = _add(client, "0001-01-01", "9999-12-31")
    assert page.status_code == 200
    assert page.content.count(b"must lie in 1900-01-01..2100-12-31") == 2
    assert b"is after end_date" in _add(client, "2024-02-01", "2024-01-01").content
    assert not RebuildJob.objects.exists()


def test_admin_shows_the_job_already_running_the_range_or_overlapping_it(django_user_model):
    client = _admin_client(django_user_model)
    running = RebuildJob.objects.create(
        start_date=date(2024, 1, 1), end_date=date(2024, 1, 31), state="running"
    )
    same = _add(client, "2024-01-01", "2024-01-31")
    assert same.redirect_chain == [(_job_page(running), 302)]
    assert b"already running" in same.content
    overlapping = _add(client, "2024-01-15", "2024-02-15")
    assert overlapping.redirect_chain == [(_job_page(running), 302)]
    assert b"overlaps the requested range" in overlapping.content
    assert RebuildJob.objects.get() == running


@pytest.mark.django_db(transaction=True)
def test_admin_says_when_the_broker_cannot_take_the_job(django_user_model, unreachable_broker):
    client = _admin_client(django_user_model)
    page = _add(client, "2024-01-01", "2024-01-31")
    job = RebuildJob.objects.get()
    assert page.redirect_chain == [(_job_page(job), 302)]
    assert page.status_code == 200
    assert b"task broker is unavailable" in page.content
    assert b"could not be queued" in page.content
    assert job.state == "failed"
    assert "broker could not take this job" in job.error

    # The action says so too, job by job.
    listing = client.post(
        "/admin/rollups/rebuildjob/",
        {"action": "rebuild_again", "_selected_action": [str(job.pk)]},
        follow=True,
    )
    assert listing.status_code == 200
    assert b"task broker is unavailable" in listing.content
    assert RebuildJob.objects.filter(state="failed").count() == 2


def test_admin_action_rebuilds_the_same_range_again(django_user_model, ingest_random):
    client = _admin_client(django_user_model)
    lost = RebuildJob.objects.create(
        start_date=date(2024, 1, 1),
        end_date=date(2024, 12, 31),
        state="running",
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    # The worker running it died: the job is failed, and the same range rebuilt again works.
    assert rebuild_jobs_reap() == 1
    ingest_random(100)
    response = client.post(
        "/admin/rollups/rebuildjob/",
        {"action": "rebuild_again", "_selected_action": [str(lost.pk)]},
    )
    assert response.status_code == 302
    again = RebuildJob.objects.exclude(pk=lost.pk).get()
    assert (again.start_date, again.end_date, again.state) == (
        lost.start_date,
        lost.end_date,
        "queued",
    )
    assert rebuild_job_run(job_id=str(again.pk)).state == "done"
    assert_summaries_exact()


@pytest.mark.django_db
def test_admin_shows_a_jobs_progress_as_a_bar_that_follows_the_job(django_user_model):
    client = _admin_client(django_user_model)
    job = RebuildJob.objects.create(
        start_date=date(2024, 1, 1), end_date=date(2024, 1, 31), state="running", progress=0.45
    )

    page = client.get(_job_page(job)).content.decode()
    assert (
        f'<progress class="rebuild-progress" max="100" value="45" '
        f'data-job-url="/api/rollups/jobs/{job.pk}/" data-state="running">45 %</progress>'
    ) in page
    assert "rollups/job_progress.js" in page
    listing = client.get("/admin/rollups/rebuildjob/").content.decode()
    assert 'value="45"' in listing
    # The bar's source: the job API answers the admin's session.
    assert client.get(f"/api/rollups/jobs/{job.pk}/").json()["progress"] == 0.45


@pytest.mark.django_db
def test_admin_shows_both_watermarks_read_only(django_user_model, ingest_random):
    """The summaries' and the per-minute rows' state rows, each absorbed on its own."""
    ingest_random(12)
    rollups_absorb_pending()
    client = _admin_client(django_user_model)
    for model in (AbsorbState, RecentState):
        page = client.get(f"/admin/rollups/{model._meta.model_name}/")
        assert page.status_code == 200
        assert f">{model.objects.get().absorbed_through_id}<" in page.content.decode()
        assert client.get(f"/admin/rollups/{model._meta.model_name}/add/").status_code == 403
