"""The real processes: gunicorn's workers and a Celery worker count into one multiprocess folder
and /metrics sums them; a request's id reaches the JSON log lines of the task it started."""

import json
import os
import re
import shutil
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from core.metrics import metrics_dir_prune
from core.testing import child_env, procfile_process, redis_server, wait_until, web_server

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scraper-token-for-process-tests"


def _get(url: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read(), dict(response.headers)


def _post(url: str, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _value(text: str, sample: str) -> float:
    """The value of one sample line (``name{labels}``) of a scrape, 0 when absent."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL")) and shutil.which("redis-server") is None,
    reason="needs the redis-server program for a private broker",
)
def test_processes_add_up_and_the_request_id_reaches_the_task(
    tmp_path: Path, django_user_model: Any, password: str
) -> None:
    staff = django_user_model.objects.create_user(username="ops", password=password, is_staff=True)
    # Issued here: the child processes hash passwords with the production hasher, not the
    # tests' fast one, so a sign-in over HTTP would not verify.
    access = str(RefreshToken.for_user(staff).access_token)
    folder = tmp_path / "metrics"
    folder.mkdir()
    # A file left by a process of an earlier start (no such pid runs): pruned at start.
    stale = folder / "counter_999999999.db"
    stale.write_bytes(b"")
    with ExitStack() as stack:
        extra = {
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
            "METRICS_TOKEN": TOKEN,
            "LOG_FORMAT": "json",
            "WEB_CONCURRENCY": "2",
            "GUNICORN_THREADS": "2",
        }
        if os.environ.get("REDIS_URL"):
            extra["REDIS_URL"] = stack.enter_context(redis_server(tmp_path)).url
        else:
            extra["CELERY_FILESYSTEM_DIR"] = str(tmp_path / "celery")
        env = child_env(**extra)
        base = stack.enter_context(web_server(log=tmp_path / "web.log", env=env))
        assert not stale.exists()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        healthz = 'blogviews_http_requests_total{endpoint="healthz",method="GET",status="200"}'
        before = _value(_get(f"{base}/metrics", **auth)[1].decode(), healthz)

        for _ in range(12):
            assert _get(f"{base}/healthz")[0] == 200

        text = _get(f"{base}/metrics", **auth)[1].decode()
        assert _value(text, healthz) == before + 12
        assert len({path.stem.rpartition("_")[2] for path in folder.glob("counter_*.db")}) >= 2

        # A rebuild request starts a task; the worker (its own process) runs it.
        worker = stack.enter_context(
            procfile_process("worker", log=tmp_path / "worker.log", env=env)
        )
        status, job = _post(
            f"{base}/api/rollups/rebuild/",
            {"start_date": "2024-01-01", "end_date": "2024-01-31"},
            Authorization=f"Bearer {access}",
            **{"X-Request-ID": "req-process-test"},
        )
        assert status == 202

        def job_done() -> bool:
            _, body, _ = _get(
                f"{base}/api/rollups/jobs/{job['job_id']}/",
                Authorization=f"Bearer {access}",
            )
            return json.loads(body)["state"] == "done"

        logs = lambda: (tmp_path / "worker.log").read_text(errors="replace")  # noqa: E731
        assert wait_until(job_done, seconds=60), logs()
        text = _get(f"{base}/metrics", **auth)[1].decode()
        # The worker's absorb (a rebuild absorbs first) is in the web process's scrape.
        assert _value(text, "blogviews_absorb_runs_total") >= 1, text
        assert worker.poll() is None

    web_lines = _json_lines(tmp_path / "web.log")
    (request_line,) = [
        line
        for line in web_lines
        if line.get("logger") == "core.requests" and line.get("path") == "/api/rollups/rebuild/"
    ]
    assert request_line["request_id"] == "req-process-test"
    assert request_line["status"] == 202
    absorb_lines = [
        line for line in _json_lines(tmp_path / "worker.log") if line["logger"] == "rollups.absorb"
    ]
    assert absorb_lines, logs()
    assert absorb_lines[0]["request_id"] == "req-process-test"
    assert absorb_lines[0]["task"].startswith("rollups.rebuild_job[")
    assert {"views", "groups", "duration_ms", "lag_seconds"} <= set(absorb_lines[0])


def test_pruning_keeps_the_files_of_running_processes(tmp_path: Path) -> None:
    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / "histogram_999999999.db").write_bytes(b"")

    assert metrics_dir_prune(tmp_path) == 1
    assert [path.name for path in tmp_path.iterdir()] == [f"counter_{os.getpid()}.db"]
