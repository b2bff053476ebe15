"""Concurrent requests with one ``Idempotency-Key`` through a live HTTP server.

The live server answers each request in its own thread with its own database connection, so
the requests race in the database as they would across gunicorn workers.
"""

import http.client
import json
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from rest_framework_simplejwt.tokens import RefreshToken

from core.models import Blog
from ingest.models import BlogView, IdempotencyKey
from ingest.services import views_ingest_idempotent

URL = "/api/ingest/views/"
CLIENTS = 8

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user(username="ops", password="x", is_staff=True)


@pytest.fixture
def blog_ids(staff) -> list[int]:
    return [Blog.objects.create(title=f"Blog {n}", author=staff).pk for n in range(3)]


def _body(blog_ids: list[int], count: int) -> bytes:
    views = [{"blog_id": blog_ids[n % 3], "country_code": "JP"} for n in range(count)]
    return json.dumps({"views": views}).encode()


def _post(server_url: str, user, key: str, body: bytes) -> tuple[int, dict[str, Any], bool]:
    """POST over a socket; return the status, the JSON body and whether it was a replay."""
    conn = http.client.HTTPConnection(urlsplit(server_url).netloc, timeout=120)
    try:
        conn.request(
            "POST",
            URL,
            body,
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {RefreshToken.for_user(user).access_token}",
                "Idempotency-Key": key,
            },
        )
        response = conn.getresponse()
        payload = json.loads(response.read())
        return response.status, payload, response.getheader("Idempotent-Replayed") == "true"
    finally:
        conn.close()


def _race(server_url: str, user, key: str, bodies: list[bytes]) -> list[Any]:
    """Send every body at once, one thread each; return the answers in the bodies' order."""
    start = threading.Barrier(len(bodies))
    answers: list[Any] = [None] * len(bodies)

    def send(index: int) -> None:
        start.wait()
        try:
            answers[index] = _post(server_url, user, key, bodies[index])
        except BaseException as exc:  # reported by the test, not lost in the thread
            answers[index] = exc

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_requests_with_one_key_and_body_store_once(live_server, staff, blog_ids):
    # A batch large enough that the first transaction is still writing when the others arrive.
    answers = _race(live_server.url, staff, "same", [_body(blog_ids, 2000)] * CLIENTS)

    assert all(isinstance(answer, tuple) for answer in answers), answers
    first = [answer for answer in answers if answer[:2] == (202, {"accepted": 2000})]
    conflicts = [answer for answer in answers if answer[0] == 409]
    assert len(first) + len(conflicts) == CLIENTS, answers
    assert [replayed for _, _, replayed in first].count(False) == 1
    assert BlogView.objects.count() == 2000
    assert IdempotencyKey.objects.count() == 1


def test_concurrent_requests_with_one_key_and_different_bodies_store_one(
    live_server, staff, blog_ids
):
    bodies = [_body(blog_ids, count) for count in range(1001, 1001 + CLIENTS)]
    answers = _race(live_server.url, staff, "same", bodies)

    assert all(isinstance(answer, tuple) for answer in answers), answers
    accepted = [answer for answer in answers if answer[0] == 202]
    assert len(accepted) == 1, answers
    _, body, replayed = accepted[0]
    assert not replayed
    assert BlogView.objects.count() == body["accepted"]
    for other in answers:
        if other is not accepted[0]:
            assert other[0] == 409
            assert other[1]["error"]["code"] == "idempotency_key_reused"
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite lets one writer in at a time: a second one waits for the lock, not the key",
)
def test_a_request_waits_for_the_first_one_in_flight_and_replays_its_answer(
    live_server, staff, blog_ids
):
    body = _body(blog_ids, 5)
    claimed, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first_request() -> None:
        # The first request's transaction, held open after it has stored the key and the views.
        try:
            with transaction.atomic():
                views_ingest_idempotent(
                    payload=json.loads(body), user_id=staff.pk, idempotency_key="k"
                )
                claimed.set()
                release.wait(timeout=120)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=first_request)
    holder.start()
    retry: list[Any] = []
    waiter = threading.Thread(target=lambda: retry.append(_post(live_server.url, staff, "k", body)))
    try:
        assert claimed.wait(timeout=60)
        waiter.start()
        waiter.join(timeout=2)
        # Still waiting on the first request's uncommitted key, not answering on its own.
        assert waiter.is_alive()
    finally:
        release.set()
        holder.join()
    waiter.join(timeout=120)
    assert not errors, errors
    assert retry == [(202, {"accepted": 5}, True)]
    assert BlogView.objects.count() == 5
