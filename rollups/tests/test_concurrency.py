"""Ingest and absorb at the same time, from several threads (each its own connection)."""

import random
import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from rollups.absorb import rollups_absorb_pending
from rollups.rebuild import rollups_rebuild
from rollups.selectors import rollups_status
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


@pytest.mark.django_db(transaction=True)
def test_absorb_waits_for_a_writer_still_in_flight(ingest_random):
    """A batch whose ids are drawn but not committed yet must not fall below the watermark."""
    ingest_random(50)
    inserted = threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        with transaction.atomic():
            ingest_random(40, rng=random.Random(11))
            inserted.set()
            time.sleep(1.0)  # committed only after the absorb below has started

    writer = _in_thread(slow_writer, errors)
    writer.start()
    assert inserted.wait(10)
    rollups_absorb_pending()
    writer.join()
    assert not errors, errors
    rollups_absorb_pending()
    # Had the first run moved the watermark past the writer's ids before it committed, its 40
    # views would be neither in the summaries nor in the tail.
    assert_summaries_exact()
    assert rollups_status().pending_views == 0
