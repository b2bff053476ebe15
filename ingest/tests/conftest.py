import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from core.models import Blog


@pytest.fixture
def author(db):
    return get_user_model().objects.create_user(username="ada", password="x")


@pytest.fixture
def blogs(author):
    return [Blog.objects.create(title=f"Blog {n}", author=author) for n in range(3)]


def _client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@pytest.fixture
def ingest_client(db) -> APIClient:
    """A client whose user holds ingest.add_blogview (not staff)."""
    user = get_user_model().objects.create_user(username="ingester", password="x")
    user.user_permissions.add(Permission.objects.get(codename="add_blogview"))
    return _client_for(user)


@pytest.fixture
def reader_client(db) -> APIClient:
    """A client whose user is authenticated but may not ingest."""
    return _client_for(get_user_model().objects.create_user(username="reader", password="x"))
