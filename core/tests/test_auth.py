"""JWT tokens and who may ingest (API.md section 2). Every token here is issued by /api/token/."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

INGEST_URL = "/api/ingest/views/"


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The standard error body with a readable message; returns the ``error`` object."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"status", "code", "message", "details"}
    assert error["status"] == status
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    # A message is a sentence for people, not the repr of a Python structure.
    assert "ErrorDetail" not in error["message"]
    assert not error["message"].startswith(("{", "["))
    assert isinstance(error["details"], list)
    return error


def test_token_with_right_credentials_gives_access_and_refresh(
    api_client: APIClient, user: Any, password: str
) -> None:
    response = api_client.post(
        "/api/token/", {"username": user.username, "password": password}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh"}
    assert body["access"]
    assert body["refresh"]
    assert body["access"] != body["refresh"]


def test_token_with_wrong_password_is_401_in_the_standard_error_shape(
    api_client: APIClient, user: Any
) -> None:
    response = api_client.post(
        "/api/token/", {"username": user.username, "password": "not-the-password"}, format="json"
    )

    error = _assert_error(response, 401, "no_active_account")
    assert error["details"] == []


def test_token_for_an_inactive_user_is_401(api_client: APIClient, user: Any, password: str) -> None:
    user.is_active = False
    user.save()

    response = api_client.post(
        "/api/token/", {"username": user.username, "password": password}, format="json"
    )

    _assert_error(response, 401, "no_active_account")


@pytest.mark.parametrize("missing", ["username", "password"])
def test_token_without_a_field_is_400_naming_it(
    api_client: APIClient, user: Any, password: str, missing: str
) -> None:
    credentials = {"username": user.username, "password": password}
    del credentials[missing]

    response = api_client.post("/api/token/", credentials, format="json")

    error = _assert_error(response, 400, "invalid")
    assert error["details"] == [{"field": missing, "reason": "This field is required."}]
    assert missing in error["message"]


def test_refresh_gives_a_new_access_token_that_authenticates(
    api_client: APIClient, ingest_user: Any, password: str
) -> None:
    tokens = api_client.post(
        "/api/token/", {"username": ingest_user.username, "password": password}, format="json"
    ).json()

    response = api_client.post("/api/token/refresh/", {"refresh": tokens["refresh"]}, format="json")

    assert response.status_code == 200
    access = response.json()["access"]
    assert access
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    assert client.post(INGEST_URL, {}, format="json").status_code == 400


def test_refresh_with_an_access_token_is_401(
    api_client: APIClient, user: Any, password: str
) -> None:
    tokens = api_client.post(
        "/api/token/", {"username": user.username, "password": password}, format="json"
    ).json()

    response = api_client.post("/api/token/refresh/", {"refresh": tokens["access"]}, format="json")

    _assert_error(response, 401, "token_not_valid")


def test_refresh_with_garbage_is_401_in_the_standard_error_shape(api_client: APIClient) -> None:
    response = api_client.post("/api/token/refresh/", {"refresh": "garbage"}, format="json")

    _assert_error(response, 401, "token_not_valid")


def test_ingest_without_credentials_is_401_with_a_bearer_challenge(api_client: APIClient) -> None:
    response = api_client.post(INGEST_URL, {}, format="json")

    _assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIn0.c2lnbmF0dXJl",
    ],
    ids=["not-a-jwt", "jwt-with-a-forged-signature"],
)
def test_ingest_with_an_invalid_token_is_401(api_client: APIClient, authorization: str) -> None:
    response = api_client.post(INGEST_URL, {}, format="json", HTTP_AUTHORIZATION=authorization)

    _assert_error(response, 401, "token_not_valid")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_ingest_with_a_refresh_token_as_bearer_is_401(
    api_client: APIClient, staff_user: Any, password: str
) -> None:
    tokens = api_client.post(
        "/api/token/", {"username": staff_user.username, "password": password}, format="json"
    ).json()

    response = api_client.post(
        INGEST_URL, {}, format="json", HTTP_AUTHORIZATION=f"Bearer {tokens['refresh']}"
    )

    _assert_error(response, 401, "token_not_valid")


def test_ingest_by_a_user_without_the_permission_is_403(
    auth_client: Callable[[Any], APIClient], user: Any
) -> None:
    response = auth_client(user).post(INGEST_URL, {}, format="json")

    error = _assert_error(response, 403, "permission_denied")
    assert "ingest.add_blogview" in error["message"]


def test_ingest_by_a_user_holding_add_blogview_is_allowed(
    auth_client: Callable[[Any], APIClient], ingest_user: Any
) -> None:
    # An empty body gets past authentication and permission to the endpoint's own validation.
    response = auth_client(ingest_user).post(INGEST_URL, {}, format="json")

    error = _assert_error(response, 400, "invalid")
    assert error["details"] == [{"field": "views", "reason": "this field is required"}]


def test_ingest_by_staff_is_allowed(
    auth_client: Callable[[Any], APIClient], staff_user: Any
) -> None:
    assert not staff_user.is_superuser
    assert not staff_user.user_permissions.exists()

    response = auth_client(staff_user).post(INGEST_URL, {}, format="json")

    _assert_error(response, 400, "invalid")


def test_a_token_stops_working_when_its_user_is_deactivated(
    auth_client: Callable[[Any], APIClient], ingest_user: Any
) -> None:
    client = auth_client(ingest_user)
    ingest_user.is_active = False
    ingest_user.save()

    response = client.post(INGEST_URL, {}, format="json")

    assert response.status_code == 401


def test_an_expired_access_token_is_401_saying_it_expired(
    auth_client: Callable[[Any], APIClient], ingest_user: Any
) -> None:
    client = auth_client(ingest_user)
    lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]

    with time_machine.travel(timezone.now() + lifetime + timedelta(minutes=1), tick=False):
        response = client.post(INGEST_URL, {}, format="json")

    error = _assert_error(response, 401, "token_not_valid")
    assert error["details"] == [{"field": None, "reason": "Token is expired"}]


@pytest.mark.django_db
def test_a_read_token_is_remembered_until_it_expires_and_not_a_second_longer(
    api_client: APIClient, user: Any, password: str, settings: Any
) -> None:
    # Read endpoints remember a validated token (ReadTokenAuthentication): until its exp only,
    # and only those exact bytes.
    settings.ANALYTICS_PUBLIC_READ = False
    token = api_client.post(
        "/api/token/", {"username": user.username, "password": password}, format="json"
    ).json()["access"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    issued = timezone.now()
    read = "/api/analytics/top/blog/"
    assert client.post(read, {}, format="json").status_code == 200
    with time_machine.travel(issued + lifetime - timedelta(seconds=5), tick=False):
        assert client.post(read, {}, format="json").status_code == 200
    with time_machine.travel(issued + lifetime + timedelta(seconds=5), tick=False):
        response = client.post(read, {}, format="json")
    error = _assert_error(response, 401, "token_not_valid")
    assert error["details"] == [{"field": None, "reason": "Token is expired"}]
    # A token with one character changed is another token: checked, and refused.
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION=f"Bearer {flipped}")
    assert forged.post(read, {}, format="json").status_code == 401


# --- A token whose user is gone, inactive or has a new password ---------------------------------

STAFF_URLS = ["/api/rollups/status/", "/api/rollups/jobs/3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10/"]


def _tokens(client: APIClient, user: Any, password: str) -> dict[str, str]:
    response = client.post(
        "/api/token/", {"username": user.username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    return dict(response.json())


def _change(user: Any, change: str) -> None:
    if change == "deleted":
        user.delete()
    elif change == "deactivated":
        user.is_active = False
        user.save()
    else:
        user.set_password("a-new-password-entirely")
        user.save()


CHANGES = {
    "deleted": "user_not_found",
    "deactivated": "user_inactive",
    "password-changed": "password_changed",
}


@pytest.mark.parametrize(("change", "code"), CHANGES.items())
def test_refresh_for_a_changed_user_is_401(
    api_client: APIClient, staff_user: Any, password: str, change: str, code: str
) -> None:
    refresh = _tokens(api_client, staff_user, password)["refresh"]
    _change(staff_user, change)

    response = api_client.post("/api/token/refresh/", {"refresh": refresh}, format="json")

    _assert_error(response, 401, code)


@pytest.mark.parametrize(("change", "code"), CHANGES.items())
@pytest.mark.parametrize("url", [INGEST_URL, *STAFF_URLS])
def test_an_access_token_for_a_changed_user_is_401_where_the_user_is_looked_up(
    api_client: APIClient, staff_user: Any, password: str, change: str, code: str, url: str
) -> None:
    access = _tokens(api_client, staff_user, password)["access"]
    _change(staff_user, change)

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    response = client.post(url, {}, format="json") if url == INGEST_URL else client.get(url)

    _assert_error(response, 401, code)


def test_refresh_after_the_password_changed_back_and_a_new_login_works(
    api_client: APIClient, staff_user: Any, password: str
) -> None:
    _change(staff_user, "password-changed")
    staff_user.set_password(password)
    staff_user.save()
    refresh = _tokens(api_client, staff_user, password)["refresh"]

    response = api_client.post("/api/token/refresh/", {"refresh": refresh}, format="json")

    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "refresh",
    [
        "",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.",
        "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9." + "A" * 10_000,
    ],
    ids=["empty", "three-parts", "alg-none", "long-signature"],
)
def test_refresh_with_a_malformed_token_is_4xx(api_client: APIClient, refresh: str) -> None:
    response = api_client.post("/api/token/refresh/", {"refresh": refresh}, format="json")

    assert response.status_code in (400, 401), response.content
    assert set(response.json()["error"]) == {"status", "code", "message", "details"}
