"""The admin answers hostile query strings with a redirect or a 400, never a 500."""

from typing import Any

import pytest
from django.test import Client


@pytest.mark.parametrize(
    "query",
    [
        "created_at__year=9999",
        "created_at__year=9999&created_at__month=12",
        "created_at__year=9999&created_at__month=12&created_at__day=31",
        "created_at__year=99999",
    ],
)
def test_a_date_hierarchy_link_past_the_calendar_is_an_invalid_lookup(
    admin_client: Client, query: str
) -> None:
    response = admin_client.get(f"/admin/core/blog/?{query}")
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_the_date_hierarchy_at_the_edges_of_the_range_lists(admin_client: Client) -> None:
    for query in (
        "created_at__year=2100&created_at__month=12&created_at__day=31",
        "created_at__year=1900&created_at__month=1&created_at__day=1",
    ):
        assert admin_client.get(f"/admin/core/blog/?{query}").status_code == 200, query


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/admin/rollups/rebuildjob/?state=%00", "state"),
        ("/admin/autocomplete/?term=%00&app_label=core&model_name=blog&field_name=author", "term"),
        ("/admin/core/blog/?q=a%00b", "q"),
        ("/api/schema/?version=%00", "version"),
        ("/api/rollups/status/?x%00=1", "'x\\x00'"),
    ],
)
def test_a_nul_in_the_query_string_is_a_400_naming_the_parameter(
    admin_client: Client, url: str, field: str
) -> None:
    response = admin_client.get(url)
    assert response.status_code == 400, response.content
    error: dict[str, Any] = response.json()["error"]
    assert error["details"] == [{"field": field, "reason": "must not contain a NUL character"}]


@pytest.mark.parametrize(
    "url",
    [
        "/api/analytics/top/blog/?author_username=%ff",
        "/admin/core/blog/?q=%c3",
        "/api/rollups/status/?x%e9=1",
    ],
)
def test_a_query_string_that_is_not_utf8_is_a_400(admin_client: Client, url: str) -> None:
    """Django would decode the bytes as U+FFFD: a different name than the one sent."""
    response = admin_client.get(url)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"] == "The query string is not valid UTF-8."


def test_percent_encoded_utf8_in_the_query_string_is_taken(admin_client: Client) -> None:
    assert admin_client.get("/admin/core/blog/?q=%C3%A9t%C3%A9+%E2%82%AC").status_code == 200


def test_an_encoded_percent_sign_is_no_nul(admin_client: Client) -> None:
    assert admin_client.get("/admin/core/blog/?q=%2500").status_code == 200


def test_admin_forms_refuse_a_nul_as_a_form_error(admin_client: Client, db: None) -> None:
    """(Django's form fields already refuse it; kept as the sibling of the query-string case.)"""
    login = Client().post("/admin/login/", {"username": "a\x00", "password": "x\x00"})
    assert login.status_code == 200
    assert b"Null characters are not allowed" in login.content
    add = admin_client.post("/admin/core/country/add/", {"code": "Q\x00", "name": "x"})
    assert add.status_code == 200
    assert b"Null characters are not allowed" in add.content
