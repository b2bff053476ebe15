"""Read queries run under ANALYTICS_STATEMENT_TIMEOUT_MS: a clear 503, nothing leaked."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from core.models import Blog
from core.sql import postgres
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending

# Enough raw views that grouping them takes far longer than 1 ms on any machine.
TAIL_VIEWS = 100_000


def _idle() -> bool:
    """No transaction is left open on the connection (always, on SQLite here)."""
    if not postgres():
        return True
    import psycopg2.extensions

    status = connection.connection.info.transaction_status
    return status == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def _session_statement_timeout() -> str | None:
    """The connection's own statement_timeout outside any transaction (None on SQLite)."""
    if not postgres():
        return None
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_a_read_past_the_timeout_is_a_503_and_the_connection_stays_as_it_was(settings):
    settings.ANALYTICS_PUBLIC_READ = True
    settings.ANALYTICS_CACHE_SECONDS = 0
    author = get_user_model().objects.create_user(username="ada")
    blog = Blog.objects.create(
        title="Notes", author=author, created_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    start = datetime(2025, 1, 1, tzinfo=UTC)
    views_record(
        views=[
            (blog.pk, ("US", "DE", "IN")[n % 3], start + timedelta(seconds=n))
            for n in range(TAIL_VIEWS)
        ]
    )
    client = APIClient()
    connection.ensure_connection()
    raw = connection.connection
    before = _session_statement_timeout()

    settings.ANALYTICS_STATEMENT_TIMEOUT_MS = 1
    for path in ("blog-views/country", "blog-views/user", "performance"):
        response = client.post(f"/api/analytics/{path}/", {}, format="json")
        assert response.status_code == 503, (path, response.content)
        error = response.json()["error"]
        assert (error["status"], error["code"]) == (503, "query_timeout")
        assert "longer than 1 ms" in error["message"]
        assert _idle(), path

    # The same connection answers the next request normally, with no limit left behind...
    settings.ANALYTICS_STATEMENT_TIMEOUT_MS = 60_000
    response = client.post("/api/analytics/blog-views/country/", {}, format="json")
    assert response.status_code == 200, response.content
    assert sum(row["views"] for row in response.json()["results"]) == TAIL_VIEWS
    assert connection.connection is raw and _idle()
    assert _session_statement_timeout() == before

    # ...and the write side is not limited: absorbing the tail takes far more than 1 ms.
    settings.ANALYTICS_STATEMENT_TIMEOUT_MS = 1
    assert rollups_absorb_pending().views == TAIL_VIEWS
    assert connection.connection is raw
