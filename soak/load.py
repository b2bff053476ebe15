"""A bounded mixed load on a running stack: concurrent clients ingesting and reading over HTTP.

Each client is a thread with its own ``requests`` session and its own seeded random stream. An
ingest client sends a batch with an ``Idempotency-Key`` (API.md section 3) and retries it, with
the same key and body, as a client does when it did not get the answer: after a connection
error, a 5xx or a 409 (the same key still in flight), and, on purpose, now and then after a
202 (the answer "lost" on the way back). Readers ask the analytics endpoints with varied
filters, half of them past the cache (``Cache-Control: no-cache``).

The tally says which views the service acknowledged: a batch counts once, when any attempt of
its key got a 202. Replays of an acknowledged key store nothing only where idempotency keys
are honoured; ``Tally.views_replayed`` says how many views such replays carried.
"""

import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests

from api.tests.conftest import ENDPOINTS
from soak.stack import Stack

COUNTRIES = ["US", "DE", "ET", "IN", "ZZ", "BR", "JP", "FR", "us", "gb"]
READS = ENDPOINTS
INGEST = "/api/ingest/views/"
ATTEMPTS = 8


@dataclass
class Tally:
    """What the clients sent and what they were answered (thread-safe)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    transport_errors: Counter[str] = field(default_factory=Counter)
    # Idempotency key -> views in its batch, for the keys answered 202 at least once.
    acknowledged: dict[str, int] = field(default_factory=dict)
    # Views carried by 202 answers to a key already acknowledged (replays, retries).
    views_replayed: int = 0
    # Views of batches re-sent after an answer that never came (stored or not, nobody knows).
    views_uncertain: int = 0
    server_errors: list[str] = field(default_factory=list)

    def answered(self, endpoint: str, response: requests.Response, seconds: float) -> None:
        with self.lock:
            self.statuses[(endpoint, response.status_code)] += 1
            self.latencies.setdefault(endpoint, []).append(seconds)
            if response.status_code >= 500:
                self.server_errors.append(
                    f"{response.request.method} {endpoint} -> {response.status_code}: "
                    f"{response.text[:500]} (body sent: {str(response.request.body)[:300]})"
                )

    def failed(self, endpoint: str, error: Exception) -> None:
        with self.lock:
            self.transport_errors[f"{endpoint}: {type(error).__name__}"] += 1

    def acknowledge(self, key: str, views: int) -> None:
        with self.lock:
            if key in self.acknowledged:
                self.views_replayed += views
            else:
                self.acknowledged[key] = views

    @property
    def views_acknowledged(self) -> int:
        return sum(self.acknowledged.values())

    @property
    def server_error_count(self) -> int:
        return sum(count for (_, status), count in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        lines = ["endpoint                                  requests  p50 ms  p95 ms  statuses"]
        for endpoint in sorted(self.latencies):
            seconds = sorted(self.latencies[endpoint])
            p50 = statistics.median(seconds) * 1000
            p95 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.95))] * 1000
            statuses = {
                status: count for (name, status), count in self.statuses.items() if name == endpoint
            }
            lines.append(
                f"{endpoint:<40} {len(seconds):>9} {p50:>7.0f} {p95:>7.0f}  "
                f"{dict(sorted(statuses.items()))}"
            )
        lines.append(
            f"views acknowledged (each key once): {self.views_acknowledged}; "
            f"carried again by replays answered 202: {self.views_replayed}; "
            f"re-sent after a lost answer: {self.views_uncertain}"
        )
        if self.transport_errors:
            lines.append(f"transport errors: {dict(self.transport_errors)}")
        return "\n".join(lines)


class Client(threading.Thread):
    """One client: ingest batches and reads, in the proportions asked, until told to stop."""

    def __init__(
        self,
        *,
        stack: Stack,
        number: int,
        tally: Tally,
        stop: threading.Event,
        running: threading.Event,
        ingest_share: float,
        lost_answer_share: float,
        seed: int,
    ) -> None:
        super().__init__(name=f"soak-client-{number}", daemon=True)
        self.api = stack.api()
        self.blog_ids = stack.blog_ids
        self.number = number
        self.tally = tally
        self.stop = stop
        self.running = running
        self.ingest_share = ingest_share
        self.lost_answer_share = lost_answer_share
        self.rng = random.Random(seed * 1000 + number)
        self.batches = 0
        self.idle = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.running.is_set():
                # Paused: say so (between requests, none in flight), and wait.
                self.idle.set()
                self.running.wait(timeout=0.1)
                continue
            self.idle.clear()
            if self.rng.random() < self.ingest_share:
                self.ingest()
            else:
                self.read()
        self.idle.set()

    def _call(
        self, endpoint: str, body: object, *, no_cache: bool = False, headers: dict[str, str]
    ) -> requests.Response | None:
        started = time.monotonic()
        try:
            response = self.api.post(endpoint, body, no_cache=no_cache, headers=headers)
        except requests.RequestException as error:
            self.tally.failed(endpoint, error)
            return None
        self.tally.answered(endpoint, response, time.monotonic() - started)
        return response

    def ingest(self) -> None:
        self.batches += 1
        key = f"soak-{self.number}-{self.batches}-{self.rng.getrandbits(64):016x}"
        now = datetime.now(UTC)
        views = []
        for _ in range(self.rng.randint(1, 200)):
            view: dict[str, object] = {
                "blog_id": self.rng.choice(self.blog_ids),
                "country_code": self.rng.choice(COUNTRIES),
            }
            if self.rng.random() < 0.8:  # late and backfilled views too, not only "now"
                ago = timedelta(seconds=self.rng.randrange(400 * 86400))
                view["viewed_at"] = (now - ago).isoformat()
            views.append(view)
        body = {"views": views}
        replays = 1 if self.rng.random() < self.lost_answer_share else 0
        attempts = 0
        while attempts < ATTEMPTS:
            attempts += 1
            response = self._call(INGEST, body, headers={"Idempotency-Key": key})
            if response is None or response.status_code >= 500:
                # No answer, or a failure: the client cannot know whether the views were stored.
                with self.tally.lock:
                    self.tally.views_uncertain += len(views)
            elif response.status_code == 202:
                assert response.json() == {"accepted": len(views)}, response.text
                self.tally.acknowledge(key, len(views))
                if replays == 0:
                    return
                # As if this answer had been lost: the client sends the same request again.
                replays -= 1
                continue
            elif response.status_code != 409:  # 409: the same key still in flight; retry
                return
            time.sleep(min(2.0, 0.1 * 2**attempts))

    def read(self) -> None:
        endpoint = self.rng.choice(READS)
        body: dict[str, object] = {}
        choice = self.rng.random()
        if choice < 0.3:
            body["year"] = self.rng.choice([2025, 2026])
        elif choice < 0.6:
            start = datetime.now(UTC).date() - timedelta(days=self.rng.randrange(400))
            body["start_date"] = start.isoformat()
            body["end_date"] = (start + timedelta(days=self.rng.randrange(60))).isoformat()
        if self.rng.random() < 0.3:
            body["country_codes"] = self.rng.sample(COUNTRIES[:8], self.rng.randint(1, 3))
        elif self.rng.random() < 0.2:
            body["exclude_country_codes"] = [self.rng.choice(COUNTRIES[:8])]
        if endpoint == "/api/analytics/performance/" and self.rng.random() < 0.5:
            body["compare_period"] = self.rng.choice(["week", "month"])
        self._call(endpoint, body, no_cache=self.rng.random() < 0.5, headers={})


class Load:
    """``clients`` clients running in the background; ``pause()`` holds them between requests
    (for an exact read while nothing is in flight), ``finish()`` stops them."""

    def __init__(
        self,
        stack: Stack,
        *,
        clients: int,
        ingest_share: float = 0.4,
        lost_answer_share: float = 0.0,
        seed: int = 1,
    ) -> None:
        self.tally = Tally()
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.clients = [
            Client(
                stack=stack,
                number=number,
                tally=self.tally,
                stop=self.stop,
                running=self.running,
                ingest_share=ingest_share,
                lost_answer_share=lost_answer_share,
                seed=seed,
            )
            for number in range(clients)
        ]

    def __enter__(self) -> "Load":
        for client in self.clients:
            client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def pause(self) -> None:
        self.running.clear()
        for client in self.clients:
            client.idle.wait(timeout=120)

    def resume(self) -> None:
        self.running.set()

    def finish(self) -> Tally:
        self.stop.set()
        self.running.set()
        for client in self.clients:
            client.join(timeout=120)
        return self.tally
