"""A real Celery worker process starts from the project and answers over the real broker.

On Redis the answer comes over pub/sub. On the embedded default it comes over kombu's filesystem
transport, which supports the fanout exchange that remote control (ping, inspect) broadcasts on,
as long as both sides share the control folder (``CELERY_BROKER_TRANSPORT_OPTIONS``). No result
backend and no task is involved.
"""

import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from core.testing import child_env, project_process
from worker.celery import app as celery_app

NODE = "core-tests"
START_SECONDS = 30.0


@dataclass(frozen=True)
class RunningWorker:
    node: str
    log: Path
    # An app on the worker's broker, to talk to it.
    client: Celery

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _filesystem_client(folder: Path) -> Celery:
    """A client of the filesystem broker under ``folder``, laid out as the settings lay out
    ``CELERY_FILESYSTEM_DIR``; the worker gets the same folder through that variable."""
    broker, control = folder / "broker", folder / "control"
    broker.mkdir(parents=True)
    control.mkdir()
    client = Celery("core-tests-client", set_as_current=False)
    client.conf.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": str(broker),
            "data_folder_out": str(broker),
            "control_folder": str(control),
            "store_processed": False,
        },
    )
    return client


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningWorker]:
    """``celery -A worker worker`` (solo pool) on this run's broker and test database.

    It consumes only its own queue, so it never takes another test's tasks; on the embedded
    default it also gets a broker folder of its own. Stopped afterwards whatever happened.
    """
    folder = tmp_path_factory.mktemp("worker")
    if os.environ.get("REDIS_URL"):
        env, client = child_env(), celery_app
    else:
        env = child_env(CELERY_FILESYSTEM_DIR=str(folder / "celery"))
        client = _filesystem_client(folder / "celery")
    args = [
        *("-m", "celery", "-A", "worker", "worker", "--pool=solo"),
        *("--hostname", f"{NODE}@%h", "--queues", NODE),
        *("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"),
    ]
    log = folder / "worker.log"
    with project_process(args, log=log, env=env):
        yield RunningWorker(node=f"{NODE}@{socket.gethostname()}", log=log, client=client)


def _ask_until_answered(ask: Callable[[], Any]) -> Any:
    """Repeat a broadcast (each waits up to its own timeout) until a reply arrives or the
    worker's start-up time is over; the last reply."""
    deadline = time.monotonic() + START_SECONDS
    replies = ask()
    while not replies and time.monotonic() < deadline:
        replies = ask()
    return replies


def test_worker_answers_ping(worker: RunningWorker) -> None:
    replies = _ask_until_answered(
        lambda: worker.client.control.ping(destination=[worker.node], timeout=1.0)
    )

    assert replies == [{worker.node: {"ok": "pong"}}], worker.output()


def test_worker_knows_every_task_this_process_can_send(worker: RunningWorker) -> None:
    # What the worker imports at start (autodiscovery); every task known here must be there too.
    celery_app.loader.import_default_modules()
    expected = {name for name in celery_app.tasks if not name.startswith("celery.")}
    inspect = worker.client.control.inspect(destination=[worker.node], timeout=1.0)

    replies = _ask_until_answered(inspect.registered)

    assert replies, worker.output()
    assert set(replies) == {worker.node}
    registered = {entry.split(" ", 1)[0] for entry in replies[worker.node]}
    assert expected
    assert expected <= registered
