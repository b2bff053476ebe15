import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import override_settings
from rest_framework.test import APIClient

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _cache_per_test(settings: Any) -> None:
    # Each test its own cache key space: answers cached by one test (say, on an empty database)
    # must not be served to the next. A prefix, not a flush, because the Redis database is
    # shared with the Celery broker that worker tests use.
    settings.CACHES = {
        name: {**config, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
        for name, config in settings.CACHES.items()
    }


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    # The production hasher takes a million PBKDF2 rounds per password, about half a second
    # each time a test creates a user or obtains a token; hashing strength is not under test.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def password() -> str:
    """The password of every user the fixtures create."""
    return PASSWORD


@pytest.fixture
def api_client() -> APIClient:
    """A client without credentials."""
    return APIClient()


@pytest.fixture
def user(django_user_model: Any) -> Any:
    """An active user without any permission; password ``PASSWORD``."""
    return django_user_model.objects.create_user(username="plain-user", password=PASSWORD)


@pytest.fixture
def ingest_user(django_user_model: Any) -> Any:
    """A non-staff user holding ``ingest.add_blogview``; password ``PASSWORD``."""
    created = django_user_model.objects.create_user(username="ingest-user", password=PASSWORD)
    created.user_permissions.add(
        Permission.objects.get(content_type__app_label="ingest", codename="add_blogview")
    )
    return created


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    """A staff user without explicit permissions; password ``PASSWORD``."""
    return django_user_model.objects.create_user(
        username="staff-user", password=PASSWORD, is_staff=True
    )


@pytest.fixture
def auth_client(db: None) -> Callable[[Any], APIClient]:
    """``auth_client(user)``: a client sending a real access token issued by ``/api/token/``.

    The user must have been created with the password ``PASSWORD``.
    """

    def make(for_user: Any) -> APIClient:
        client = APIClient()
        response = client.post(
            "/api/token/",
            {"username": for_user.get_username(), "password": PASSWORD},
            format="json",
        )
        assert response.status_code == 200, response.content
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
        return client

    return make
