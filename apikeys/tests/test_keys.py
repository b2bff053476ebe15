"""API keys end to end: what a key may do, what it may not, and what it costs a cached read."""

import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from api.tests.conftest import AUTHORS, ENDPOINTS, TODAY, analytics_data
from apikeys.models import ApiKey
from apikeys.services import api_key_create
from ingest.models import BlogView, IdempotencyKey
from rollups.selectors import rebuild_version_cached

READ = "/api/analytics/top/blog/"
INGEST = "/api/ingest/views/"


def key_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


@pytest.fixture
def reads(db: None, settings: Any, frozen_today: Any) -> list[int]:
    """Reads that need credentials, a cache, and data to answer from; gives the blog ids."""
    settings.ANALYTICS_PUBLIC_READ = False
    settings.ANALYTICS_CACHE_SECONDS = 60
    return analytics_data(seed=5, views=400)


def test_a_read_key_reads_every_endpoint_like_a_token(
    reads: list[int], auth_client: Any, user: Any
) -> None:
    _, secret = api_key_create(name="dashboard", user=user)
    reader = key_client(secret)
    for url in ENDPOINTS:
        with_key = reader.post(url, {"year": 2025}, format="json")
        with_token = auth_client(user).post(url, {"year": 2025}, format="json")
        assert with_key.status_code == 200, with_key.content
        assert with_key.json()["results"] == with_token.json()["results"]
        assert with_key.json()["results"]


def test_the_secret_is_stored_as_a_sha512_hash_only(db: None, user: Any) -> None:
    key, secret = api_key_create(name="k", user=user)
    prefix, _, rest = secret.partition(".")
    assert (len(prefix), len(rest)) == (8, 32)
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.prefix == prefix
    # djangorestframework-api-key 3's hasher: SHA-512, no salt (the key is random), no rounds.
    assert stored.hashed_key.startswith("sha512$$")
    row = json.dumps(list(ApiKey.objects.filter(pk=key.pk).values()), default=str)
    assert rest not in row


def test_scopes_decide_where_a_key_is_accepted(
    reads: list[int], user: Any, ingest_user: Any
) -> None:
    _, read = api_key_create(name="r", user=ingest_user, scope="read")
    _, ingest = api_key_create(name="i", user=ingest_user, scope="ingest")
    _, both = api_key_create(name="b", user=ingest_user, scope="ingest+read")
    batch = {"views": [{"blog_id": reads[0], "country_code": "us"}]}

    assert key_client(read).post(READ, {}, format="json").status_code == 200
    refused = key_client(read).post(INGEST, batch, format="json")
    assert refused.status_code == 403
    assert "'ingest' scope" in refused.json()["error"]["message"]

    assert key_client(ingest).post(INGEST, batch, format="json").status_code == 202
    refused = key_client(ingest).post(READ, {}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert "'read' scope" in refused.json()["error"]["message"]

    assert key_client(both).post(READ, {}, format="json").status_code == 200
    assert key_client(both).post(INGEST, batch, format="json").status_code == 202

    # Nowhere else: the staff endpoints say a key is not taken there; the token refresh does
    # not know the header.
    for method, url in [
        ("get", "/api/rollups/status/"),
        ("post", "/api/rollups/rebuild/"),
        ("get", "/api/rollups/jobs/00000000-0000-0000-0000-000000000000/"),
    ]:
        answer = getattr(key_client(both), method)(url, {}, format="json")
        assert answer.status_code == 401, (url, answer.content)
        assert answer.json()["error"]["code"] == "authentication_failed"
        assert answer.json()["error"]["message"].startswith("An API key is not accepted here")
    assert key_client(both).post("/api/token/refresh/", {}, format="json").status_code == 400


def test_a_key_never_ingests_more_than_its_user_may(reads: list[int], user: Any) -> None:
    # `user` holds no ingest permission: the ingest scope alone is not enough.
    _, secret = api_key_create(name="i", user=user, scope="ingest")
    batch = {"views": [{"blog_id": reads[0], "country_code": "us"}]}
    refused = key_client(secret).post(INGEST, batch, format="json")
    assert refused.status_code == 403
    assert "may not ingest" in refused.json()["error"]["message"]

    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="ingest", codename="add_blogview")
    )
    before = BlogView.objects.count()
    assert key_client(secret).post(INGEST, batch, format="json").status_code == 202
    assert BlogView.objects.count() == before + 1


def test_idempotency_keys_of_a_key_are_its_users(reads: list[int], ingest_user: Any) -> None:
    _, secret = api_key_create(name="i", user=ingest_user, scope="ingest")
    batch = {"views": [{"blog_id": reads[0], "country_code": "us"}]}
    client = key_client(secret)
    before = BlogView.objects.count()
    first = client.post(INGEST, batch, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = client.post(INGEST, batch, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again["Idempotent-Replayed"] == "true"
    assert BlogView.objects.count() == before + 1
    assert IdempotencyKey.objects.get(key="k1").user_id == ingest_user.pk


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Api-Key nodot", "Malformed API key"),
        ("Api-Key abcdefgh.wrongsecretwrongsecretwrongsecre", "Invalid API key"),
        ("Api-Key ../../etc.passwd", "Malformed API key"),
    ],
)
def test_a_bad_key_is_401(reads: list[int], header: str, reason: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    for url in (READ, INGEST):
        refused = client.post(url, {}, format="json")
        assert refused.status_code == 401, refused.content
        assert refused.json()["error"]["code"] == "authentication_failed"
        assert reason in refused.json()["error"]["message"]


def test_a_wrong_secret_for_a_real_prefix_is_401(reads: list[int], user: Any) -> None:
    _, secret = api_key_create(name="r", user=user)
    forged = secret[:-1] + ("a" if secret[-1] != "a" else "b")
    assert key_client(forged).post(READ, {}, format="json").status_code == 401
    assert key_client(secret).post(READ, {}, format="json").status_code == 200


def test_a_revoked_key_is_refused_at_the_next_request(reads: list[int], user: Any) -> None:
    key, secret = api_key_create(name="r", user=user)
    client = key_client(secret)
    assert client.post(READ, {}, format="json").status_code == 200  # now cached
    key.revoked = True
    key.save()
    refused = client.post(READ, {}, format="json")
    assert refused.status_code == 401
    assert "Invalid API key" in refused.json()["error"]["message"]


def test_an_expired_key_is_refused(reads: list[int], user: Any) -> None:
    _, secret = api_key_create(
        name="r", user=user, expiry_date=timezone.now() + timedelta(minutes=5)
    )
    client = key_client(secret)
    assert client.post(READ, {}, format="json").status_code == 200
    # The cached entry carries the expiry: it is checked on every request.
    with time_machine.travel(TODAY + timedelta(minutes=5), tick=False):
        refused = client.post(READ, {}, format="json")
    assert refused.status_code == 401
    assert "expired" in refused.json()["error"]["message"]


def test_the_key_of_a_deactivated_user_is_refused_at_once(reads: list[int], user: Any) -> None:
    _, secret = api_key_create(name="r", user=user)
    client = key_client(secret)
    assert client.post(READ, {}, format="json").status_code == 200
    user.is_active = False
    user.save()
    assert client.post(READ, {}, format="json").status_code == 401


def test_an_author_key_reads_that_authors_blogs_only(
    reads: list[int], auth_client: Any, user: Any, django_user_model: Any
) -> None:
    author = django_user_model.objects.get(username=AUTHORS[1])
    _, secret = api_key_create(name="ana", user=user, author=author)
    client = key_client(secret)
    token = auth_client(user)

    for url in ENDPOINTS:
        # Another reader's cached answer for everyone must not be served to the key...
        everyone = token.post(url, {}, format="json").json()
        scoped = client.post(url, {}, format="json")
        assert scoped.status_code == 200
        assert scoped.json()["meta"]["filters"]["author_username"] == author.username
        # ...and the key's answer is exactly that of the filter it stands for.
        named = token.post(url, {"author_username": author.username}, format="json").json()
        assert scoped.json()["results"] == named["results"]
        assert scoped.json()["results"] != everyone["results"]
        # The same author named explicitly is fine.
        same = client.post(url, {"author_username": author.username}, format="json")
        assert same.json()["results"] == named["results"]

    authors = client.post("/api/analytics/blog-views/user/", {}, format="json").json()
    assert [row["username"] for row in authors["results"]] == [author.username]

    refused = client.post(READ, {"author_username": AUTHORS[0]}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == [
        {
            "field": "author_username",
            "reason": f"must be '{author.username}' (or omitted) with this API key",
        }
    ]
    # After the key's reads, an unrestricted read still sees every author.
    everyone = token.post("/api/analytics/blog-views/user/", {}, format="json").json()
    assert len(everyone["results"]) == len(AUTHORS)


def test_only_a_read_key_may_be_restricted_to_an_author(db: None, user: Any) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="Only a read key"):
        api_key_create(name="x", user=user, scope="ingest+read", author=user)


def test_keys_are_throttled_per_key(reads: list[int], settings: Any, user: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "analytics_user": "1000/min",
            "analytics_anon": "1000/min",
            "api_key": "3/min",
        },
    }
    _, first = api_key_create(name="a", user=user)
    _, second = api_key_create(name="b", user=user)
    with time_machine.travel(TODAY.replace(second=15), tick=False):
        codes = [key_client(first).post(READ, {}, format="json").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = key_client(first).post(READ, {}, format="json")
        assert refused["Retry-After"] == "45"
        assert refused.json()["error"]["code"] == "throttled"
        # Another key of the same user has a window of its own.
        assert key_client(second).post(READ, {}, format="json").status_code == 200


def test_ingest_with_a_key_is_throttled_per_key(
    reads: list[int], settings: Any, ingest_user: Any
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "api_key": "2/min",
        },
    }
    _, secret = api_key_create(name="i", user=ingest_user, scope="ingest+read")
    batch = {"views": [{"blog_id": reads[0], "country_code": "us"}]}
    with time_machine.travel(TODAY.replace(second=15), tick=False):
        client = key_client(secret)
        assert client.post(INGEST, batch, format="json").status_code == 202
        assert client.post(READ, {}, format="json").status_code == 200
        # Reads and ingest count in the key's one window.
        assert client.post(INGEST, batch, format="json").status_code == 429


def test_a_cached_read_with_a_key_costs_no_more_queries_than_with_a_token(
    reads: list[int], auth_client: Any, user: Any
) -> None:
    _, secret = api_key_create(name="r", user=user)
    url, body = "/api/analytics/blog-views/country/", {"year": 2025}
    token, key = auth_client(user), key_client(secret)
    # Warm the answer, the key's cache entry and its last_used_at.
    assert token.post(url, body, format="json").json()["meta"]["cached"] is False
    assert key.post(url, body, format="json").json()["meta"]["cached"] is True

    counted = {}
    for name, client in (("token", token), ("key", key)):
        with CaptureQueriesContext(connection) as queries:
            assert client.post(url, body, format="json").json()["meta"]["cached"] is True
        counted[name] = [query["sql"] for query in queries.captured_queries]
    # Redis: none (throttle counter, rebuild version, answer and key all in Redis). Without
    # it: the throttle counter's upsert and the rebuild version, for either credential.
    expected = 0 if rebuild_version_cached() else 2
    assert (len(counted["token"]), len(counted["key"])) == (expected, expected), counted


def test_last_used_is_written_at_most_once_a_minute(reads: list[int], user: Any) -> None:
    key, secret = api_key_create(name="r", user=user)
    client = key_client(secret)
    with time_machine.travel(TODAY, tick=False):
        client.post(READ, {}, format="json")
        key.refresh_from_db()
        assert key.last_used_at == TODAY
        with CaptureQueriesContext(connection) as queries:
            client.post(READ, {}, format="json")
        assert not [q for q in queries.captured_queries if "last_used_at" in q["sql"]]
    with time_machine.travel(TODAY + timedelta(seconds=59), tick=False):
        client.post(READ, {}, format="json")
        key.refresh_from_db()
        assert key.last_used_at == TODAY
    with time_machine.travel(TODAY + timedelta(seconds=61), tick=False):
        client.post(READ, {}, format="json")
        key.refresh_from_db()
        assert key.last_used_at == TODAY + timedelta(seconds=61)


def test_public_read_still_refuses_a_bad_or_out_of_scope_key(
    reads: list[int], settings: Any, ingest_user: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    _, ingest = api_key_create(name="i", user=ingest_user, scope="ingest")
    assert APIClient().post(READ, {}, format="json").status_code == 200
    assert key_client(ingest).post(READ, {}, format="json").status_code == 403
    assert key_client("abcdefgh.nope").post(READ, {}, format="json").status_code == 401


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "core.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
)
def test_keys_work_while_the_cache_is_down(reads: list[int], user: Any, caplog: Any) -> None:
    # Each request then reads its key from the database, so a revoke still applies at once.
    key, secret = api_key_create(name="r", user=user)
    client = key_client(secret)
    with time_machine.travel(TODAY, tick=False):
        assert client.post(READ, {}, format="json").status_code == 200
        key.refresh_from_db()
        assert key.last_used_at == TODAY
    with time_machine.travel(TODAY + timedelta(seconds=30), tick=False):
        assert client.post(READ, {}, format="json").status_code == 200
        key.refresh_from_db()
        assert key.last_used_at == TODAY
    assert "API key cache unavailable" in caplog.text
    ApiKey.objects.filter(pk=key.pk).update(revoked=True)
    assert client.post(READ, {}, format="json").status_code == 401
