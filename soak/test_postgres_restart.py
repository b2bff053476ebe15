"""PostgreSQL restarted (a private cluster of the soak's own) while clients ingest and read.

While the database is down requests are answered 503 `database_unavailable`; afterwards the web
processes, the worker and beat go on by themselves: every view acknowledged before, during and
after the restart is counted once the worker caught up, the summaries equal a recount, and
answers are 2xx/4xx again.
"""

import time
from collections.abc import Iterator

import pytest

from core.testing import PostgresCluster, postgres_cluster
from soak.load import Load
from soak.stack import Stack, running_stack

pytestmark = pytest.mark.soak

CATCH_UP_SECONDS = 180


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with postgres_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def stack(cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("soak-postgres-restart")
    with running_stack(
        name="postgres_restart", folder=folder, server_url=cluster.url("postgres")
    ) as running:
        yield running


def test_postgres_restart_under_load_loses_nothing(stack: Stack, cluster: PostgresCluster) -> None:
    api = stack.api()
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS)
    before = api.total_views()
    with Load(stack, clients=4, ingest_share=0.5, seed=13) as load:
        time.sleep(5)
        cluster.stop()
        time.sleep(3)
        cluster.start()
        time.sleep(5)
    tally = load.tally
    print(f"\nPostgreSQL stopped for 3 s under load\n{tally.summary()}")
    if tally.server_errors:
        print("answers while the database was down:", *tally.server_errors[:5], sep="\n")
    # While it is down, requests get a 503 saying so (clients retry), never a 500.
    assert [error for error in tally.server_errors if " -> 503: " not in error] == []
    assert all("database_unavailable" in error for error in tally.server_errors)

    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS), (
        api.status(),
        cluster.log.read_text(errors="replace")[-3000:],
    )
    assert stack.worker.running and stack.beat.running
    counted = api.total_views() - before
    assert (
        tally.views_acknowledged
        <= counted
        <= tally.views_acknowledged + tally.views_replayed + tally.views_uncertain
    ), tally.summary()
    stack.recount()
    # Once the database is back, nothing answers 5xx.
    with Load(stack, clients=4, ingest_share=0.5, seed=14) as after:
        time.sleep(5)
    assert after.tally.server_errors == []
    assert not after.tally.transport_errors
