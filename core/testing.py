"""Helpers for tests that start the project's own processes (Celery worker, beat, commands)."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connections


def child_database_url() -> str:
    """The test database as a ``DATABASE_URL``, so that a child never touches the real one."""
    db = connections["default"].settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    """This test run's environment for a child process, on the test database."""
    return {**os.environ, "DATABASE_URL": child_database_url(), "PYTHONUNBUFFERED": "1", **extra}


@contextmanager
def project_process(
    args: Sequence[str], *, log: Path, env: dict[str, str], stop_seconds: float = 15.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python <args>`` from the project root, output to ``log``; stop it afterwards."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=stop_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(condition: Callable[[], object], *, seconds: float, interval: float = 0.2) -> bool:
    """Poll ``condition()`` until it is true or ``seconds`` pass; return its last value."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on: the first free one of ``TEST_PORTS``
    ("8200-8249", for a machine whose users share out port ranges), else one the system picks."""
    wanted = os.environ.get("TEST_PORTS", "")
    candidates = [0]
    if wanted:
        low, _, high = wanted.partition("-")
        candidates = list(range(int(low), int(high or low) + 1))
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError(f"no free port in TEST_PORTS={wanted}")
