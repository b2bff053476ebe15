from datetime import date

import pytest

from rollups.models import RebuildJob
from rollups.services import rebuild_job_run

REBUILD = "/api/rollups/rebuild/"
STATUS = "/api/rollups/status/"


@pytest.fixture
def staff_client(auth_client, staff_user):
    return auth_client(staff_user)


def test_rebuild_queues_a_job_that_a_worker_runs(
    staff_client, staff_user, ingest_random, django_capture_on_commit_callbacks
):
    ingest_random(50)
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            REBUILD, {"start_date": "2024-01-01", "end_date": "2024-03-31"}, format="json"
        )
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    job = RebuildJob.objects.get(id=job_id)
    assert (job.state, job.start_date, job.end_date, job.requested_by) == (
        "queued",
        date(2024, 1, 1),
        date(2024, 3, 31),
        staff_user,
    )
    # The task is sent only once the job row is committed.
    assert len(callbacks) == 1

    queued = staff_client.get(f"/api/rollups/jobs/{job_id}/").json()
    assert (queued["state"], queued["progress"], queued["duration_ms"]) == ("queued", 0.0, None)

    rebuild_job_run(job_id=job_id)
    done = staff_client.get(f"/api/rollups/jobs/{job_id}/").json()
    assert done["state"] == "done"
    assert done["progress"] == 1.0
    assert done["views_rebuilt"] > 0
    assert done["duration_ms"] >= 0
    assert done["error"] == ""


def test_rebuild_with_open_ends(staff_client, db):
    response = staff_client.post(REBUILD, {}, format="json")
    assert response.status_code == 202
    job = RebuildJob.objects.get(id=response.json()["job_id"])
    assert (job.start_date, job.end_date) == (None, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"start_date": "2024-02-01", "end_date": "2024-01-31"}, "start_date"),
        ({"start_date": "2024-02-30"}, "start_date"),
        ({"end_date": 20240101}, "end_date"),
        ({"start": "2024-01-01"}, "start"),
    ],
)
def test_rebuild_rejects_bad_input(staff_client, body, field):
    response = staff_client.post(REBUILD, body, format="json")
    assert response.status_code == 400
    assert field in [d["field"] for d in response.json()["error"]["details"]]
    assert not RebuildJob.objects.exists()


def test_rebuild_rejects_a_body_that_is_not_an_object(staff_client):
    response = staff_client.post(REBUILD, ["2024-01-01"], format="json")
    assert response.status_code == 400


def test_unknown_job_is_404(staff_client):
    response = staff_client.get("/api/rollups/jobs/3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_status(staff_client, ingest_random):
    ingest_random(12)
    body = staff_client.get(STATUS).json()
    assert body["pending_views"] == 12
    assert body["last_run_at"] is None
    assert set(body) == {
        "pending_views",
        "absorbed_through_id",
        "last_run_at",
        "last_run_duration_ms",
        "lag_seconds",
    }


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", REBUILD),
        ("get", STATUS),
        ("get", "/api/rollups/jobs/3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10/"),
    ],
)
def test_staff_only(api_client, auth_client, user, ingest_user, method, url):
    assert getattr(api_client, method)(url, {}, format="json").status_code == 401
    assert getattr(auth_client(user), method)(url, {}, format="json").status_code == 403
    assert getattr(auth_client(ingest_user), method)(url, {}, format="json").status_code == 403
    assert not RebuildJob.objects.exists()
