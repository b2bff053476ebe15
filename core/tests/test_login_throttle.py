"""Failed sign-ins are throttled per username and per client address, on the API and in the admin,
before any password is hashed; successful sign-ins are never throttled by earlier successes.

The counters are the real ones (Redis on PostgreSQL + Redis runs, the database table on the
embedded default). A hasher that counts its calls shows which attempts cost a password hash.
"""

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import Client, override_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/token/"
ADMIN_LOGIN_URL = "/admin/login/"


class CountingHasher(MD5PasswordHasher):
    """The tests' fast hasher, counting every hash it computes (checks and new passwords)."""

    calls: ClassVar[int] = 0

    def encode(self, password: str, salt: str) -> str:
        CountingHasher.calls += 1
        return super().encode(password, salt)


@pytest.fixture(autouse=True)
def counted_hashing() -> Iterator[type[CountingHasher]]:
    with override_settings(PASSWORD_HASHERS=[f"{__name__}.CountingHasher"]):
        CountingHasher.calls = 0
        yield CountingHasher


@pytest.fixture
def limits(settings: Any) -> None:
    settings.LOGIN_THROTTLE_USERNAME = "3/hour"
    settings.LOGIN_THROTTLE_ADDRESS = "5/hour"


def _token(client: APIClient, username: str, password: str, **extra: Any) -> Any:
    return client.post(
        TOKEN_URL, {"username": username, "password": password}, format="json", **extra
    )


@pytest.mark.usefixtures("limits")
def test_failed_token_requests_are_throttled_per_username_before_hashing(
    api_client: APIClient, user: Any, password: str
) -> None:
    before = CountingHasher.calls
    codes = [_token(api_client, user.username, "wrong").status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    hashes = CountingHasher.calls
    assert hashes - before == 3  # each failure costs one hash

    # The right password too: a guesser must not learn that it found it.
    refused = _token(api_client, user.username, password)

    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 3600
    error = refused.json()["error"]
    assert error["code"] == "throttled"
    assert error["message"].startswith("Too many failed sign-in attempts")
    assert refused.json() == {
        "error": {"status": 429, "code": "throttled", "message": error["message"], "details": []}
    }
    # Any spelling of the name is the same name.
    assert _token(api_client, user.username.upper(), "wrong").status_code == 429
    assert CountingHasher.calls == hashes  # no password was hashed for the refused attempts


@pytest.mark.usefixtures("limits")
def test_failed_token_requests_are_throttled_per_address(
    api_client: APIClient, user: Any, password: str
) -> None:
    # Five different (unknown) usernames from one address: the address limit.
    codes = [_token(api_client, f"guess-{n}", "wrong").status_code for n in range(6)]
    assert codes == [401] * 5 + [429]
    assert _token(api_client, user.username, password).status_code == 429
    # Another address is not throttled, and the user (no failure yet) signs in from it.
    other = _token(api_client, user.username, password, REMOTE_ADDR="10.1.2.3")
    assert other.status_code == 200


@pytest.mark.usefixtures("limits")
def test_successful_sign_ins_are_not_throttled(
    api_client: APIClient, user: Any, password: str
) -> None:
    assert [_token(api_client, user.username, password).status_code for _ in range(12)] == [
        200
    ] * 12
    # Failures below the limit do not block the right password either.
    assert _token(api_client, user.username, "wrong").status_code == 401
    assert _token(api_client, user.username, password).status_code == 200


def test_the_default_limits_stop_a_run_of_wrong_passwords(api_client: APIClient, user: Any) -> None:
    before = CountingHasher.calls
    codes = [_token(api_client, user.username, "wrong").status_code for _ in range(25)]

    assert codes == [401] * 10 + [429] * 15
    assert CountingHasher.calls - before == 10


@pytest.mark.usefixtures("limits")
def test_the_admin_login_page_is_throttled_with_a_clear_message(
    staff_user: Any, password: str, api_client: APIClient
) -> None:
    browser = Client()
    for _ in range(3):
        page = browser.post(ADMIN_LOGIN_URL, {"username": staff_user.username, "password": "x"})
        assert page.status_code == 200
        assert b"Please enter the correct username and password" in page.content
    hashes = CountingHasher.calls

    refused = browser.post(ADMIN_LOGIN_URL, {"username": staff_user.username, "password": password})

    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 3600
    text = refused.content.decode()
    assert "Too many failed sign-in attempts for this username or from this address." in text
    assert "Try again in" in text
    assert '<form action="/admin/login/' in text  # the login page itself, not an error page
    assert CountingHasher.calls == hashes
    # The same counters as the API's: the username is throttled there too.
    assert _token(api_client, staff_user.username, password).status_code == 429
    # The page itself still shows.
    assert browser.get(ADMIN_LOGIN_URL).status_code == 200


@pytest.mark.usefixtures("limits")
def test_the_admin_login_still_signs_in(staff_user: Any, password: str) -> None:
    browser = Client()
    page = browser.post(
        ADMIN_LOGIN_URL,
        {"username": staff_user.username, "password": password, "next": "/admin/"},
    )
    assert page.status_code == 302
    assert browser.get("/admin/").status_code == 200


def test_throttled_sign_in_is_documented(api_client: APIClient) -> None:
    schema = api_client.get("/api/schema/?format=json").json()
    responses = schema["paths"]["/api/token/"]["post"]["responses"]
    assert "429" in responses
