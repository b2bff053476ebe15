"""Health endpoints and the JSON error pages.

Each "down" test points one dependency at a real address that does not serve it: a closed port
(refused at once), a port that accepts connections and never answers (a hung server), a database
file in a missing directory. Nothing is mocked.
"""

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.db.utils import load_backend
from django.test import override_settings
from rest_framework.test import APIClient

from worker.celery import app as celery_app

# Nothing listens on port 1: connections are refused at once.
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"

# Long enough for a loaded CI machine, short enough to catch a probe that retries or hangs.
PROBE_SECONDS = 3.0


@pytest.fixture
def silent_redis_url() -> Iterator[str]:
    """A Redis URL whose server accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


@pytest.fixture(params=["refused", "silent"])
def unreachable_redis(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(url, error)``: a Redis that refuses connections or never answers, and the error name
    the redis client raises for it."""
    if request.param == "refused":
        return CLOSED_REDIS_URL, "ConnectionError"
    return request.getfixturevalue("silent_redis_url"), "TimeoutError"


READYZ_TOKEN = "monitor-token-for-tests"


@pytest.fixture(autouse=True)
def _readyz_token(settings: Any) -> None:
    settings.READYZ_TOKEN = READYZ_TOKEN


def _ready(client: APIClient) -> tuple[Any, float]:
    """``/readyz`` as a monitor holding ``READYZ_TOKEN`` (which sees the errors), and its time."""
    started = time.monotonic()
    response = client.get("/readyz", HTTP_X_READYZ_TOKEN=READYZ_TOKEN)
    return response, time.monotonic() - started


def _assert_only_down(response: Any, name: str, error: str) -> None:
    """Exactly ``name`` is reported down, by the connection error a real outage raises."""
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["unavailable"] == [name]
    assert body["checks"][name].startswith(f"unavailable: {error}: ")
    others = {key: value for key, value in body["checks"].items() if key != name}
    assert others == {other: "ok" for other in {"database", "cache", "broker"} - {name}}


def test_healthz_answers_ok_without_touching_the_database(api_client: APIClient) -> None:
    # No django_db mark: a query would fail the test. Liveness must not depend on the database.
    response = api_client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_answers_ready_when_every_dependency_answers(api_client: APIClient) -> None:
    response = api_client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "cache": "ok", "broker": "ok"},
        # Staff and the READYZ_TOKEN only.
        "absorb": None,
    }


def _redis_cache_at(location: str) -> dict[str, Any]:
    """The project's Redis cache (its own timeouts) moved to ``location``; on the embedded
    default, whose cache is in-process, a Redis cache with the same short timeouts."""
    configured = settings.CACHES["default"]
    if configured["BACKEND"].endswith("RedisCache"):
        return {"default": {**configured, "LOCATION": location}}
    return {
        "default": {
            "BACKEND": "core.cache.RedisCache",
            "LOCATION": location,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


@pytest.mark.django_db
def test_readyz_names_the_cache_when_it_is_down(
    api_client: APIClient, unreachable_redis: tuple[str, str]
) -> None:
    url, error = unreachable_redis
    with override_settings(CACHES=_redis_cache_at(url)):
        response, elapsed = _ready(api_client)

    _assert_only_down(response, "cache", error)
    assert elapsed < PROBE_SECONDS


@contextmanager
def _broker_at(url: str) -> Iterator[None]:
    original = celery_app.conf["broker_url"]
    celery_app.conf["broker_url"] = url
    try:
        yield
    finally:
        celery_app.conf["broker_url"] = original


@pytest.mark.django_db
def test_readyz_names_the_broker_when_it_is_down(
    api_client: APIClient, unreachable_redis: tuple[str, str]
) -> None:
    url, _ = unreachable_redis
    with _broker_at(url):
        response, elapsed = _ready(api_client)

    # kombu wraps the redis client's error.
    _assert_only_down(response, "broker", "OperationalError")
    assert elapsed < PROBE_SECONDS


@pytest.fixture
def database_down(tmp_path: Path) -> Iterator[None]:
    """Swap the default connection for one to a database that cannot be reached.

    The test's transaction stays open on the original connection object, which is put back
    untouched afterwards.
    """
    original = connections["default"]
    unreachable = {**original.settings_dict}
    if original.vendor == "sqlite":
        unreachable["NAME"] = str(tmp_path / "missing-directory" / "db.sqlite3")
    else:
        unreachable.update(HOST="127.0.0.1", PORT="1")
    backend = load_backend(original.settings_dict["ENGINE"])
    broken = backend.DatabaseWrapper(unreachable, "default")
    connections["default"] = broken
    try:
        yield
    finally:
        connections["default"] = original
        broken.close()


@pytest.mark.django_db
@pytest.mark.usefixtures("database_down")
def test_readyz_names_the_database_when_it_is_down(api_client: APIClient) -> None:
    response, elapsed = _ready(api_client)

    _assert_only_down(response, "database", "OperationalError")
    assert elapsed < PROBE_SECONDS


@pytest.mark.django_db
def test_readyz_tells_anonymous_callers_what_is_down_but_not_why(api_client: APIClient) -> None:
    with _broker_at(CLOSED_REDIS_URL):
        anonymous = api_client.get("/readyz")
        wrong_token = api_client.get("/readyz", HTTP_X_READYZ_TOKEN="guess")

    for response in (anonymous, wrong_token):
        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "checks": {"database": "ok", "cache": "ok", "broker": "unavailable"},
            "unavailable": ["broker"],
            "absorb": None,
        }


@pytest.mark.django_db
def test_readyz_shows_staff_why_a_dependency_is_down(
    auth_client: Any, staff_user: Any, user: Any
) -> None:
    staff, plain = auth_client(staff_user), auth_client(user)
    with _broker_at(CLOSED_REDIS_URL):
        for_staff = staff.get("/readyz")
        for_user = plain.get("/readyz")

    _assert_only_down(for_staff, "broker", "OperationalError")
    assert for_user.json()["checks"]["broker"] == "unavailable"


@pytest.mark.django_db
def test_readyz_answers_a_staff_token_while_the_database_is_down(
    api_client: APIClient, staff_token: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("database_down")  # after the token was issued
    # The user cannot be looked up: the caller is treated as anonymous, and the answer comes.
    response = api_client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {staff_token}")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unavailable"


@pytest.mark.django_db
def test_requests_while_the_database_is_down_answer_503_not_500(
    api_client: APIClient, staff_token: str, request: pytest.FixtureRequest, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    request.getfixturevalue("database_down")  # after the token was issued
    signed_in = APIClient()
    signed_in.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")

    answers = [
        api_client.post("/api/analytics/top/country/", {}, format="json"),
        api_client.post("/api/token/", {"username": "someone", "password": "x"}, format="json"),
        signed_in.post(
            "/api/ingest/views/", {"views": [{"blog_id": 1, "country_code": "US"}]}, format="json"
        ),
        signed_in.get("/api/rollups/status/"),
    ]

    for response in answers:
        assert response.status_code == 503, response.content
        assert response["Retry-After"] == "5"
        error = response.json()["error"]
        assert error["code"] == "database_unavailable"
        # Hosts, ports and paths stay in the log.
        assert error["details"] == [{"field": None, "reason": "database unavailable"}]


@pytest.fixture
def staff_token(staff_user: Any, password: str, api_client: APIClient) -> str:
    response = api_client.post(
        "/api/token/", {"username": staff_user.username, "password": password}, format="json"
    )
    return str(response.json()["access"])


@pytest.mark.django_db
def test_readyz_is_ready_again_once_the_broker_is_back(api_client: APIClient) -> None:
    # The probe opens a fresh broker connection each time: no state left over from an outage.
    with _broker_at(CLOSED_REDIS_URL):
        assert api_client.get("/readyz").status_code == 503

    assert api_client.get("/readyz").status_code == 200


@pytest.mark.parametrize("url", ["/no-such-page", "/api/no-such-endpoint/"])
def test_unknown_url_answers_404_in_the_standard_error_shape(
    api_client: APIClient, url: str
) -> None:
    response = api_client.get(url)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {
            "status": 404,
            "code": "not_found",
            "message": f"No such URL: {url}. The API's endpoints are described at /swagger/ "
            "and /redoc/ (schema: /api/schema/).",
            "details": [],
        }
    }


def test_wrong_method_answers_405_in_the_standard_error_shape(api_client: APIClient) -> None:
    response = api_client.post("/healthz", {}, format="json")

    assert response.status_code == 405
    assert response.json() == {
        "error": {
            "status": 405,
            "code": "method_not_allowed",
            "message": 'Method "POST" not allowed.',
            "details": [],
        }
    }
