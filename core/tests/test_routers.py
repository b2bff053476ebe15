"""The read replica's configuration and the router's choices. Reads served by a real streaming
replica, paused and resumed, are tested in soak/test_replica.py (a primary and a replica
cluster of the test's own)."""

import runpy
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.models import Blog
from core.routers import (
    PRIMARY,
    REPLICA,
    ReadSource,
    ReplicaRouter,
    analytics_read_source,
    read_alias,
    reading_from,
)

SETTINGS = Path(settings.BASE_DIR) / "core" / "settings.py"


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for variable in ("DATABASE_REPLICA_URL", "DISABLE_SERVER_SIDE_CURSORS", "SENTRY_DSN"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return runpy.run_path(str(SETTINGS))


def test_a_replica_url_adds_the_replica_alias_and_its_router(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = _settings(
        monkeypatch,
        DATABASE_URL="postgres://app@primary.internal:5432/blogviews",
        DATABASE_REPLICA_URL="postgres://reader@replica.internal:6432/blogviews",
        DISABLE_SERVER_SIDE_CURSORS="1",
    )
    replica = loaded["DATABASES"][REPLICA]
    assert (replica["HOST"], replica["PORT"], replica["USER"], replica["NAME"]) == (
        "replica.internal",
        6432,
        "reader",
        "blogviews",
    )
    # Tests read the primary's test database under the replica's alias.
    assert replica["TEST"] == {"MIRROR": "default"}
    assert replica["CONN_MAX_AGE"] == loaded["DATABASES"]["default"]["CONN_MAX_AGE"]
    assert replica["OPTIONS"]["connect_timeout"] == 5
    assert loaded["DATABASE_ROUTERS"] == ["core.routers.ReplicaRouter"]
    # For PgBouncer in transaction mode, on both aliases.
    assert replica["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert loaded["DATABASES"]["default"]["DISABLE_SERVER_SIDE_CURSORS"] is True


def test_without_a_replica_url_there_is_no_router(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _settings(monkeypatch, DATABASE_URL="postgres://app@primary.internal/blogviews")
    assert set(loaded["DATABASES"]) == {"default"}
    assert "DATABASE_ROUTERS" not in loaded
    assert loaded["DATABASES"]["default"]["DISABLE_SERVER_SIDE_CURSORS"] is False


def test_a_replica_needs_postgresql(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="DATABASE_REPLICA_URL needs PostgreSQL"):
        _settings(
            monkeypatch,
            DATABASE_URL="postgres://app@primary.internal/blogviews",
            DATABASE_REPLICA_URL=f"sqlite:///{tmp_path / 'replica.sqlite3'}",
        )


def test_the_router_sends_reads_inside_reading_from_to_its_alias_and_writes_to_the_primary() -> (
    None
):
    router = ReplicaRouter()
    assert router.db_for_read(Blog) is None
    assert read_alias() == "default"
    with reading_from(ReadSource(REPLICA)):
        assert router.db_for_read(Blog) == REPLICA
        assert read_alias() == REPLICA
        assert router.db_for_write(Blog) == "default"
    assert router.db_for_read(Blog) is None
    assert read_alias() == "default"
    assert router.allow_migrate("default", "core") is True
    assert router.allow_migrate(REPLICA, "core") is False


def test_without_a_replica_every_read_is_on_the_primary() -> None:
    assert REPLICA not in settings.DATABASES
    assert analytics_read_source(fresh=False) == PRIMARY
    assert analytics_read_source(fresh=True) == PRIMARY
