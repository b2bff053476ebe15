"""Prometheus metrics: what every process counts, and what ``/metrics`` reads from the database.

Two kinds of figures:

- **Counters and histograms** (requests, cache results, ingest batches, absorb runs, task
  failures) are counted by the process where the thing happens. With ``PROMETHEUS_MULTIPROC_DIR``
  set (gunicorn, Celery, ``make run``), each process writes its own memory-mapped file there and
  a scrape sums them (prometheus-client's multiprocess mode), so gunicorn's workers and the
  Celery pool add up. Without it (tests, ``manage.py runserver``) they live in this process.
- **Gauges of shared state** (pending views, lag, the last absorb run, rebuild jobs by state,
  the last drift audit) are read from the database at scrape time (``RollupsCollector``): the
  database is the one place every process agrees on, so no process has to publish them.

The multiprocess folder must start empty for each deployment start: ``scripts/run`` empties it,
and gunicorn and the Celery worker remove the files of processes that no longer run when they
start (``metrics_dir_prune``), so a restart does not add the previous run's counts.
"""

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # The metrics below open their files there as they are created (at import).
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)
# Latency buckets in seconds: reads answer in milliseconds, a big ingest batch in a second or so.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ABSORB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

HTTP_REQUESTS = Counter(
    "blogviews_http_requests",
    "HTTP requests answered, by endpoint (URL name), method and status.",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "blogviews_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint (URL name) and method.",
    ["endpoint", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_THROTTLED = Counter(
    "blogviews_http_throttled",
    "Requests refused with 429 (read rate limits, sign-in throttle), by endpoint.",
    ["endpoint"],
)
ANALYTICS_CACHE = Counter(
    "blogviews_analytics_cache",
    "Analytics answers by cache result: hit, miss (computed), bypass (Cache-Control: no-cache).",
    ["result"],
)
ANALYTICS_READS = Counter(
    "blogviews_analytics_reads",
    "Analytics answers computed, by where they were read, with a read replica configured: "
    "replica, primary (Cache-Control: no-cache), primary_replica_lag (the replica was more "
    "than DATABASE_REPLICA_MAX_LAG_SECONDS behind), primary_replica_down.",
    ["source"],
)
FAIL_OPEN = Counter(
    "blogviews_fail_open",
    "Times a failing dependency was skipped and the request went on: analytics_cache_read, "
    "analytics_cache_write, read_throttle, login_throttle.",
    ["component"],
)
INGEST_BATCHES = Counter(
    "blogviews_ingest_batches",
    "Ingest requests by outcome: accepted (stored), refused (4xx, nothing stored), replayed "
    "(an Idempotency-Key's first answer again, nothing stored).",
    ["outcome"],
)
INGEST_VIEWS = Counter(
    "blogviews_ingest_views",
    "Views in ingest requests by outcome: accepted (stored) or refused (in a refused batch).",
    ["outcome"],
)
ABSORB_RUNS = Counter("blogviews_absorb_runs", "Absorb runs that finished.")
ABSORB_DURATION = Histogram(
    "blogviews_absorb_duration_seconds",
    "Duration of a finished absorb run.",
    buckets=ABSORB_BUCKETS,
)
ABSORB_VIEWS = Counter("blogviews_absorb_views", "Raw views absorbed into the summaries.")
ABSORB_TRIGGERS = Counter(
    "blogviews_absorb_triggers",
    "Absorb runs that ingest sent because the pending views passed a threshold, by kind: "
    "summaries (ABSORB_TRIGGER_PENDING) or recent (the per-minute levels, "
    "RECENT_TRIGGER_PENDING).",
    ["kind"],
)
TASK_FAILURES = Counter(
    "blogviews_task_failures", "Celery tasks that ended with an error, by task name.", ["task"]
)
TASK_RETRIES = Counter(
    "blogviews_task_retries", "Celery tasks that were retried, by task name.", ["task"]
)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class RollupsCollector(Collector):
    """The rollups' state, read from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        from django.db.models import Count

        from rollups.audit import audit_latest
        from rollups.liveness import absorb_liveness
        from rollups.models import RebuildJob
        from rollups.selectors import recent_status, rollups_status

        try:
            status = rollups_status()
            recent = recent_status()
            liveness = absorb_liveness()
            jobs = dict.fromkeys(RebuildJob.State.values, 0)
            counted = RebuildJob.objects.values_list("state").annotate(jobs=Count("id"))
            jobs.update({state: count for state, count in counted})
            audit = audit_latest()
        except Exception:
            # The scrape still answers (with the process counters), saying the database did not.
            logger.warning("metrics: the rollups' state could not be read", exc_info=True)
            yield _gauge("blogviews_metrics_database_up", "1 when the database answered.", 0)
            return
        yield _gauge("blogviews_metrics_database_up", "1 when the database answered.", 1)
        yield _gauge(
            "blogviews_rollups_pending_views",
            "Raw views not yet absorbed into the summaries.",
            status.pending_views,
        )
        yield _gauge(
            "blogviews_rollups_lag_seconds",
            "0 when nothing is pending, else seconds since the last absorb bound.",
            status.lag_seconds,
        )
        last_run = liveness.last_run_at.timestamp() if liveness.last_run_at else 0
        yield _gauge(
            "blogviews_absorb_last_success_timestamp_seconds",
            "Unix time the last absorb run finished (0: never).",
            last_run,
        )
        yield _gauge(
            "blogviews_absorb_stale",
            "1 when no absorb run finished within three ROLLUP_INTERVAL_SECONDS (beat or every "
            "worker is gone).",
            0 if liveness.alive else 1,
        )
        yield _gauge(
            "blogviews_recent_absorb_last_success_timestamp_seconds",
            "Unix time the last absorb run of the per-minute (realtime) rows finished (0: never).",
            recent.last_run_at.timestamp() if recent.last_run_at else 0,
        )
        yield _gauge(
            "blogviews_recent_pending_ids",
            "Raw view ids above the per-minute (realtime) rows' own watermark.",
            recent.pending_ids,
        )
        family = GaugeMetricFamily(
            "blogviews_rebuild_jobs", "Rebuild jobs by state.", labels=["state"]
        )
        for state, count in sorted(jobs.items()):
            family.add_metric([state], count)
        yield family
        yield _gauge(
            "blogviews_rollups_drift_groups",
            "Summary groups that differed from the raw views in the last drift audit.",
            audit.drift_groups if audit else 0,
        )
        yield _gauge(
            "blogviews_rollups_audit_last_timestamp_seconds",
            "Unix time the last drift audit finished (0: never).",
            audit.finished_at.timestamp() if audit else 0,
        )


def metrics_multiproc_dir() -> Path | None:
    """The multiprocess folder, when this process counts in one."""
    value = os.environ.get(MULTIPROC_ENV, "")
    return Path(value) if value else None


def process_registry() -> CollectorRegistry:
    """The counters and histograms of every process (multiprocess) or of this one."""
    folder = metrics_multiproc_dir()
    if folder is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    return registry


def metrics_text(*, with_database: bool = True) -> bytes:
    """The Prometheus text exposition: every process's counters, then the database's gauges."""
    text = generate_latest(process_registry())
    if with_database:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RollupsCollector())
        text += generate_latest(registry)
    return text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metrics_dir_prune(folder: Path | None = None) -> int:
    """Remove the files of processes that no longer run from the multiprocess folder (created
    if missing); return how many. Called when gunicorn and the Celery worker start: the
    previous deployment's counts go, those of the processes started beside them stay."""
    folder = folder or metrics_multiproc_dir()
    if folder is None:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    removed = 0
    for path in folder.glob("*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def metrics_process_dead(pid: int) -> None:
    """A process of this deployment ended: drop its live gauges (its counters are kept)."""
    folder = metrics_multiproc_dir()
    if folder is not None:
        multiprocess.mark_process_dead(pid, path=str(folder))
