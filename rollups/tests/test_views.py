import threading
import time
from datetime import UTC, date, datetime

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from core.models import Blog
from ingest.services import views_record
from rollups.jobs import rebuild_job_run
from rollups.models import RebuildJob
from rollups.tests.recount import assert_summaries_exact

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
    assert response.json()["created"] is True
    assert response.json()["state"] == "queued"
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
        # Rebuild ranges lie in 1900-01-01..2100-12-31 (API.md section 10).
        ({"start_date": "0001-01-01", "end_date": "9999-12-31"}, "start_date"),
        ({"start_date": "0001-01-01", "end_date": "9999-12-31"}, "end_date"),
        ({"start_date": "1899-12-31"}, "start_date"),
        ({"end_date": "2101-01-01"}, "end_date"),
        ({"start_date": "2101-01-01"}, "start_date"),
        ({"end_date": "1899-12-31"}, "end_date"),
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
        "absorb_alive",
        "last_audit",
    }
    assert body["absorb_alive"] is False
    assert body["last_audit"] is None


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


def test_a_rebuild_over_the_whole_supported_range_runs(staff_client):
    # The edges themselves: a view in the first and in the last second of the range.
    views_record(
        views=[
            (_blog_id(), "US", datetime(1900, 1, 1, tzinfo=UTC)),
            (_blog_id(), "DE", datetime(2100, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
        ]
    )
    response = staff_client.post(
        REBUILD, {"start_date": "1900-01-01", "end_date": "2100-12-31"}, format="json"
    )
    assert response.status_code == 202
    job = rebuild_job_run(job_id=response.json()["job_id"])
    assert (job.state, job.error, job.views_rebuilt) == ("done", "", 2)
    assert_summaries_exact()


def _blog_id() -> int:
    author = get_user_model().objects.get_or_create(username="edge-author")[0]
    return Blog.objects.get_or_create(title="Edges", author=author)[0].pk


def test_the_same_range_while_its_job_is_queued_or_running_returns_that_job(staff_client):
    body = {"start_date": "2024-01-01", "end_date": "2024-03-31"}
    first = staff_client.post(REBUILD, body, format="json")
    assert first.status_code == 202
    again = staff_client.post(REBUILD, body, format="json")
    assert again.status_code == 200
    assert again.json() == {"job_id": first.json()["job_id"], "created": False, "state": "queued"}
    RebuildJob.objects.update(state="running")
    assert staff_client.post(REBUILD, body, format="json").json()["state"] == "running"
    assert RebuildJob.objects.count() == 1
    # Once it has ended, the same range queues a new job.
    RebuildJob.objects.update(state="done")
    after = staff_client.post(REBUILD, body, format="json")
    assert after.status_code == 202
    assert after.json()["job_id"] != first.json()["job_id"]


@pytest.mark.parametrize(
    ("active", "requested"),
    [
        (("2024-01-01", "2024-03-31"), ("2024-03-31", "2024-04-30")),
        (("2024-01-01", "2024-03-31"), ("2024-02-01", "2024-02-29")),
        (("2024-01-01", "2024-03-31"), ("2023-01-01", None)),
        (("2024-01-01", "2024-03-31"), (None, None)),
        ((None, "2024-03-31"), ("2024-03-01", "2024-03-01")),
        ((None, None), ("2024-03-01", "2024-03-01")),
    ],
)
def test_an_overlapping_other_range_is_409_naming_the_job(staff_client, active, requested):
    job = RebuildJob.objects.create(start_date=active[0], end_date=active[1], state="running")
    response = staff_client.post(
        REBUILD, {"start_date": requested[0], "end_date": requested[1]}, format="json"
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "rebuild_overlaps"
    assert str(job.pk) in error["message"]
    assert "running" in error["message"]
    assert RebuildJob.objects.count() == 1


def test_ranges_that_do_not_overlap_each_get_a_job(staff_client):
    RebuildJob.objects.create(start_date="2024-01-01", end_date="2024-03-31", state="running")
    RebuildJob.objects.create(start_date="2024-04-01", end_date="2024-04-30", state="failed")
    for body in (
        {"start_date": "2024-04-01", "end_date": "2024-04-30"},
        {"start_date": "2023-01-01", "end_date": "2023-12-31"},
        {"start_date": "2024-05-01"},
    ):
        assert staff_client.post(REBUILD, body, format="json").status_code == 202
    assert RebuildJob.objects.filter(state="queued").count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_cannot_take_the_task_gives_503_and_a_failed_job(
    staff_client, unreachable_broker
):
    started = time.monotonic()
    response = staff_client.post(
        REBUILD, {"start_date": "2024-01-01", "end_date": "2024-03-31"}, format="json"
    )
    # Sending is bounded in time, even when the broker never answers.
    assert time.monotonic() - started < 15
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "broker_unavailable"
    assert response["Retry-After"] == "10"
    job = RebuildJob.objects.get()
    assert str(job.pk) in error["message"]
    assert job.state == "failed"
    assert job.finished_at is not None
    assert "broker could not take this job" in job.error
    assert error["details"][0]["reason"] in job.error
    # A failed job does not block a new request once the broker is back.
    assert RebuildJob.objects.filter(state__in=["queued", "running"]).count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_make_one_job_and_send_one_task(
    auth_client, staff_user, private_broker
):
    same = {"start_date": "2024-01-01", "end_date": "2024-03-31"}
    other = {"start_date": "2024-03-01", "end_date": "2024-06-30"}
    bodies = [same if n % 2 else other for n in range(20)]
    clients = [auth_client(staff_user) for _ in bodies]
    ready = threading.Barrier(len(bodies))
    answers: list[tuple[dict, int, dict]] = []
    errors: list[BaseException] = []

    def request(client, body) -> None:
        try:
            ready.wait(timeout=30)
            response = client.post(REBUILD, body, format="json")
            answers.append((body, response.status_code, response.json()))
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=request, args=(client, body))
        for client, body in zip(clients, bodies, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    job = RebuildJob.objects.get()
    assert len(private_broker()) == 1
    statuses = sorted(code for _, code, _ in answers)
    winner = {"start_date": str(job.start_date), "end_date": str(job.end_date)}
    assert statuses == sorted([202] + [200] * 9 + [409] * 10)
    for body, code, answer in answers:
        if body == winner:
            assert answer["job_id"] == str(job.pk)
            assert answer["created"] is (code == 202)
        else:
            assert code == 409
            assert str(job.pk) in answer["error"]["message"]
