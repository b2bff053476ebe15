"""The whole service as real processes, the way the Procfile runs it, for the soak tests.

A stack is a fresh PostgreSQL database (on the server of ``DATABASE_URL``, or any server given),
a private ``redis-server`` on a free port (cache and Celery broker; a test may stop and start it
without touching anyone else's Redis), and the Procfile's three processes: gunicorn with
``gunicorn.conf.py`` on a free port, the Celery worker and beat. The database is migrated and
seeded with ``manage.py`` as an operator would, and a staff user is created for the API.

Every process writes to its own log under the stack's folder; ``Stack.output()`` gathers their
tails, which the soak conftest attaches to every failing test.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis
import requests
from django.conf import settings

from core.testing import (
    RedisServer,
    free_port,
    process_kill,
    process_start,
    process_stop,
    procfile_command,
    wait_until,
)
from core.testing import redis_server as redis_server_running

STAFF_USERNAME = "soak-staff"
STAFF_PASSWORD = "soak-staff-password-not-secret"
# The beat interval of the stack: short, so that absorbs catch up within seconds of a fault.
ROLLUP_INTERVAL_SECONDS = 2
START_SECONDS = 90.0
# How much of each log a failure report shows.
LOG_TAIL_CHARS = 12_000


@dataclass
class Service:
    """One long-running process of the stack; it may be stopped, killed and started again."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        with self.log.open("ab") as output:
            output.write(f"\n=== soak: starting {self.name} at {time.strftime('%X')}\n".encode())
        self.process = process_start(self.command, log=self.log, env=self.env)

    def stop(self) -> None:
        if self.process is not None:
            process_stop(self.process)

    def kill(self) -> None:
        """SIGKILL it and its children: no shutdown, no acknowledgement, no rollback sent."""
        assert self.process is not None
        process_kill(self.process)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Api:
    """A signed-in HTTP client of the stack's API (a real ``requests`` session)."""

    def __init__(self, base_url: str, *, username: str, password: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        response = self.session.post(
            f"{base_url}/api/token/",
            json={"username": username, "password": password},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        self.token = response.json()["access"]
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def post(
        self,
        path: str,
        body: Any,
        *,
        no_cache: bool = False,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> requests.Response:
        sent = dict(headers or {})
        if no_cache:
            sent["Cache-Control"] = "no-cache"
        return self.session.post(f"{self.base_url}{path}", json=body, headers=sent, timeout=timeout)

    def get(self, path: str, *, timeout: float = 60.0) -> requests.Response:
        return self.session.get(f"{self.base_url}{path}", timeout=timeout)

    def total_views(self, *, no_cache: bool = True) -> int:
        """Every view over all time (by default read past the cache): the sum of the per-country
        rows (there are fewer than 1,000 countries, so one page holds them all)."""
        response = self.post(
            "/api/analytics/blog-views/country/", {"limit": 1000}, no_cache=no_cache
        )
        assert response.status_code == 200, response.text
        return sum(row["views"] for row in response.json()["results"])

    def status(self) -> dict[str, Any]:
        """``/api/rollups/status/``: pending views, the watermark, the last run."""
        response = self.get("/api/rollups/status/")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def pending_views(self) -> int:
        return int(self.status()["pending_views"])

    def ingest(self, views: list[dict[str, object]]) -> int:
        """Send the views in batches of at most 10,000, each of which must be answered 202;
        how many were acknowledged."""
        acknowledged = 0
        for start in range(0, len(views), 10_000):
            batch = views[start : start + 10_000]
            response = self.post("/api/ingest/views/", {"views": batch})
            assert response.status_code == 202, response.text
            acknowledged += response.json()["accepted"]
        return acknowledged

    def wait_absorbed(self, *, seconds: float) -> bool:
        """Wait until the rollups have absorbed every view (the worker and beat at work)."""

        def absorbed() -> bool:
            try:
                return self.pending_views() == 0
            except (requests.RequestException, AssertionError):
                return False

        return wait_until(absorbed, seconds=seconds, interval=0.5)


@dataclass
class Stack:
    name: str
    folder: Path
    database_url: str
    redis_url: str
    base_url: str
    env: dict[str, str]
    redis: RedisServer
    web: Service
    worker: Service
    beat: Service
    blog_ids: list[int] = field(default_factory=list)

    @property
    def services(self) -> list[Service]:
        return [self.web, self.worker, self.beat]

    def api(self) -> Api:
        return Api(self.base_url, username=STAFF_USERNAME, password=STAFF_PASSWORD)

    def manage(self, *args: str, timeout: float = 300.0) -> str:
        """``python manage.py <args>`` on the stack's database and Redis; its output."""
        return run_checked(
            [sys.executable, "manage.py", *args], env=self.env, timeout=timeout, what=args[0]
        )

    def revive(self) -> None:
        """Start again any process of the stack that died (a fault an earlier test caused, and
        reported), so that one failure does not fail every later test too."""
        if not redis_answers(self.redis_url):
            self.redis.start()
        for service in self.services:
            if not service.running:
                service.start()
        self.wait_ready()

    def recount(self) -> None:
        """Every summary table equals a recount from the raw views (``manage.py shell``, on the
        stack's database: rollups/tests/recount.py)."""
        self.manage(
            "shell",
            "-c",
            "from rollups.tests.recount import assert_summaries_exact; assert_summaries_exact()",
        )

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement on the stack's database (autocommit); its rows."""
        connection = psycopg2.connect(self.database_url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def output(self) -> str:
        """The tail of every process log, for a failure report."""
        logs = [*sorted(self.redis.folder.glob("redis-*.log")), *(s.log for s in self.services)]
        parts = []
        for log in logs:
            text = log.read_text(errors="replace") if log.exists() else ""
            if len(text) > LOG_TAIL_CHARS:
                text = "[...]\n" + text[-LOG_TAIL_CHARS:]
            parts.append(f"----- {log.name} ({log}) -----\n{text}")
        return "\n".join(parts)

    def wait_ready(self) -> None:
        """Until ``/readyz`` answers 200 (database, cache, broker) and the worker has said it
        is ready to take tasks."""
        assert wait_until(self._web_ready, seconds=START_SECONDS, interval=0.5), (
            "the web process did not become ready"
        )
        assert wait_until(
            lambda: " ready." in self.worker.output(), seconds=START_SECONDS, interval=0.5
        ), "the worker did not become ready"

    def _web_ready(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def redis_stop(self) -> None:
        """Stop the private Redis as an operator would (SIGTERM); nothing is persisted."""
        self.redis.stop()

    def redis_start(self) -> None:
        """Start it again on the same port, empty."""
        self.redis.start()


def run_checked(command: Sequence[str], *, env: dict[str, str], timeout: float, what: str) -> str:
    """Run a command to completion from the project root; its output, or an error showing it."""
    done = subprocess.run(
        list(command),
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise AssertionError(f"{what} exited with {done.returncode}:\n{output}")
    return output


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def fresh_database(server_url: str, *, name: str) -> Iterator[str]:
    """An empty database ``name`` on the PostgreSQL server of ``server_url`` (dropped first if a
    killed run left it behind, and dropped afterwards); its URL."""
    admin_url = _with_database(server_url, "postgres")

    def execute(statement: str) -> None:
        connection = psycopg2.connect(admin_url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_stack(
    *,
    name: str,
    folder: Path,
    server_url: str,
    seed_views: int = 5000,
    extra_env: Mapping[str, str] | None = None,
    replica_server_url: str | None = None,
) -> Iterator[Stack]:
    """Start a whole stack on a fresh database; stop every process and drop the database after.

    ``server_url``: a PostgreSQL ``DATABASE_URL`` whose server gets the fresh database.
    ``replica_server_url``: a streaming replica of that server; the stack reads the same
    database there (``DATABASE_REPLICA_URL``).
    """
    with ExitStack() as cleanup:
        redis_folder = folder / "redis"
        redis_folder.mkdir()
        redis_server = cleanup.enter_context(redis_server_running(redis_folder))
        redis_url = redis_server.url
        # Once Redis listens, so that the web server cannot be given its port.
        web_port = free_port()
        database_url = cleanup.enter_context(
            fresh_database(server_url, name=f"{_database_name(server_url)}_soak_{name}")
        )
        env = {
            **_inherited_env(),
            "DJANGO_SETTINGS_MODULE": "core.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "soak-only-secret-key-not-for-production-0123456789",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "HOST": "127.0.0.1",
            "PORT": str(web_port),
            "ROLLUP_INTERVAL_SECONDS": str(ROLLUP_INTERVAL_SECONDS),
            # The soak's own clients must not be throttled; throttling has its own tests.
            "ANALYTICS_THROTTLE_USER": "1000000/min",
            "ANALYTICS_THROTTLE_ANON": "1000000/min",
            # A rebuild whose worker is killed is found dead within seconds, not minutes
            # (the reaper runs every minute; a live job beats six times in this span).
            "REBUILD_STALE_SECONDS": "10",
            "WEB_CONCURRENCY": "3",
            "CELERY_CONCURRENCY": "2",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD,
            **(
                {}
                if replica_server_url is None
                else {
                    "DATABASE_REPLICA_URL": _with_database(
                        replica_server_url, _database_name(database_url)
                    )
                }
            ),
            **(extra_env or {}),
        }
        stack = Stack(
            name=name,
            folder=folder,
            database_url=database_url,
            redis_url=redis_url,
            base_url=f"http://127.0.0.1:{web_port}",
            env=env,
            redis=redis_server,
            web=_procfile_service("web", env, folder),
            worker=_procfile_service("worker", env, folder),
            beat=_procfile_service("beat", env, folder),
        )
        for service in reversed(stack.services):
            cleanup.callback(service.stop)
        stack.manage("migrate", "--noinput")
        stack.manage(
            "seed_data",
            *("--views", str(seed_views), "--authors", "6", "--blogs", "40", "--seed", "9"),
        )
        stack.manage(
            "createsuperuser", "--noinput", "--username", STAFF_USERNAME, "--email", "soak@x.test"
        )
        for service in (stack.web, stack.worker, stack.beat):
            service.start()
        stack.wait_ready()
        api = stack.api()
        top = api.post("/api/analytics/top/blog/", {"limit": 100}, no_cache=True)
        stack.blog_ids = sorted(row["blog_id"] for row in top.json()["results"])
        yield stack


def _procfile_service(name: str, env: dict[str, str], folder: Path) -> Service:
    """The Procfile's process ``name`` as a deployment runs it: its command line through ``sh``,
    the virtualenv first on ``PATH``."""
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return Service(
        name, ["sh", "-c", procfile_command(name)], {**env, "PATH": path}, folder / f"{name}.log"
    )


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "blogviews"


def _inherited_env() -> dict[str, str]:
    """This process's environment without what configures the Django or test run here."""
    dropped = {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTEST_CURRENT_TEST"}
    return {name: value for name, value in os.environ.items() if name not in dropped}
