"""Gunicorn settings for the ``web`` process (Procfile, Dockerfile, docker-compose.yml).

Read from the environment: ``HOST`` (default 127.0.0.1: this machine only; the Dockerfile sets
0.0.0.0), ``PORT`` (default 8000), ``WEB_CONCURRENCY`` (worker processes; default 2 x cores + 1,
at most 8), ``GUNICORN_THREADS`` (threads per worker, default 8), ``GUNICORN_TIMEOUT``
(seconds, default 30) and ``LOG_LEVEL``.

Sizing. Workers are gthread workers: each process serves ``GUNICORN_THREADS`` requests at once,
so the server serves workers x threads requests at once (40 on 2 cores, at most 64) and a
client that sends its body slowly holds one thread, not a whole process. Each worker accepts a
connection only while it has a free thread for it (``core.web_worker``), so a connection is
never queued behind slow clients in a busy worker while another worker has a free thread; and
it keeps up to ``threads`` connections alive for 5 s (``keepalive``) between requests,
which do not count against that (a kept-alive cached read costs about half of one that opens a
connection: the README's "Measured"). With fewer slow clients than workers x threads,
``/healthz`` and every other request still answer at once; against more (a deliberate attack),
put a buffering proxy (nginx) in front. Every thread keeps its own database connection for
``CONN_MAX_AGE`` seconds: workers x threads connections per web process on PostgreSQL (mind
``max_connections``); on SQLite, threads read in parallel (WAL) and writers queue.
"""

import os
import shutil
import tempfile
from typing import Any


def _cores() -> int:
    """CPUs this process may run on (honours CPU affinity / cpusets, e.g. in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _workers() -> int:
    configured = os.environ.get("WEB_CONCURRENCY", "").strip()
    if configured:
        return max(1, int(configured))
    # 2 x cores + 1 is gunicorn's rule of thumb; the cap (with the threads) keeps a big machine
    # from opening more database connections than a default PostgreSQL allows.
    return min(2 * _cores() + 1, 8)


def _threads() -> int:
    configured = os.environ.get("GUNICORN_THREADS", "").strip()
    return max(1, int(configured)) if configured else 8


# 127.0.0.1 unless told otherwise: `make run` serves a demo superuser and public reads, which
# must not reach the network by default. Containers set HOST=0.0.0.0 (Dockerfile).
bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
workers = _workers()
# gthread, accepting a connection only when it has a free thread for it (see the sizing above).
worker_class = "core.web_worker.KeepAliveThreadWorker"
threads = _threads()
# gthread keeps worker_connections - threads connections alive: one per thread.
worker_connections = 2 * threads
keepalive = 5

# A worker whose main loop is silent this long is restarted; on SIGTERM / SIGINT workers get
# graceful_timeout seconds to finish the requests they are serving.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30

# Recycle workers now and then so that a slow leak cannot grow without bound.
max_requests = 2000
max_requests_jitter = 200

# Logs go to the terminal / container log: access log on stdout, errors on stderr.
# With LOG_FORMAT=json the application logs each request as a JSON line with its request id
# (LOG_REQUESTS), so gunicorn's plain-text access log is off; its error log stays.
accesslog = None if os.environ.get("LOG_FORMAT", "text").lower() == "json" else "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" %({x-request-id}o)s'

# The worker heartbeat file: tmpfs when there is one (a disk-backed /tmp can stall heartbeats).
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# No runtime control socket (gunicornc): its default path under $HOME is shared by every gunicorn
# of the same user, and a container user may have no writable home.
control_socket_disable = True


# Prometheus multiprocess mode (core.metrics): each worker counts in its own file in
# PROMETHEUS_MULTIPROC_DIR and /metrics sums them. Unset, this server gets a fresh folder of its
# own (a per-process count would make each scrape show whichever worker answered it).
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="blogviews-metrics-")


def on_starting(server: object) -> None:
    """A deployment starts: the files of processes that no longer run leave the folder."""
    from core.metrics import metrics_dir_prune

    metrics_dir_prune()


def child_exit(server: object, worker: Any) -> None:
    """A worker ended (recycled, crashed): its live gauges go, its counts stay in the sums."""
    from core.metrics import metrics_process_dead

    metrics_process_dead(worker.pid)


def on_exit(server: object) -> None:
    """The server stops: a metrics folder it made for itself goes with it."""
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
