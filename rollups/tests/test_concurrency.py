"""Ingest and absorb at the same time, from several threads (each its own connection)."""

import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from ingest.models import BlogView
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending, rollups_absorb_recent
from rollups.models import AbsorbState, RecentState
from rollups.rebuild import rollups_rebuild
from rollups.selectors import rollups_status
from rollups.tables import STATE_NAME
from rollups.tests.conftest import COUNTRIES
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
def test_concurrent_ingest_absorb_and_rebuild_count_every_view_once(ingest_random, blog_ids):
    errors: list[BaseException] = []
    ingesting = threading.Event()
    ingesting.set()

    def ingest(seed: int) -> Callable[[], None]:
        def work() -> None:
            rng = random.Random(seed)
            for _ in range(25):
                ingest_random(rng.randint(1, 300), rng=rng)

        return work

    def ingest_now() -> None:
        # Views of the last 10 minutes, for the per-minute rows and their own absorb.
        rng = random.Random(99)
        for _ in range(25):
            now = timezone.now()
            views_record(
                views=[
                    (rng.choice(blog_ids), rng.choice(COUNTRIES), now - timedelta(seconds=s))
                    for s in rng.choices(range(600), k=rng.randint(1, 200))
                ]
            )

    def absorb_loop() -> None:
        while ingesting.is_set():
            rollups_absorb_pending(chunk_ids=500)

    def apart_loop() -> None:
        # The two absorbs of the worker's processes: the summaries' and the per-minute rows'.
        while ingesting.is_set():
            rollups_absorb_pending(chunk_ids=300, recent=False)
            rollups_absorb_recent(chunk_ids=200)

    def rebuild_loop() -> None:
        while ingesting.is_set():
            rollups_rebuild()

    writers = [_in_thread(ingest(seed), errors) for seed in range(3)]
    writers.append(_in_thread(ingest_now, errors))
    others = [_in_thread(absorb_loop, errors) for _ in range(2)]
    others.append(_in_thread(apart_loop, errors))
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL's")
@pytest.mark.parametrize("held", ["summaries", "per-minute rows"])
def test_the_two_absorbs_do_not_wait_for_each_other(ingest_random, held):
    """Each absorb locks its own state row: while one is held (as a long run of the other
    would), the other runs to the end (a wait for the held lock would fail: lock_timeout)."""
    ingest_random(120)
    locked = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []
    model = AbsorbState if held == "summaries" else RecentState

    def hold() -> None:
        with transaction.atomic():
            model.objects.get_or_create(name=STATE_NAME)
            model.objects.select_for_update().get(name=STATE_NAME)
            locked.set()
            release.wait(30)

    holder = _in_thread(hold, errors)
    holder.start()
    try:
        assert locked.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        top = BlogView.objects.order_by("-id").values_list("id", flat=True)[0]
        if held == "summaries":
            assert rollups_absorb_recent().absorbed_through_id == top
        else:
            assert rollups_absorb_pending(recent=False).absorbed_through_id == top
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
        release.set()
        holder.join()
    assert not errors, errors
    rollups_absorb_pending()
    assert_summaries_exact()
