"""The dashboard's pages (Django's test client) and the session on the read API."""

import json
import re
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core.models import Blog

pytestmark = pytest.mark.django_db


def _login(client: Client, user: Any, password: str) -> None:
    assert client.login(username=user.get_username(), password=password)


def _config(html: str) -> dict[str, Any]:
    found = re.search(r'<script id="dashboard-config" type="application/json">(.*?)</script>', html)
    assert found
    config: dict[str, Any] = json.loads(found.group(1))
    return config


def test_the_dashboard_asks_to_sign_in_without_public_read(client: Client, settings: Any) -> None:
    settings.ANALYTICS_PUBLIC_READ = False

    response = client.get("/?range=7d&country=US")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/%3Frange%3D7d%26country%3DUS"


def test_with_public_read_anyone_sees_the_dashboard_but_not_the_staff_panel(
    client: Client, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = True

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="filters"' in html and "Sign in" in html
    assert 'id="panel-rollups"' not in html
    assert _config(html)["staff"] is False
    assert "csrftoken" in response.cookies


def test_a_signed_in_user_sees_the_dashboard_and_staff_the_rollups_panel(
    client: Client, user: Any, staff_user: Any, password: str, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = False
    _login(client, user, password)
    html = client.get("/").content.decode()
    assert "Signed in as <strong>plain-user</strong>" in html
    assert 'id="panel-rollups"' not in html

    _login(client, staff_user, password)
    html = client.get("/").content.decode()
    assert 'id="panel-rollups"' in html
    config = _config(html)
    assert config["staff"] is True
    assert config["numeric"]["840"] == "US"
    assert config["urls"]["analytics"] == "/api/analytics/"


def test_the_filters_offer_every_country_and_the_authors_with_blogs(
    client: Client, user: Any, staff_user: Any, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    Blog.objects.create(title="A", author=user)

    html = client.get("/").content.decode()

    assert '<option value="United States (US)">' in html
    assert '<option value="Unknown (ZZ)">' in html
    assert '<option value="plain-user">' in html
    assert '<option value="staff-user">' not in html


def test_every_asset_of_the_pages_ships_with_the_project(client: Client, settings: Any) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    for url in ("/", "/login/"):
        html = client.get(url).content.decode()
        references = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assets = [ref for ref in references if ref.startswith("/static/")]
        assert assets, url
        assert [ref for ref in assets if finders.find(ref.removeprefix("/static/")) is None] == []
        assert [ref for ref in references if ref.startswith(("http:", "https:", "//"))] == []
    map_url = _config(client.get("/").content.decode())["urls"]["map"]
    assert finders.find(map_url.removeprefix("/static/"))


def test_sign_in_goes_to_next_and_sign_out_to_the_sign_in_page(
    client: Client, user: Any, password: str, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = False
    assert client.get("/login/").status_code == 200

    response = client.post(
        "/login/", {"username": "plain-user", "password": password, "next": "/?range=7d"}
    )
    assert response.status_code == 302 and response["Location"] == "/?range=7d"
    assert client.get("/").status_code == 200
    # Signed in, the sign-in page sends to the dashboard.
    assert client.get("/login/")["Location"] == "/"

    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_a_wrong_password_says_so_and_an_outside_next_is_ignored(
    client: Client, user: Any, password: str
) -> None:
    response = client.post("/login/", {"username": "plain-user", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()

    response = client.post(
        "/login/", {"username": "plain-user", "password": password, "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_sign_in_is_throttled_like_every_sign_in(
    client: Client, user: Any, password: str, settings: Any
) -> None:
    settings.LOGIN_THROTTLE_USERNAME = "2/hour"
    for _ in range(2):
        client.post("/login/", {"username": "plain-user", "password": "wrong"})

    response = client.post("/login/", {"username": "plain-user", "password": password})

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many failed sign-in attempts" in response.content.decode()


def test_the_admin_view_site_link_leads_to_the_dashboard(
    client: Client, staff_user: Any, password: str, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = False
    staff_user.is_superuser = True
    staff_user.save()
    _login(client, staff_user, password)

    html = client.get("/admin/").content.decode()

    assert '<a href="/">View site</a>' in html


def test_the_read_api_takes_the_session_with_its_csrf_token(
    user: Any, password: str, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = False
    client = APIClient(enforce_csrf_checks=True)
    assert client.post("/api/analytics/top/blog/", {}, format="json").status_code == 401
    _login(client, user, password)

    refused = client.post("/api/analytics/top/blog/", {}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]["message"]

    client.get("/")  # sets the CSRF cookie, as the page does
    token = client.cookies["csrftoken"].value
    answer = client.post("/api/analytics/top/blog/", {}, format="json", HTTP_X_CSRFTOKEN=token)
    assert answer.status_code == 200
    assert answer.json()["results"] == []


def test_a_cached_read_over_the_session_costs_two_small_queries(
    user: Any, password: str, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = False
    client = APIClient()
    _login(client, user, password)
    assert client.post("/api/analytics/top/blog/", {}, format="json").status_code == 200

    with CaptureQueriesContext(connection) as queries:
        answer = client.post("/api/analytics/top/blog/", {}, format="json")
    assert answer.json()["meta"]["cached"] is True
    # The session and its user by primary key; without Redis, a token's read also pays the
    # throttle counter's upsert and the rebuild version (core.throttling, api.caching).
    tables = [re.search(r'(?:FROM|INTO) "?(\w+)', q["sql"]).group(1) for q in queries]  # type: ignore[union-attr]
    token_read = {"core_throttlecounter", "rollups_absorbstate"}
    assert sorted(t for t in tables if t not in token_read) == ["auth_user", "django_session"]


def test_rollups_status_and_rebuild_take_a_staff_session(
    user: Any, staff_user: Any, password: str
) -> None:
    client = APIClient()
    _login(client, user, password)
    assert client.get("/api/rollups/status/").status_code == 403

    _login(client, staff_user, password)
    status = client.get("/api/rollups/status/")
    assert status.status_code == 200 and "pending_views" in status.json()


def test_the_schema_documents_the_session_on_reads_and_rollups(api_client: APIClient) -> None:
    document = json.loads(api_client.get("/api/schema/", {"format": "json"}).content)

    assert document["components"]["securitySchemes"]["cookieAuth"]["in"] == "cookie"
    assert {"cookieAuth": []} in document["paths"]["/api/analytics/top/blog/"]["post"]["security"]
    assert {"cookieAuth": []} in document["paths"]["/api/rollups/status/"]["get"]["security"]
    assert {"cookieAuth": []} not in document["paths"]["/api/ingest/views/"]["post"]["security"]
