"""The HTTP half of ``scripts/smoke``: talk to the running web, worker and beat like a client.

Waits for ``/readyz``, signs in, ingests one batch of views on a day the seeded data never
touches, waits until ``/api/rollups/status/`` shows the batch absorbed, then checks that a read
counts exactly that batch, and that ``/metrics`` sums what web and worker counted. Standard
library only: it runs in the runtime-only virtualenv.
Environment: ``SMOKE_URL``, ``SMOKE_USERNAME``, ``SMOKE_PASSWORD``, ``SMOKE_SECONDS`` and
``SMOKE_HONCHO_PID`` (to give up at once if the processes have exited).
"""

import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

BASE_URL = os.environ["SMOKE_URL"]
DEADLINE = time.monotonic() + float(os.environ["SMOKE_SECONDS"])
HONCHO_PID = int(os.environ["SMOKE_HONCHO_PID"])
BATCH = 1_000
DAY = "2001-02-03"
COUNTRIES = ["US", "DE", "ET", "IN", "ZZ"]


def fail(message: str) -> None:
    print(f"smoke: {message}", file=sys.stderr)
    sys.exit(1)


def request(
    method: str, path: str, *, body: object = None, token: str | None = None
) -> tuple[int, Any]:
    """One request; the status and the decoded JSON answer (``None`` when there is none)."""
    headers = {"Content-Type": "application/json", "Cache-Control": "no-cache"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    prepared = urllib.request.Request(BASE_URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(prepared, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def expect(
    status_wanted: int, method: str, path: str, *, body: object = None, token: str | None = None
) -> Any:
    status, answer = request(method, path, body=body, token=token)
    if status != status_wanted:
        fail(f"{method} {path} answered {status}, not {status_wanted}: {answer}")
    return answer


def processes_alive() -> bool:
    try:
        os.kill(HONCHO_PID, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(what: str, condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds; fail at the deadline or when honcho has exited."""
    while not condition():
        if not processes_alive():
            fail(f"the processes exited while waiting for {what}")
        if time.monotonic() > DEADLINE:
            fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def ready() -> bool:
    try:
        status, _ = request("GET", "/readyz")
    except OSError:
        return False
    return status == 200


def main() -> None:
    wait_for("/readyz to answer 200", ready)
    print("smoke: web is ready")
    tokens = expect(
        200,
        "POST",
        "/api/token/",
        body={"username": os.environ["SMOKE_USERNAME"], "password": os.environ["SMOKE_PASSWORD"]},
    )
    token = tokens["access"]

    def status() -> Any:
        return expect(200, "GET", "/api/rollups/status/", token=token)

    wait_for("the seeded views to be absorbed", lambda: status()["pending_views"] == 0)
    absorbed_before = status()["absorbed_through_id"]
    top = expect(200, "POST", "/api/analytics/top/blog/", body={"limit": 100}, token=token)
    blog_ids = sorted(row["blog_id"] for row in top["results"])
    if not blog_ids:
        fail("the seeded data has no blog with views")

    rng = random.Random(1)
    views = [
        {
            "blog_id": rng.choice(blog_ids),
            "country_code": rng.choice(COUNTRIES),
            "viewed_at": f"{DAY}T{rng.randrange(24):02}:{rng.randrange(60):02}:00Z",
        }
        for _ in range(BATCH)
    ]
    accepted = expect(202, "POST", "/api/ingest/views/", body={"views": views}, token=token)
    if accepted != {"accepted": BATCH}:
        fail(f"ingest answered {accepted}")
    print(f"smoke: ingested {BATCH} views; waiting for beat and the worker to absorb them")

    def absorbed() -> bool:
        now = status()
        # Every id of the batch is above absorbed_before and the ids are distinct.
        return now["pending_views"] == 0 and now["absorbed_through_id"] >= absorbed_before + BATCH

    wait_for("the batch to be absorbed", absorbed)
    print(f"smoke: absorbed: {status()}")

    expected = Counter(view["country_code"] for view in views)
    answer = expect(
        200,
        "POST",
        "/api/analytics/blog-views/country/",
        body={"start_date": DAY, "end_date": DAY},
        token=token,
    )
    counted = {row["country_code"]: row["views"] for row in answer["results"]}
    if counted != dict(expected):
        fail(f"a read of {DAY} counts {counted}, not the {dict(expected)} ingested")
    print(f"smoke: a read of {DAY} counts the batch exactly: {counted}")

    # Web, worker and beat share one metrics folder (PROMETHEUS_MULTIPROC_DIR): the web's
    # scrape holds the worker's absorb runs beside its own ingest count. A run counts itself
    # once it ends, which may be a little after its views show as absorbed (the beat's run
    # waits to take one more bound, see rollups.absorb.TRAIL_SHARE): poll until it has.
    scrape = urllib.request.Request(
        BASE_URL + "/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    samples: dict[str, float] = {}
    metrics = ""

    def absorb_counted() -> bool:
        nonlocal metrics
        with urllib.request.urlopen(scrape, timeout=30) as response:
            metrics = response.read().decode()
        samples.clear()
        samples.update(
            (line.rpartition(" ")[0], float(line.rpartition(" ")[2]))
            for line in metrics.splitlines()
            if line and not line.startswith("#")
        )
        return samples.get("blogviews_absorb_runs_total", 0) >= 1

    wait_for("/metrics to count the worker's absorb run", absorb_counted)
    if samples.get('blogviews_ingest_views_total{outcome="accepted"}', 0) < BATCH:
        fail(f"/metrics does not count the {BATCH} views ingested:\n{metrics}")
    if samples.get("blogviews_absorb_stale") != 0:
        fail(f"/metrics says absorb is stale:\n{metrics}")
    print(f"smoke: /metrics: {samples['blogviews_absorb_runs_total']:g} absorb runs")


if __name__ == "__main__":
    main()
