"""Gunicorn settings for the ``web`` process (Procfile, Dockerfile, docker-compose.yml).

Read from the environment: ``PORT`` (default 8000), ``WEB_CONCURRENCY`` (worker processes; default
2 x cores + 1, at most 8), ``GUNICORN_TIMEOUT`` (seconds, default 30; longer than
``ANALYTICS_STATEMENT_TIMEOUT_MS``) and ``LOG_LEVEL``.
"""

import os


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
    # Sync workers: 2 x cores + 1 is gunicorn's rule of thumb; the cap keeps a big machine from
    # opening more database connections than a default PostgreSQL allows.
    return min(2 * _cores() + 1, 8)


bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
workers = _workers()
worker_class = "sync"

# A request silent this long gets its worker restarted; on SIGTERM / SIGINT workers get
# graceful_timeout seconds to finish the requests they are serving.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# An analytics read query longer than ANALYTICS_STATEMENT_TIMEOUT_MS (core/settings.py, same
# default) is stopped and answered with a 503; a worker killed first would answer nothing.
statement_timeout_ms = int(os.environ.get("ANALYTICS_STATEMENT_TIMEOUT_MS", "5000"))
if timeout * 1000 <= statement_timeout_ms:
    raise RuntimeError(
        f"GUNICORN_TIMEOUT ({timeout} s) must be longer than ANALYTICS_STATEMENT_TIMEOUT_MS "
        f"({statement_timeout_ms} ms)."
    )
graceful_timeout = 30
keepalive = 5

# Recycle workers now and then so that a slow leak cannot grow without bound.
max_requests = 2000
max_requests_jitter = 200

# Logs go to the terminal / container log: access log on stdout, errors on stderr.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# The worker heartbeat file: tmpfs when there is one (a disk-backed /tmp can stall heartbeats).
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# No runtime control socket (gunicornc): its default path under $HOME is shared by every gunicorn
# of the same user, and a container user may have no writable home.
control_socket_disable = True
