"""Helpers shared by the benchmarks: a scratch PostgreSQL database, a Django setup for it, and
the project's web and Celery processes."""

import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/blogviews_bench"
# The rollup benchmark's views: BENCH_VIEWS (e.g. 100000000), else 10 M. Each size has its own
# database, so that a 100 M run does not wipe the 10 M one (the read benchmarks use it too).
DEFAULT_BENCH_VIEWS = 10_000_000


def bench_views() -> int:
    """The rollup benchmark's number of seeded views: the environment's BENCH_VIEWS, else 10 M."""
    value = os.environ.get("BENCH_VIEWS", "").replace("_", "")
    if not value:
        return DEFAULT_BENCH_VIEWS
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"BENCH_VIEWS must be a positive number of views; got {value!r}")
    return int(value)


def views_name(views: int) -> str:
    """100000000 -> '100m', 2500000 -> '2500k', 1234 -> '1234'."""
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if views % size == 0:
            return f"{views // size}{unit}"
    return str(views)


def rollups_database_url(views: int) -> str:
    """The rollup benchmark's database for ``views`` seeded views: ``blogviews_bench_rollups``
    at 10 M (its name before sizes were chosen), ``blogviews_bench_rollups_100m`` at 100 M."""
    base = "postgres://postgres@127.0.0.1:5432/blogviews_bench_rollups"
    return base if views == DEFAULT_BENCH_VIEWS else f"{base}_{views_name(views)}"


# BENCH_ROLLUPS_DATABASE_URL names another one (e.g. a 100 M database kept from an earlier run).
ROLLUPS_DATABASE_URL = os.environ.get("BENCH_ROLLUPS_DATABASE_URL") or rollups_database_url(
    bench_views()
)


def bench_env(database_url: str, redis_url: str | None = None) -> dict[str, str]:
    """Environment for the project's processes in a benchmark run."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    env.setdefault("SECRET_KEY", "benchmark-only-secret-key-0123456789-abcdefghijklmnop")
    env.setdefault("LOG_LEVEL", "WARNING")
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env.pop("REDIS_URL", None)
    return env


def database_ensure(database_url: str) -> None:
    """Create the benchmark database if it does not exist."""
    import psycopg2

    name = database_url.rsplit("/", 1)[1]
    admin = psycopg2.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def manage(env: dict[str, str], *args: str) -> str:
    """Run a manage.py command in the benchmark environment; return what it printed."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        check=True,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout


def seed(
    env: dict[str, str], *, views: int, authors: int, blogs: int, bulk: bool = False, seed: int = 1
) -> str:
    """``seed_data --reset --seed 1`` with these sizes (``--bulk`` if asked); return what it
    printed."""
    return manage(
        env, "seed_data", "--reset", "--seed", str(seed), "--views", str(views),
        "--authors", str(authors), "--blogs", str(blogs), *(["--bulk"] if bulk else []),
    )  # fmt: skip


# The server settings that decide these figures (docker-compose.yml sets them for production).
# autovacuum: where it is off, nothing but the project's own tending (rollups.tending,
# seed_data) vacuums or analyzes the tables, and reads slow down (README, Measured).
SERVER_SETTINGS = (
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "wal_compression",
    "autovacuum",
)


def server_settings() -> str:
    """The PostgreSQL version and SERVER_SETTINGS of the database Django is set up for."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        shown = [f"PostgreSQL {cursor.fetchone()[0].split()[0]}"]
        for name in SERVER_SETTINGS:
            cursor.execute(f"SHOW {name}")
            shown.append(f"{name}={cursor.fetchone()[0]}")
    return ", ".join(shown)


def django_setup(env: dict[str, str]) -> None:
    """Configure Django in this process for the benchmark database."""
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "core.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


@contextmanager
def gunicorn_serving(env: dict[str, str], port: int) -> Iterator[None]:
    """Run the web process (gunicorn.conf.py) on ``port`` until the block ends."""
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "core.wsgi:application",
         "--access-logfile", "/dev/null"],
        cwd=ROOT,
        env={**env, "PORT": str(port)},
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gunicorn did not start")
            time.sleep(0.2)
        yield
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _celery_start(
    name: str, args: list[str], env: dict[str, str], logs: Path
) -> subprocess.Popen[bytes]:
    """Start ``celery -A worker ARGS`` with ``env``, its output in ``logs/NAME.log``."""
    log = (logs / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _celery_stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def worker_and_beat(env: dict[str, str], redis_url: str, name: str) -> Iterator[Path]:
    """A real Celery worker (solo pool) and beat with ``env``, broker ``redis_url`` (its queue
    purged first), until the block ends; yields the directory of their logs. Ingest's absorb
    trigger (``rollups.trigger``) reaches this worker when the ingesting process uses the same
    Redis."""
    from celery import Celery

    broker = Celery(broker=redis_url)
    broker.control.purge()
    logs = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    worker = _celery_start(
        "worker",
        ["worker", "--pool=solo", "-n", f"bench-{name}@%h", "--loglevel", "INFO"],
        env,
        logs,
    )
    beat = _celery_start(
        "beat", ["beat", "--loglevel", "INFO", "--schedule", str(logs / "beat-schedule")], env, logs
    )
    try:
        deadline = time.monotonic() + 60
        while not broker.control.ping(timeout=1.0):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the Celery worker did not start; see {logs}/worker.log")
        if beat.poll() is not None:
            raise SystemExit(f"Celery beat exited; see {logs}/beat.log")
        yield logs
    finally:
        _celery_stop(beat)
        _celery_stop(worker)


# The settings that tune the rollups; a benchmark of the deployed defaults drops them.
ROLLUP_SETTINGS = (
    "ROLLUP_INTERVAL_SECONDS",
    "RECENT_ROLLUP_INTERVAL_SECONDS",
    "ABSORB_TRIGGER_PENDING",
    "RECENT_TRIGGER_PENDING",
    "ABSORB_TRIGGER_SECONDS",
)


def without_rollup_settings(env: dict[str, str]) -> dict[str, str]:
    """``env`` without ``ROLLUP_SETTINGS``: the worker and beat run at their defaults."""
    return {name: value for name, value in env.items() if name not in ROLLUP_SETTINGS}


def worker_absorbs(logs: Path, task: str = "rollups.absorb_pending") -> list[tuple[float, int]]:
    """(seconds, views) of every run of the absorb ``task`` a ``worker_and_beat`` worker logged
    ("Task rollups.absorb_pending[id] succeeded in 1.2s: 600")."""
    return [
        (float(seconds), int(views))
        for seconds, views in re.findall(
            re.escape(task) + r"\[[^\]]+\] succeeded in ([\d.]+)s: (\d+)",
            (logs / "worker.log").read_text(errors="replace"),
        )
    ]


def absorb_runs(logs: Path, task: str = "rollups.absorb_pending") -> str:
    """The runs of the absorb ``task`` that absorbed views in a ``worker_and_beat`` worker's
    log: how many, their views and their p50 and max duration. (Runs that absorbed nothing are
    not logged: ``core.logs.RoutineTaskFilter``.)"""
    with_views = [(seconds, views) for seconds, views in worker_absorbs(logs, task) if views]
    if not with_views:
        return "no absorb run with views"
    durations = [seconds for seconds, _ in with_views]
    return (
        f"{len(with_views)} absorb runs with views ("
        f"{sum(views for _, views in with_views):,} views; "
        f"p50 {statistics.median(durations):.2f} s, max {max(durations):.2f} s)"
    )
