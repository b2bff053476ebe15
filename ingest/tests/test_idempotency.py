"""Idempotent ingest: the ``Idempotency-Key`` header, its replay window and its expiry."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.test import APIClient

from core.exceptions import ApplicationError
from ingest.models import BlogView, IdempotencyKey
from ingest.services import (
    IDEMPOTENCY_WINDOW,
    idempotency_keys_delete_expired,
    views_ingest_idempotent,
)
from ingest.tasks import delete_expired_idempotency_keys_task
from worker.celery import beat_schedule

URL = "/api/ingest/views/"
FIRST = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ingester(db):
    user = get_user_model().objects.create_user(username="ingester", password="x")
    user.user_permissions.add(Permission.objects.get(codename="add_blogview"))
    return user


def _client_for(user) -> APIClient:
    # Authenticated without a token: the frozen clocks below would find a JWT expired or not
    # yet valid, and authentication is not under test here.
    client = APIClient()
    client.force_authenticate(user)
    return client


def _body(blogs, count: int = 3) -> dict[str, Any]:
    # One view without viewed_at: it is dated when first stored, and a replay must not store it.
    views = [
        {"blog_id": blogs[n % 3].pk, "country_code": "de", "viewed_at": "2025-05-01T08:00:00Z"}
        for n in range(count - 1)
    ]
    return {"views": [*views, {"blog_id": blogs[0].pk, "country_code": "ZZ"}]}


def _post(client: APIClient, body: Any, key: str | None) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(URL, body, format="json", headers=headers)


def _stored() -> list[tuple[int, str, datetime]]:
    return sorted(BlogView.objects.values_list("blog_id", "country_id", "viewed_at"))


def test_same_key_and_body_thrice_stores_once_and_answers_alike(ingester, blogs):
    client = _client_for(ingester)
    answers = []
    for minutes in (0, 1, 60):
        with time_machine.travel(FIRST + timedelta(minutes=minutes), tick=False):
            answers.append(_post(client, _body(blogs), key="order-42"))

    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json() for a in answers] == [{"accepted": 3}] * 3
    assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true", "true"]
    # The undated view is stored once, dated at the first request.
    assert sorted(row[1:] for row in _stored()) == [
        ("DE", datetime(2025, 5, 1, 8, tzinfo=UTC)),
        ("DE", datetime(2025, 5, 1, 8, tzinfo=UTC)),
        ("ZZ", FIRST),
    ]
    assert list(IdempotencyKey.objects.values_list("key", "status", "body", "created_at")) == [
        ("order-42", 202, {"accepted": 3}, FIRST)
    ]


def test_the_body_is_compared_as_json_not_as_bytes(ingester, blogs):
    client = _client_for(ingester)
    body = _body(blogs)
    assert _post(client, body, key="k").status_code == 202
    # Another key order and spacing: the same JSON, so the same request.
    reordered = json.dumps(
        {"views": [dict(reversed(view.items())) for view in body["views"]]}, indent=2
    )
    retry = client.generic(
        "POST",
        URL,
        reordered,
        content_type="application/json",
        headers={"Idempotency-Key": "k"},
    )
    assert retry.status_code == 202
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert BlogView.objects.count() == 3


@pytest.mark.parametrize(
    "change",
    [
        lambda body: body["views"].pop(),
        lambda body: body["views"][0].update(country_code="DE"),  # was "de"
        lambda body: body["views"].reverse(),
    ],
)
def test_same_key_with_a_different_body_is_409_and_stores_nothing(ingester, blogs, change):
    client = _client_for(ingester)
    body = _body(blogs)
    assert _post(client, body, key="k").status_code == 202
    change(body)
    response = _post(client, body, key="k")
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "status": 409,
            "code": "idempotency_key_reused",
            "message": (
                "This Idempotency-Key was used in the last 24 hours for a different body; "
                "send a new key with a new request."
            ),
            "details": [{"field": "Idempotency-Key", "reason": "used for a different body"}],
        }
    }
    assert "Idempotent-Replayed" not in response.headers
    assert BlogView.objects.count() == 3
    # The key still answers for its first body.
    assert _post(client, _body(blogs), key="k").status_code == 202
    assert BlogView.objects.count() == 3


def test_keys_are_scoped_to_the_user(ingester, blogs):
    other = get_user_model().objects.create_user(username="ops", password="x", is_staff=True)
    first = _post(_client_for(ingester), _body(blogs), key="shared")
    second = _post(_client_for(other), _body(blogs, count=2), key="shared")
    assert (first.status_code, first.json()) == (202, {"accepted": 3})
    assert (second.status_code, second.json()) == (202, {"accepted": 2})
    assert "Idempotent-Replayed" not in second.headers
    assert BlogView.objects.count() == 5
    assert sorted(IdempotencyKey.objects.values_list("user__username", "key")) == [
        ("ingester", "shared"),
        ("ops", "shared"),
    ]


def test_a_400_stores_no_key_so_the_corrected_retry_may_reuse_it(ingester, blogs):
    client = _client_for(ingester)
    bad = {"views": [{"blog_id": blogs[0].pk, "country_code": "XX"}]}
    assert _post(client, bad, key="k").status_code == 400
    assert not IdempotencyKey.objects.exists()
    corrected = _post(client, {"views": [{"blog_id": blogs[0].pk, "country_code": "FR"}]}, "k")
    assert (corrected.status_code, corrected.json()) == (202, {"accepted": 1})
    assert "Idempotent-Replayed" not in corrected.headers
    assert BlogView.objects.count() == 1


def test_without_a_key_every_request_stores(ingester, blogs):
    client = _client_for(ingester)
    for _ in range(2):
        response = _post(client, _body(blogs), key=None)
        assert (response.status_code, response.json()) == (202, {"accepted": 3})
    assert BlogView.objects.count() == 6
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "must be 1 to 255 characters; got 0"),
        ("k" * 256, "must be 1 to 255 characters; got 256"),
        ("caf\u00e9", "must be printable ASCII without spaces at either end"),
        ("tab\there", "must be printable ASCII without spaces at either end"),
        ("nul\x00", "must be printable ASCII without spaces at either end"),
        (" padded", "must be printable ASCII without spaces at either end"),
        ("padded ", "must be printable ASCII without spaces at either end"),
        (" ", "must be printable ASCII without spaces at either end"),
    ],
)
def test_a_malformed_key_is_400_naming_the_header(ingester, blogs, key, reason):
    response = _post(_client_for(ingester), _body(blogs), key=key)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == f"The Idempotency-Key header {reason}."
    assert error["details"] == [{"field": "Idempotency-Key", "reason": reason}]
    assert BlogView.objects.count() == 0
    assert not IdempotencyKey.objects.exists()


def test_the_longest_key_and_punctuation_are_accepted(ingester, blogs):
    client = _client_for(ingester)
    for key in ("k" * 255, "~", "a b", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|} ~"):
        assert _post(client, _body(blogs), key=key).status_code == 202
        assert _post(client, _body(blogs), key=key).headers["Idempotent-Replayed"] == "true"
    assert BlogView.objects.count() == 12


def test_a_key_is_replayed_for_24_hours_then_counts_as_unused(ingester, blogs):
    def post_at(moment: datetime, body: dict[str, Any]) -> Any:
        with time_machine.travel(moment, tick=False):
            return _post(_client_for(ingester), body, key="k")

    assert post_at(FIRST, _body(blogs)).status_code == 202
    almost = post_at(FIRST + IDEMPOTENCY_WINDOW - timedelta(seconds=1), _body(blogs))
    assert almost.headers["Idempotent-Replayed"] == "true"
    assert (
        post_at(FIRST + IDEMPOTENCY_WINDOW - timedelta(seconds=1), _body(blogs, 2)).status_code
        == 409
    )
    assert BlogView.objects.count() == 3

    # At 24 hours the key is free again, even for another body, and starts a new window.
    later = FIRST + IDEMPOTENCY_WINDOW
    reused = post_at(later, _body(blogs, count=2))
    assert (reused.status_code, reused.json()) == (202, {"accepted": 2})
    assert "Idempotent-Replayed" not in reused.headers
    assert BlogView.objects.count() == 5
    assert list(IdempotencyKey.objects.values_list("body", "created_at")) == [
        ({"accepted": 2}, later)
    ]
    replay = post_at(later + timedelta(hours=1), _body(blogs, count=2))
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert BlogView.objects.count() == 5


def _key_at(user, key: str, created_at: datetime) -> IdempotencyKey:
    return IdempotencyKey.objects.create(
        user=user,
        key=key,
        request_hash="0" * 64,
        status=202,
        body={"accepted": 1},
        created_at=created_at,
    )


def test_the_periodic_task_deletes_the_keys_past_the_window(ingester):
    for hours in (48, 25, 24):
        _key_at(ingester, f"old-{hours}", FIRST - timedelta(hours=hours))
    for hours in (23, 0):
        _key_at(ingester, f"live-{hours}", FIRST - timedelta(hours=hours))
    with time_machine.travel(FIRST, tick=False):
        assert delete_expired_idempotency_keys_task() == 3
        assert delete_expired_idempotency_keys_task() == 0
    assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == ["live-0", "live-23"]


def test_beat_runs_the_expiry_hourly_within_the_default_time_limits():
    entry = beat_schedule(rollup_interval_seconds=30)["delete expired idempotency keys"]
    assert entry == {
        "task": "ingest.delete_expired_idempotency_keys",
        "schedule": 3600.0,
        "options": {"expires": 3600},
    }
    task = delete_expired_idempotency_keys_task
    assert task.name == entry["task"]
    # The CELERY_TASK_* default limits: chunks of 10,000 keys take well under a second each.
    assert (task.soft_time_limit, task.time_limit) == (120, 150)


def test_expiry_deletes_in_chunks(ingester):
    for n in range(7):
        _key_at(ingester, f"old-{n}", FIRST - timedelta(days=2, minutes=n))
    _key_at(ingester, "live", FIRST)
    assert idempotency_keys_delete_expired(now=FIRST, chunk=3) == 7
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["live"]


def test_a_deleted_key_is_free_again(ingester, blogs):
    with time_machine.travel(FIRST, tick=False):
        assert _post(_client_for(ingester), _body(blogs), key="k").status_code == 202
    with time_machine.travel(FIRST + timedelta(days=2), tick=False):
        assert delete_expired_idempotency_keys_task() == 1
        response = _post(_client_for(ingester), _body(blogs, count=1), key="k")
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    assert BlogView.objects.count() == 4


def test_the_service_rejects_a_reused_key_with_409(ingester, blogs):
    views_ingest_idempotent(
        payload=_body(blogs), user_id=ingester.pk, idempotency_key="k", now=FIRST
    )
    with pytest.raises(ApplicationError) as raised:
        views_ingest_idempotent(
            payload=_body(blogs, count=1), user_id=ingester.pk, idempotency_key="k", now=FIRST
        )
    assert raised.value.status == 409


def test_the_schema_documents_the_key_the_replay_and_the_409(api_client):
    document = json.loads(api_client.get("/api/schema/", {"format": "json"}).content)
    operation = document["paths"]["/api/ingest/views/"]["post"]
    [parameter] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert parameter["in"] == "header"
    assert not parameter.get("required", False)
    assert parameter["schema"]["maxLength"] == 255
    assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"]
    assert "409" in operation["responses"]


def test_the_admin_lists_the_keys_read_only(ingester, blogs, django_user_model):
    assert _post(_client_for(ingester), _body(blogs), key="order-42").status_code == 202
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser(username="root", password="x"))
    page = admin.get("/admin/ingest/idempotencykey/")
    assert page.status_code == 200
    assert b"order-42" in page.content
    key = IdempotencyKey.objects.get()
    assert admin.get(f"/admin/ingest/idempotencykey/{key.pk}/delete/").status_code == 403
    assert admin.post(f"/admin/ingest/idempotencykey/{key.pk}/change/", {}).status_code == 403
