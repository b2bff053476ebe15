"""Reads on a streaming read replica (``DATABASE_REPLICA_URL``): a private primary cluster, a
replica made from it with ``pg_basebackup``, and the whole stack on them.

The replica's replay is paused (``pg_wal_replay_pause()``) while views are ingested and
absorbed on the primary: an ordinary read then answers from the replica, exactly the state
before the pause (its ``as_of`` says so), while a ``Cache-Control: no-cache`` read answers from
the primary and counts the new views (read-your-writes). A web process whose lag limit the
paused replica exceeds reads from the primary. Once replay resumes, the replica's answer
counts every view.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest

from core.testing import (
    PostgresCluster,
    postgres_bin_dir,
    postgres_cluster,
    postgres_replica,
    wait_until,
    web_server,
)
from soak.stack import STAFF_PASSWORD, STAFF_USERNAME, Api, Stack, running_stack

pytestmark = pytest.mark.soak

NEW_VIEWS = 700
WAIT_SECONDS = 60


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[PostgresCluster, PostgresCluster]]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_basebackup").exists():
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup) are missing")
    with postgres_cluster() as primary, postgres_replica(primary) as replica:
        yield primary, replica


@pytest.fixture(scope="module")
def stack(
    clusters: tuple[PostgresCluster, PostgresCluster], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    primary, replica = clusters
    folder = tmp_path_factory.mktemp("soak-replica")
    with running_stack(
        name="replica",
        folder=folder,
        server_url=primary.url("postgres"),
        replica_server_url=replica.url("postgres"),
        seed_views=2000,
        # Every answer computed, so that each read shows where it was read.
        extra_env={
            "ANALYTICS_CACHE_SECONDS": "0",
            "REALTIME_CACHE_SECONDS": "0",
            "DATABASE_REPLICA_MAX_LAG_SECONDS": "3600",
        },
    ) as running:
        yield running


def _query(url: str, statement: str) -> object:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            row = cursor.fetchone()
            assert row is not None
            return row[0]
    finally:
        connection.close()


def _caught_up(primary: PostgresCluster, replica: PostgresCluster, *, replayed: bool) -> bool:
    """Whether the replica has received (or, with ``replayed``, replayed) all the primary's WAL."""
    target = _query(primary.url("postgres"), "SELECT pg_current_wal_lsn()::text")
    position = "pg_last_wal_replay_lsn()" if replayed else "pg_last_wal_receive_lsn()"
    return bool(_query(replica.url("postgres"), f"SELECT {position} >= '{target}'::pg_lsn"))


def _read(api: Api, *, no_cache: bool) -> tuple[int, datetime]:
    """Every view over all time, and the answer's ``as_of``."""
    response = api.post("/api/analytics/blog-views/country/", {"limit": 1000}, no_cache=no_cache)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"]["cached"] is False
    total = sum(row["views"] for row in body["results"])
    return total, datetime.fromisoformat(body["meta"]["as_of"])


def _realtime_blog_views(api: Api, blog: int, *, no_cache: bool) -> tuple[int, datetime]:
    """The views of ``blog`` in the realtime window (0 when it is not among the top blogs), and
    the answer's ``as_of``."""
    headers = {"Cache-Control": "no-cache"} if no_cache else {}
    response = api.session.get(
        f"{api.base_url}/api/analytics/realtime/", headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    views = {row["blog_id"]: row["views"] for row in body["results"]["top_blogs"]}
    return views.get(blog, 0), datetime.fromisoformat(body["meta"]["as_of"])


def _reads_by_source(api: Api) -> dict[str, float]:
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    counts: dict[str, float] = {}
    for line in response.text.splitlines():
        if line.startswith("blogviews_analytics_reads_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('source="')[1].split('"')[0]] = float(value)
    return counts


def test_reads_come_from_the_replica_and_no_cache_reads_from_the_primary(
    stack: Stack, clusters: tuple[PostgresCluster, PostgresCluster], tmp_path: Path
) -> None:
    primary, replica = clusters
    api = stack.api()
    assert api.wait_absorbed(seconds=WAIT_SECONDS)
    assert wait_until(lambda: _caught_up(primary, replica, replayed=True), seconds=WAIT_SECONDS)
    before, _ = _read(api, no_cache=False)
    assert before == _read(api, no_cache=True)[0] > 0

    _query(replica.url("postgres"), "SELECT pg_wal_replay_pause()")
    try:
        assert wait_until(
            lambda: (
                _query(replica.url("postgres"), "SELECT pg_get_wal_replay_pause_state()")
                == "paused"
            ),
            seconds=WAIT_SECONDS,
        )
        paused_at = datetime.now(UTC)
        blog = stack.blog_ids[0]
        assert api.ingest([{"blog_id": blog, "country_code": "DE"}] * NEW_VIEWS) == NEW_VIEWS
        # Absorbed on the primary (summaries and watermark moved), and shipped to the replica,
        # which holds it unreplayed.
        assert api.wait_absorbed(seconds=WAIT_SECONDS)
        assert wait_until(
            lambda: _caught_up(primary, replica, replayed=False), seconds=WAIT_SECONDS
        )

        on_replica, replica_as_of = _read(api, no_cache=False)
        on_primary, primary_as_of = _read(api, no_cache=True)
        assert (on_replica, on_primary) == (before, before + NEW_VIEWS)
        # The replica's answer is exact as of the last commit it replayed, before the pause.
        assert replica_as_of <= paused_at < primary_as_of
        # Realtime too: the replica's window ends at its position, without the new views.
        replica_recent, replica_recent_as_of = _realtime_blog_views(api, blog, no_cache=False)
        primary_recent, _ = _realtime_blog_views(api, blog, no_cache=True)
        assert replica_recent < NEW_VIEWS <= primary_recent
        assert replica_recent_as_of <= paused_at

        # A web process that accepts 1 s of lag reads from the primary once the paused replica
        # is further behind.
        assert wait_until(
            lambda: (datetime.now(UTC) - paused_at).total_seconds() > 2, seconds=WAIT_SECONDS
        )
        strict_env = {**stack.env, "DATABASE_REPLICA_MAX_LAG_SECONDS": "1"}
        with web_server(log=tmp_path / "strict-web.log", env=strict_env) as strict_url:
            strict = Api(strict_url, username=STAFF_USERNAME, password=STAFF_PASSWORD)
            assert _read(strict, no_cache=False)[0] == before + NEW_VIEWS
            assert _reads_by_source(strict).get("primary_replica_lag") == 1
    finally:
        _query(replica.url("postgres"), "SELECT pg_wal_replay_resume()")

    assert wait_until(lambda: _caught_up(primary, replica, replayed=True), seconds=WAIT_SECONDS)
    caught_up, as_of = _read(api, no_cache=False)
    assert caught_up == before + NEW_VIEWS
    assert as_of > paused_at
    sources = _reads_by_source(api)
    assert sources.get("replica", 0) >= 4 and sources.get("primary", 0) >= 3, sources


def test_a_replica_that_is_down_sends_reads_to_the_primary(
    stack: Stack, clusters: tuple[PostgresCluster, PostgresCluster]
) -> None:
    _, replica = clusters
    api = stack.api()
    total, _ = _read(api, no_cache=True)
    replica.stop()
    try:
        assert _read(api, no_cache=False)[0] == total
        assert _reads_by_source(api).get("primary_replica_down", 0) >= 1
    finally:
        replica.start()
    # Back on the replica once it answers again (each web process tries it again after a few
    # seconds).
    replica_reads = _reads_by_source(api).get("replica", 0)

    def read_on_replica() -> bool:
        _read(api, no_cache=False)
        return _reads_by_source(api).get("replica", 0) > replica_reads

    assert wait_until(read_on_replica, seconds=WAIT_SECONDS, interval=1)
