"""Helpers for tests that start the project's own processes (Celery worker, beat, commands)."""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
    """A free TCP port on 127.0.0.1: from ``TEST_PORTS`` (``"8350-8399"``) when set, so that a
    shared machine's runs keep to their own range, else one the kernel picks."""
    low, _, high = os.environ.get("TEST_PORTS", "").partition("-")
    candidates = range(int(low), int(high or low) + 1) if low else [0]
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError(f"no free port in TEST_PORTS={os.environ['TEST_PORTS']}")


def http_get(url: str, *, timeout: float = 10.0) -> int:
    """The status of ``GET url`` (an error status too), or 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


@contextmanager
def web_server(*, log: Path, env: dict[str, str], start_seconds: float = 60.0) -> Iterator[str]:
    """The real web process (``gunicorn -c gunicorn.conf.py``, the project's config) on a free
    port of 127.0.0.1; yields its base URL once ``/healthz`` answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "core.wsgi:application"]
    with project_process(args, log=log, env={**env, "PORT": str(port)}) as process:
        started = wait_until(
            lambda: process.poll() is not None or http_get(f"{base}/healthz", timeout=2) == 200,
            seconds=start_seconds,
        )
        if not started or process.poll() is not None:
            raise RuntimeError(f"gunicorn did not start:\n{log.read_text(errors='replace')}")
        yield base
