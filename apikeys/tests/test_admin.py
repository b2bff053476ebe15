"""Keys are created and revoked in the admin; the secret is shown once."""

import re
from typing import Any

from django.test import Client
from rest_framework.test import APIClient

from apikeys.models import ApiKey
from apikeys.services import api_key_create

READ = "/api/analytics/top/blog/"


def _read_status(secret: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return int(client.post(READ, {}, format="json").status_code)


def test_a_key_created_in_the_admin_is_shown_once_and_works(
    admin_client: Client, admin_user: Any, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = False
    form = admin_client.get("/admin/apikeys/apikey/add/")
    assert form.status_code == 200
    # The key acts for the admin creating it unless another user is chosen.
    assert f'value="{admin_user.pk}"' in form.content.decode()

    response = admin_client.post(
        "/admin/apikeys/apikey/add/",
        {
            "name": "nightly export",
            "user": admin_user.pk,
            "scope": "read",
            "expiry_date_0": "",
            "expiry_date_1": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    # The page the admin lands on shows the secret...
    landing = admin_client.get(response["Location"]).content.decode()
    (secret,) = re.findall(r"[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}", landing)
    key = ApiKey.objects.get(name="nightly export")
    assert key.prefix == secret.partition(".")[0]
    assert _read_status(secret) == 200
    # ...and no page ever again: the key's page shows its prefix, not its secret.
    page = admin_client.get(f"/admin/apikeys/apikey/{key.pk}/change/").content.decode()
    assert key.prefix in page
    assert secret not in page


def test_an_author_restriction_on_an_ingest_key_is_refused_by_the_form(
    admin_client: Client, admin_user: Any
) -> None:
    response = admin_client.post(
        "/admin/apikeys/apikey/add/",
        {"name": "x", "user": admin_user.pk, "scope": "ingest", "author": admin_user.pk},
    )
    assert response.status_code == 200
    assert "Only a read key may be restricted to an author" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_revoke_action_revokes_at_once(admin_client: Client, admin_user: Any) -> None:
    key, secret = api_key_create(name="r", user=admin_user)
    assert _read_status(secret) == 200  # now cached
    response = admin_client.post(
        "/admin/apikeys/apikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked
    assert _read_status(secret) == 401


def test_the_revoked_checkbox_on_the_key_page_revokes_at_once(
    admin_client: Client, admin_user: Any
) -> None:
    key, secret = api_key_create(name="r", user=admin_user)
    assert _read_status(secret) == 200
    response = admin_client.post(
        f"/admin/apikeys/apikey/{key.pk}/change/",
        {"name": "r", "user": admin_user.pk, "scope": "read", "revoked": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _read_status(secret) == 401
    # The library refuses to undo it.
    key.refresh_from_db()
    assert key.revoked
