"""A dozen clients for 45 s: ingest with idempotency keys and retries, and reads, at once.

No answer may be a 5xx; once the rollups caught up, the API's total (past the cache) has grown
by exactly the views acknowledged with 202, each key counted once.
"""

import time
from dataclasses import dataclass

import pytest

from soak.load import Load, Tally
from soak.stack import Stack

pytestmark = pytest.mark.soak

CLIENTS = 12
LOAD_SECONDS = 45
CATCH_UP_SECONDS = 120


@dataclass(frozen=True)
class LoadRun:
    tally: Tally
    # Growth of the API's all-time total over the run, read with Cache-Control: no-cache.
    counted: int
    caught_up: bool


@pytest.fixture(scope="module")
def load_run(stack: Stack) -> LoadRun:
    api = stack.api()
    assert api.wait_absorbed(seconds=CATCH_UP_SECONDS)
    before = api.total_views()
    with Load(stack, clients=CLIENTS, ingest_share=0.35, lost_answer_share=0.2, seed=7) as load:
        time.sleep(LOAD_SECONDS)
    caught_up = api.wait_absorbed(seconds=CATCH_UP_SECONDS)
    counted = api.total_views() - before
    print(f"\n{CLIENTS} clients, {LOAD_SECONDS} s\n{load.tally.summary()}\ncounted: {counted}")
    return LoadRun(tally=load.tally, counted=counted, caught_up=caught_up)


def test_no_answer_is_a_server_error(load_run: LoadRun) -> None:
    assert load_run.tally.server_errors == []
    assert not load_run.tally.transport_errors


def test_the_rollups_catch_up_and_count_every_acknowledged_view(
    load_run: LoadRun, stack: Stack
) -> None:
    tally = load_run.tally
    assert load_run.caught_up
    assert tally.views_acknowledged > 0
    # Nothing acknowledged is lost, and nothing is counted that was not sent (a replay counts
    # once where idempotency keys are honoured: test_replays_store_nothing).
    assert (
        tally.views_acknowledged
        <= load_run.counted
        <= tally.views_acknowledged + tally.views_replayed + tally.views_uncertain
    ), tally.summary()
    stack.recount()


def test_replays_store_nothing(load_run: LoadRun) -> None:
    assert load_run.tally.views_replayed > 0
    assert load_run.counted == load_run.tally.views_acknowledged, load_run.tally.summary()
