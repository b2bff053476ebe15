from datetime import date, timedelta

from django.test import Client
from django.utils import timezone

from rollups.models import RebuildJob
from rollups.services import rebuild_job_run, rebuild_jobs_reap
from rollups.tests.recount import assert_summaries_exact


def _admin_client(django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser(username="root", password="x")
    client = Client()
    client.force_login(admin)
    return client


def test_admin_page_queues_a_rebuild(django_user_model, django_capture_on_commit_callbacks):
    client = _admin_client(django_user_model)
    assert client.get("/admin/rollups/rebuildjob/add/").status_code == 200
    with django_capture_on_commit_callbacks() as callbacks:
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
    assert len(callbacks) == 1
    # The job's page shows its state.
    page = client.get(f"/admin/rollups/rebuildjob/{job.pk}/change/")
    assert page.status_code == 200
    assert b"queued" in page.content


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
