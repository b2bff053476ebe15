import json
import random
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from core.models import Blog
from core.testing import free_port
from ingest.services import views_record

COUNTRIES = ["US", "DE", "ET", "IN", "ZZ", "BR", "JP"]
# Two years of days, both ends included, crossing a leap day and month and year ends.
FIRST_DAY = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 731


@pytest.fixture
def blog_ids(db) -> list[int]:
    authors = [
        get_user_model().objects.create_user(username=f"author{n}", password="x") for n in range(3)
    ]
    return [Blog.objects.create(title=f"Blog {n}", author=authors[n % 3]).pk for n in range(6)]


@pytest.fixture
def ingest_random(blog_ids) -> Callable[..., int]:
    """``ingest_random(count, rng=..., days=(lo, hi))``: record random views; return how many."""

    def ingest(
        count: int, *, rng: random.Random | None = None, days: tuple[int, int] = (0, DAYS - 1)
    ) -> int:
        rng = rng or random.Random(count)
        rows = [
            (
                rng.choice(blog_ids),
                rng.choice(COUNTRIES),
                FIRST_DAY + timedelta(days=rng.randint(*days), seconds=rng.randrange(86_400)),
            )
            for _ in range(count)
        ]
        return views_record(views=rows)

    return ingest


@pytest.fixture
def trailing_sleeps(ingest_random, monkeypatch) -> list[float]:
    """Absorb's trailing waits, recorded instead of slept; each one ingests 5 views meanwhile."""
    from rollups import absorb

    slept: list[float] = []

    def sleep_while_views_arrive(seconds: float) -> None:
        slept.append(seconds)
        ingest_random(5, rng=random.Random(len(slept)))

    monkeypatch.setattr(absorb.time, "sleep", sleep_while_views_arrive)
    return slept


@contextmanager
def broker_at(url: str, transport_options: dict[str, object]) -> Iterator[None]:
    """Send this process's tasks to another broker for a while (the app's own configuration)."""
    from worker.celery import app

    saved = {
        "broker_url": app.conf.broker_url,
        "broker_transport_options": app.conf.broker_transport_options,
    }
    app.conf.update(broker_url=url, broker_transport_options=transport_options)
    try:
        yield
    finally:
        app.conf.update(saved)


def filesystem_broker_options(folder: Path) -> dict[str, object]:
    for name in ("broker", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "broker"),
        "data_folder_out": str(folder / "broker"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }


@pytest.fixture
def private_broker(tmp_path) -> Iterator[Callable[[], list[dict]]]:
    """Tasks sent by this process go to a filesystem broker of this test's own (a real one, that
    no worker reads); the fixture gives the messages waiting there."""
    folder = tmp_path / "private-broker"
    options = filesystem_broker_options(folder)

    def messages() -> list[dict]:
        return [json.loads(path.read_text()) for path in sorted((folder / "broker").iterdir())]

    with broker_at("filesystem://", options):
        yield messages


@contextmanager
def _silent_server() -> Iterator[int]:
    """A server that accepts connections and never answers (a broker that hangs); gives its
    port, picked by the system so that concurrent test runs cannot collide."""
    server = socket.create_server(("127.0.0.1", 0), reuse_port=False)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


@pytest.fixture(params=["closed port", "silent server", "unwritable folder"])
def unreachable_broker(request, tmp_path) -> Iterator[str]:
    """A broker that cannot take a task: Redis on a port where nothing listens, Redis that never
    answers, or a filesystem broker whose folder is a file. Gives its kind."""
    kind = request.param
    if kind == "closed port":
        with broker_at(f"redis://127.0.0.1:{free_port()}/0", {}):
            yield kind
    elif kind == "silent server":
        with _silent_server() as port, broker_at(f"redis://127.0.0.1:{port}/0", {}):
            yield kind
    else:
        options = filesystem_broker_options(tmp_path / "broken-broker")
        not_a_folder = tmp_path / "not-a-folder"
        not_a_folder.write_text("")
        with broker_at("filesystem://", {**options, "data_folder_out": str(not_a_folder)}):
            yield kind
