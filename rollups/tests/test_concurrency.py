"""Ingest and absorb at the same time, from several threads (each its own connection)."""

import random
import threading
from collections.abc import Callable

import pytest
from django.db import connection

from rollups.services import rollups_absorb_pending, rollups_rebuild
from rollups.tests.recount import assert_summaries_exact


def _in_thread(work: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    return threading.Thread(target=run)


@pytest.mark.django_db(transaction=True)
def test_concurrent_ingest_absorb_and_rebuild_count_every_view_once(ingest_random):
    errors: list[BaseException] = []
    ingesting = threading.Event()
    ingesting.set()

    def ingest(seed: int) -> Callable[[], None]:
        def work() -> None:
            rng = random.Random(seed)
            for _ in range(25):
                ingest_random(rng.randint(1, 300), rng=rng)

        return work

    def absorb_loop() -> None:
        while ingesting.is_set():
            rollups_absorb_pending(chunk_ids=500)

    def rebuild_loop() -> None:
        while ingesting.is_set():
            rollups_rebuild()

    writers = [_in_thread(ingest(seed), errors) for seed in range(3)]
    others = [_in_thread(absorb_loop, errors) for _ in range(2)]
    others.append(_in_thread(rebuild_loop, errors))
    for thread in writers + others:
        thread.start()
    for thread in writers:
        thread.join()
    ingesting.clear()
    for thread in others:
        thread.join()

    assert not errors, errors
    rollups_absorb_pending()
    assert_summaries_exact()
