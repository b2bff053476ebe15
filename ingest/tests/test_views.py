import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from ingest.models import BlogView
from ingest.tests.conftest import _client_for

URL = "/api/ingest/views/"


def _post(client: APIClient, body: Any) -> Any:
    return client.post(URL, body, format="json")


def test_accepts_a_batch_and_stores_it(ingest_client, blogs):
    body = {
        "views": [
            {"blog_id": blogs[0].pk, "country_code": "us", "viewed_at": "2025-03-01T12:00:00Z"},
            {"blog_id": blogs[1].pk, "country_code": "ET"},
        ]
    }
    response = _post(ingest_client, body)
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    assert sorted(BlogView.objects.values_list("blog_id", "country_id")) == [
        (blogs[0].pk, "US"),
        (blogs[1].pk, "ET"),
    ]


def test_bad_items_give_400_listing_each_and_store_nothing(ingest_client, blogs):
    body = {
        "views": [
            {"blog_id": blogs[0].pk, "country_code": "US"},
            {"blog_id": blogs[0].pk, "country_code": "XX"},
            {"blog_id": 999999, "country_code": "US", "viewed_at": "2025-03-01T12:00:00"},
        ]
    }
    response = _post(ingest_client, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == 400
    assert error["code"] == "invalid_views"
    assert error["message"] == "2 of 3 views are invalid; nothing was stored."
    assert [(d["index"], d["field"]) for d in error["details"]] == [
        (1, "country_code"),
        (2, "blog_id"),
        (2, "viewed_at"),
    ]
    assert BlogView.objects.count() == 0


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ('{"views": [{"blog_id": 1, "country_code": "US", "x": NaN}]}', "application/json", 400),
        ('[{"blog_id": 1}]', "application/json", 400),
        ('"views"', "application/json", 400),
        ("", "application/json", 400),
        ("views=1", "application/x-www-form-urlencoded", 415),
        (b"\xff\xfe{}", "application/json", 400),
    ],
)
def test_malformed_bodies_are_4xx_with_the_error_shape(
    ingest_client, blogs, raw, content_type, status
):
    response = ingest_client.generic("POST", URL, raw, content_type=content_type)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"status", "code", "message", "details"}


@override_settings(REQUEST_BODY_MAX_BYTES=1000)
def test_body_over_the_limit_is_413(ingest_client, blogs):
    views = [{"blog_id": blogs[0].pk, "country_code": "US"}] * 50
    response = _post(ingest_client, {"views": views})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert BlogView.objects.count() == 0


def test_method_not_allowed(ingest_client):
    response = ingest_client.get(URL)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_anonymous_is_401(blogs):
    response = _post(APIClient(), {"views": [{"blog_id": blogs[0].pk, "country_code": "US"}]})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert BlogView.objects.count() == 0


def test_user_without_permission_is_403(reader_client, blogs):
    response = _post(reader_client, {"views": [{"blog_id": blogs[0].pk, "country_code": "US"}]})
    assert response.status_code == 403
    assert "ingest.add_blogview" in response.json()["error"]["message"]
    assert BlogView.objects.count() == 0


def test_staff_may_ingest(blogs):
    staff = get_user_model().objects.create_user(username="ops", password="x", is_staff=True)
    response = _post(
        _client_for(staff), {"views": [{"blog_id": blogs[0].pk, "country_code": "zz"}]}
    )
    assert response.status_code == 202


@pytest.mark.django_db(transaction=True)
def test_views_are_committed_when_the_answer_is_sent(ingest_client, blogs):
    response = _post(ingest_client, {"views": [{"blog_id": blogs[2].pk, "country_code": "JP"}]})
    assert response.status_code == 202
    # Outside any test transaction: the row is visible to a fresh connection.
    connection.close()
    assert list(BlogView.objects.values_list("blog_id", "country_id")) == [(blogs[2].pk, "JP")]


def test_error_body_is_json_serializable_for_many_bad_items(ingest_client, db):
    views = [{"blog_id": n + 1, "country_code": "US"} for n in range(2000)]
    response = _post(ingest_client, {"views": views})
    assert response.status_code == 400
    details = json.loads(response.content)["error"]["details"]
    assert [d["index"] for d in details] == list(range(2000))
