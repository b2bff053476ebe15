"""The absorb trigger (rollups.trigger): ingest sends an absorb run once the summaries' tail
passes ABSORB_TRIGGER_PENDING, and one of the per-minute levels once theirs passes
RECENT_TRIGGER_PENDING, at most one of each per ABSORB_TRIGGER_SECONDS; with a real worker,
concurrent batches crossing the thresholds are absorbed exactly once."""

import base64
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection

from core.metrics import ABSORB_TRIGGERS
from core.testing import child_env, project_process, wait_until
from ingest.models import BlogView
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending, rollups_absorb_recent
from rollups.selectors import rollups_status
from rollups.tests.conftest import COUNTRIES, FIRST_DAY, broker_at, filesystem_broker_options
from rollups.tests.recount import assert_summaries_exact
from rollups.trigger import (
    RECENT_TRIGGER_CACHE_KEY,
    TRIGGER_CACHE_KEY,
    absorb_trigger,
    pending_ids_both,
)
from worker.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


def _batch(blog_ids: list[int], size: int, rng: random.Random) -> int:
    """Record ``size`` views of today (so that absorb also folds no old day) through the write
    path ingest uses."""
    from django.utils import timezone

    now = timezone.now()
    return views_record(
        views=[(rng.choice(blog_ids), rng.choice(COUNTRIES), now) for _ in range(size)]
    )


def _concurrently(workers: int, work: Callable[[int], object]) -> None:
    """Run ``work(n)`` in ``workers`` threads, each on its own connection; re-raise a failure."""
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as error:
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _sent_tasks(messages: list[dict]) -> list[tuple[str, dict]]:
    """(task name, kwargs) of each message in the private broker."""
    sent = []
    for message in messages:
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        sent.append((message["headers"]["task"], kwargs))
    return sent


def test_pending_ids_counts_the_ids_above_the_watermark(ingest_random):
    assert pending_ids_both()[0] == 0
    ingest_random(30)
    assert pending_ids_both()[0] == 30
    rollups_absorb_pending()
    assert pending_ids_both()[0] == 0


def test_the_trigger_sends_one_run_once_the_tail_passes_the_threshold_and_coalesces(
    blog_ids, settings, private_broker
):
    settings.ABSORB_TRIGGER_PENDING = 100
    settings.RECENT_TRIGGER_PENDING = 0  # the per-minute levels' own trigger: the next test
    settings.ABSORB_TRIGGER_SECONDS = 600
    rng = random.Random(1)
    _batch(blog_ids, 60, rng)
    assert private_broker() == []
    _batch(blog_ids, 60, rng)
    sent = [("rollups.absorb_pending", {"triggered": True})]
    assert _sent_tasks(private_broker()) == sent
    # A burst of concurrent batches, all past the threshold, within the window: no more runs.
    _concurrently(6, lambda n: [_batch(blog_ids, 20, random.Random(n)) for _ in range(4)])
    assert len(private_broker()) == 1
    # The window over (its key expired), the next batch past the threshold sends again.
    cache.delete(TRIGGER_CACHE_KEY)
    _batch(blog_ids, 1, rng)
    assert _sent_tasks(private_broker()) == sent * 2
    # Absorbed, the tail is below the threshold again: nothing is sent.
    cache.delete(TRIGGER_CACHE_KEY)
    rollups_absorb_pending()
    _batch(blog_ids, 60, rng)
    assert len(private_broker()) == 2


def test_the_per_minute_levels_are_triggered_on_their_own_tail_and_window(
    blog_ids, settings, private_broker
):
    settings.ABSORB_TRIGGER_PENDING = 100
    settings.RECENT_TRIGGER_PENDING = 40
    settings.ABSORB_TRIGGER_SECONDS = 600
    rng = random.Random(4)
    recent: tuple[str, dict] = ("rollups.absorb_recent", {})
    summaries: tuple[str, dict] = ("rollups.absorb_pending", {"triggered": True})
    _batch(blog_ids, 30, rng)
    assert private_broker() == []
    # Past the per-minute threshold only: their run alone, expiring after their own interval.
    _batch(blog_ids, 30, rng)
    assert _sent_tasks(private_broker()) == [recent]
    assert private_broker()[0]["headers"]["expires"] is not None
    # Past both, the per-minute window still taken: the summaries' run alone.
    _batch(blog_ids, 60, rng)
    assert _sent_tasks(private_broker()) == [recent, summaries]
    # The summaries absorbed (the per-minute levels not), both windows over: only the
    # per-minute tail is past its threshold.
    rollups_absorb_pending(recent=False)
    cache.delete_many([TRIGGER_CACHE_KEY, RECENT_TRIGGER_CACHE_KEY])
    assert pending_ids_both() == (0, 120)
    _batch(blog_ids, 1, rng)
    assert _sent_tasks(private_broker()) == [recent, summaries, recent]
    # Both absorbed: below both thresholds, nothing more.
    cache.delete_many([TRIGGER_CACHE_KEY, RECENT_TRIGGER_CACHE_KEY])
    rollups_absorb_recent()
    assert pending_ids_both() == (1, 0)
    _batch(blog_ids, 30, rng)
    assert len(private_broker()) == 3
    assert ABSORB_TRIGGERS.labels("recent")._value.get() >= 2


def test_no_trigger_when_disabled_or_for_the_seed(blog_ids, settings, private_broker):
    settings.ABSORB_TRIGGER_PENDING = 0
    settings.RECENT_TRIGGER_PENDING = 0
    _batch(blog_ids, 50, random.Random(2))
    settings.ABSORB_TRIGGER_PENDING = 10
    views_record(views=[(blog_ids[0], "US", FIRST_DAY)] * 20, absorb_trigger=False)
    assert private_broker() == []
    assert absorb_trigger() is True  # the same tail, checked once a batch has committed


def test_a_trigger_that_cannot_reach_the_broker_keeps_the_batch(
    blog_ids, settings, unreachable_broker
):
    settings.ABSORB_TRIGGER_PENDING = 10
    before = ABSORB_TRIGGERS.labels("summaries")._value.get()
    assert _batch(blog_ids, 20, random.Random(3)) == 20
    assert BlogView.objects.count() == 20
    assert ABSORB_TRIGGERS.labels("summaries")._value.get() == before


@contextmanager
def _worker(tmp_path) -> Iterator[Path]:
    """A real Celery worker (solo pool, no beat) reading the broker this process sends to;
    gives its log's path."""
    extra: dict[str, str] = {"LOG_LEVEL": "INFO"}
    if os.environ.get("REDIS_URL"):
        app.control.purge()  # leftovers of earlier runs on the shared test broker
        sending = broker_at(app.conf.broker_url, app.conf.broker_transport_options)
    else:
        folder = tmp_path / "celery"
        extra["CELERY_FILESYSTEM_DIR"] = str(folder)
        sending = broker_at("filesystem://", filesystem_broker_options(folder))
    args = ["-m", "celery", "-A", "worker", "worker", "--pool=solo", "--without-gossip"]
    args += ["--without-mingle", "--hostname", "trigger-tests@%h", "--loglevel=INFO"]
    log = tmp_path / "worker.log"
    with sending, project_process(args, log=log, env=child_env(**extra)) as worker:
        # Ready before the first batch, so that its runs are timely (not a test of start-up).
        assert wait_until(
            lambda: "ready." in log.read_text() or worker.poll() is not None, seconds=60
        ), log.read_text()
        assert worker.poll() is None, log.read_text()
        yield log


def test_concurrent_batches_past_the_threshold_are_absorbed_by_the_worker_exactly_once(
    blog_ids, settings, tmp_path
):
    settings.ABSORB_TRIGGER_PENDING = 150
    settings.RECENT_TRIGGER_PENDING = 100
    settings.ABSORB_TRIGGER_SECONDS = 1
    sent_before = ABSORB_TRIGGERS.labels("summaries")._value.get()
    recent_before = ABSORB_TRIGGERS.labels("recent")._value.get()
    with _worker(tmp_path) as log:
        started = time.monotonic()
        # 8 writers x 12 batches of 25 views over a few seconds, and an absorb run of this
        # process's own now and then (as beat's would be) racing the worker's triggered runs.
        stop = threading.Event()

        def write(n: int) -> None:
            rng = random.Random(10 + n)
            for _ in range(12):
                _batch(blog_ids, 25, rng)
                time.sleep(rng.uniform(0.05, 0.3))

        def absorb_now_and_then() -> None:
            while not stop.wait(0.7):
                rollups_absorb_pending()
            connection.close()

        racer = threading.Thread(target=absorb_now_and_then)
        racer.start()
        try:
            _concurrently(8, write)
        finally:
            stop.set()
            racer.join()
        elapsed = time.monotonic() - started
        assert BlogView.objects.count() == 8 * 12 * 25
        sent = ABSORB_TRIGGERS.labels("summaries")._value.get() - sent_before
        # Coalesced: at most one run per window, though most of the 96 batches found the tail
        # past the threshold.
        assert 1 <= sent <= elapsed / settings.ABSORB_TRIGGER_SECONDS + 1
        # The views of the window's last batches wait for the next batch past the threshold
        # (or beat): one more, once the window is over, sends a run, and the worker leaves the
        # tail below the threshold with no beat and no absorb of ours.
        time.sleep(settings.ABSORB_TRIGGER_SECONDS + 0.2)
        _batch(blog_ids, 25, random.Random(99))
        absorbed = wait_until(lambda: rollups_status().pending_views < 150, seconds=60)
        assert absorbed, log.read_text()
        runs = re.findall(
            r"rollups\.absorb_pending\[[^\]]+\] succeeded in [\d.]+s: (\d+)", log.read_text()
        )
        assert runs and sum(int(views) for views in runs) > 0, log.read_text()
        # The per-minute levels' runs, triggered on their own tail, raced the summaries' ones.
        assert ABSORB_TRIGGERS.labels("recent")._value.get() > recent_before
        recent_runs = re.findall(
            r"rollups\.absorb_recent\[[^\]]+\] succeeded in [\d.]+s: (\d+)", log.read_text()
        )
        assert recent_runs and sum(int(views) for views in recent_runs) > 0, log.read_text()
        # Celery's own lines about these routine runs are left out (core.logs), but for the
        # successes that absorbed views.
        assert not re.search(r"rollups\.absorb_\w+\[[^\]]+\] received", log.read_text())
        assert not re.search(
            r"rollups\.absorb_\w+\[[^\]]+\] succeeded in [\d.]+s: 0\n", log.read_text()
        )
        assert "Traceback" not in log.read_text()
    rollups_absorb_pending()
    assert rollups_status().pending_views == 0
    assert_summaries_exact()
