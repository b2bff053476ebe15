"""Helpers for tests: the project's own processes (Celery worker, beat, commands) and the
schema moved to an earlier or later migration."""

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor


def child_database_url() -> str:
    """The test database as a ``DATABASE_URL``, so that a child never touches the real one."""
    db = connections["default"].settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def migrate_to(app: str, migration: str | None = None) -> None:
    """Migrate the test database's ``app`` forwards or backwards to ``migration`` (default:
    its latest, as the other tests expect the schema)."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    if migration is None:
        (target,) = executor.loader.graph.leaf_nodes(app)
    else:
        target = (app, migration)
    executor.migrate([target])


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
    # In random order: a stack picks all its ports before its servers bind them, and the
    # lowest free one each time would be the same port twice.
    candidates = list(range(int(low), int(high or low) + 1)) if low else [0]
    random.shuffle(candidates)
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
    # Its metrics files beside its log, in the test's own folder, whatever way it ends.
    metrics = env.get("PROMETHEUS_MULTIPROC_DIR") or str(log.parent / f"metrics-{port}")
    env = {**env, "PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": metrics}
    with project_process(args, log=log, env=env) as process:
        started = wait_until(
            lambda: process.poll() is not None or http_get(f"{base}/healthz", timeout=2) == 200,
            seconds=start_seconds,
        )
        if not started or process.poll() is not None:
            raise RuntimeError(f"gunicorn did not start:\n{log.read_text(errors='replace')}")
        yield base


def procfile_command(name: str) -> str:
    """The shell command of the Procfile's process ``name``."""
    for line in (Path(settings.BASE_DIR) / "Procfile").read_text().splitlines():
        process, sep, command = line.partition(":")
        if sep and not line.startswith("#") and process.strip() == name:
            return command.strip()
    raise KeyError(f"no process {name!r} in the Procfile")


@contextmanager
def procfile_process(
    name: str, *, log: Path, env: dict[str, str], stop_seconds: float = 15.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run the Procfile's ``name`` as a deployment does: its command line through ``sh``, with
    this interpreter's virtualenv first on ``PATH``. Its whole process group is stopped
    afterwards (SIGTERM, then SIGKILL), the shell and whatever it started."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**env, "PATH": os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])}
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["sh", "-c", procfile_command(name)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _stop_group(process, stop_seconds=stop_seconds)


def _stop_group(process: subprocess.Popen[bytes], *, stop_seconds: float) -> None:
    """SIGTERM to the process group led by ``process``; SIGKILL to what is left after
    ``stop_seconds``."""

    def alive() -> bool:
        process.poll()  # reaps the leader: a zombie still counts as a member of its group
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    if alive():
        os.killpg(process.pid, signal.SIGTERM)
        if not wait_until(lambda: not alive(), seconds=stop_seconds, interval=0.1):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def process_start(
    command: Sequence[str], *, log: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a process group of its own, output appended to ``log``; stop it
    with ``process_stop`` or crash it with ``process_kill``, which reach the children it forks
    too (gunicorn workers, Celery's pool), so that none outlives a test."""
    with log.open("ab") as output:
        return subprocess.Popen(
            list(command),
            cwd=cwd or settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def process_stop(process: subprocess.Popen[bytes], *, stop_seconds: float = 15.0) -> None:
    """SIGTERM to the process group of ``process``; SIGKILL to what is left after a while."""
    _stop_group(process, stop_seconds=stop_seconds)


def process_kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of ``process`` at once, as a crash or the OOM killer would."""
    with suppress(ProcessLookupError):  # the group is gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class RedisServer:
    """A private ``redis-server`` on a free loopback port, for outage tests: ``stop()`` takes it
    away, ``start()`` brings it back on the same port (empty: nothing is saved)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Each run logs to its own file: a Redis started again must not truncate the first log.
        log = self.folder / f"redis-{time.monotonic_ns()}.log"
        with log.open("wb") as output:
            self._process = subprocess.Popen(
                [
                    *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        if not wait_until(self._answers, seconds=30):
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not start: {log}")

    def stop(self) -> None:
        """Shut it down (SIGTERM: clients see their connections closed) and wait until it has."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(7) == b"+PONG\r\n"
        except OSError:
            return False


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped afterwards whatever happened."""
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_bin_dir() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl), if the machine has them."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


class PostgresCluster:
    """A private PostgreSQL cluster (``initdb``) on a free loopback port, for outage tests:
    ``stop()`` shuts it down, ``start()`` brings it back on the same port with its data.

    The server refuses to run as root: as root, the cluster belongs to the ``postgres`` user
    and lives in a folder of its own under the system's temporary folder.
    """

    def __init__(self) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's server programs (pg_ctl, initdb) are not installed")
        self.bin_dir = bin_dir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="blogviews-pg-"))
        self.data = self.folder / "data"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            account = pwd.getpwnam(self._user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def init_replica_of(self, primary: "PostgresCluster") -> None:
        """Make this cluster a streaming replica (hot standby) of ``primary``: a base backup
        with ``-R`` (standby.signal, and primary_conninfo pointing at ``primary``). initdb's
        pg_hba.conf already lets local replication connections in."""
        self._run(
            "pg_basebackup",
            *("-D", str(self.data), "-h", "127.0.0.1", "-p", str(primary.port)),
            *("-U", "postgres", "-X", "stream", "-R", "--no-sync"),
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: every client connection is cut, as when the server restarts."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / program), *args],
            user=self._user,
            cwd=self.folder,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started :class:`PostgresCluster`, removed afterwards whatever happened."""
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@contextmanager
def postgres_replica(primary: PostgresCluster) -> Iterator[PostgresCluster]:
    """A started streaming replica of ``primary`` (its own cluster, read only), removed
    afterwards whatever happened."""
    replica = PostgresCluster()
    try:
        replica.init_replica_of(primary)
        replica.start()
        yield replica
    finally:
        replica.remove()
