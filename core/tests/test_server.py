"""The real web server (``gunicorn -c gunicorn.conf.py``, the project's own config) under clients
that abuse it: many processes sharing one throttle, and clients that send their requests slowly.

Each test starts gunicorn on the test database (and, on PostgreSQL + Redis, the test Redis);
nothing is mocked.
"""

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.testing import child_env, web_server
from core.throttling import window_current

pytestmark = pytest.mark.django_db(transaction=True)

READ_URL = "/api/analytics/top/blog/"


def _post_status(url: str) -> int:
    request = urllib.request.Request(
        url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_read_throttle_counts_across_the_worker_processes(tmp_path: Path) -> None:
    # Two worker processes, public read at 10 per hour per address: whichever process serves a
    # request, the address has 10 in all. (Per-process counters let 10 through per process.)
    env = child_env(
        # Counters of its own in a shared Redis (the window outlives the test).
        CACHE_KEY_PREFIX=f"test-{uuid.uuid4().hex}",
        WEB_CONCURRENCY="2",
        ANALYTICS_PUBLIC_READ="1",
        ANALYTICS_THROTTLE_ANON="10/hour",
    )
    with web_server(log=tmp_path / "web.log", env=env) as base:
        for _ in range(3):  # a window boundary in the middle allows 2 x 10: try again then
            window, _ = window_current(3600)
            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = Counter(pool.map(lambda _: _post_status(base + READ_URL), range(40)))
            if window_current(3600)[0] == window:
                break
            time.sleep(1)
        log = (tmp_path / "web.log").read_text(errors="replace")

    assert statuses == {200: 10, 429: 30}, log


class SlowClient:
    """A connection that sends its request a byte at a time, one byte every ``interval``
    seconds, and never finishes it while the test runs: either the headers (it never reaches
    the body) or the body of a sign-in (whose view reads the body)."""

    def __init__(self, base: str, *, headers_only: bool, interval: float = 0.5) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        body = json.dumps({"username": "slow", "password": "x" * 400}).encode()
        head = (
            f"POST /api/token/ HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        if headers_only:
            self.pending = head
        else:
            self.sock.sendall(head)
            self.pending = body
        self.interval = interval
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        # Never the last byte: the request must stay unfinished.
        while not self.stop.is_set() and self.sent < len(self.pending) - 1:
            try:
                self.sock.sendall(self.pending[self.sent : self.sent + 1])
            except OSError:
                return
            self.sent += 1
            self.stop.wait(self.interval)

    def still_open(self) -> bool:
        """The server has neither answered nor closed the connection."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(1)  # an answer, or b"" when closed
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.setblocking(True)
        return False

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def slow_clients() -> Iterator[list[SlowClient]]:
    clients: list[SlowClient] = []
    yield clients
    for client in clients:
        client.close()


def _kept_alive(base: str) -> http.client.HTTPConnection:
    """A connection that has had one answer and is kept open, idle, by the server."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    assert response.getheader("Connection", "").lower() != "close"
    return connection


def test_a_connection_carries_one_request_after_another(tmp_path: Path) -> None:
    with web_server(log=tmp_path / "web.log", env=child_env()) as base:
        connection = _kept_alive(base)
        first = connection.sock
        for _ in range(3):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert (response.status, json.loads(response.read())) == (200, {"status": "ok"})
        # The same socket all along: http.client opens a new one only after a close.
        assert connection.sock is first
        connection.close()


def test_healthz_answers_at_once_while_slow_clients_hold_connections(
    tmp_path: Path, slow_clients: list[SlowClient]
) -> None:
    # The default configuration (workers and threads as on this machine). Before gthread
    # workers, 12 such clients held every sync worker and /healthz waited for gunicorn's
    # 30 s timeout to kill one. Idle kept-alive connections beside them hold no thread and
    # do not stop a worker from taking new connections. A worker keeps at most
    # worker_connections - threads = threads (8) connections alive and closes the next one
    # after its answer; the kernel may hand every new connection to the same worker, so no
    # more than that many are opened here (16 failed when one worker took 9 of them).
    with web_server(log=tmp_path / "web.log", env=child_env()) as base:
        idle = [_kept_alive(base) for _ in range(8)]
        for number in range(12):
            slow_clients.append(SlowClient(base, headers_only=number % 2 == 0))
        # Every slow client is in: each has sent some bytes and holds its connection.
        time.sleep(2)
        assert all(client.sent >= 2 for client in slow_clients)

        for _ in range(5):
            started = time.monotonic()
            with urllib.request.urlopen(base + "/healthz", timeout=20) as response:
                assert response.status == 200
            # Generous: a busy machine, not a stalled server (which took 20-30 s).
            assert time.monotonic() - started < 2.0

        assert all(client.still_open() for client in slow_clients)
        for connection in idle:
            connection.close()
