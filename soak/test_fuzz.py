"""Schemathesis, the CLI as a user runs it, against the running server: every operation of
``/api/schema/`` (analytics, ingest, the staff rollup endpoints, health, tokens), signed in as
staff, with the checks and generation settings of ``schemathesis.toml`` (deterministic, seeded,
a bounded number of cases per operation).

One run for the module; then one test per operation, so that each operation's failures (with
schemathesis' curl reproduction, and the server's traceback in the attached logs) show on their
own and a known one does not hide the others.
"""

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from soak.stack import Stack

# The module's first test also waits for the whole run.
pytestmark = [pytest.mark.soak, pytest.mark.timeout(600)]

CONFIG = Path(settings.BASE_DIR) / "schemathesis.toml"
RUN_SECONDS = 480
# Every operation the schema documents (test_every_operation_is_fuzzed keeps this list true).
OPERATIONS = [
    "GET /healthz",
    "GET /readyz",
    "POST /api/token/",
    "POST /api/token/refresh/",
    "POST /api/ingest/views/",
    "POST /api/rollups/rebuild/",
    "GET /api/rollups/jobs/{job_id}/",
    "GET /api/rollups/status/",
    "GET /api/analytics/",
    "POST /api/analytics/blog-views/country/",
    "POST /api/analytics/blog-views/user/",
    "POST /api/analytics/top/blog/",
    "POST /api/analytics/top/user/",
    "POST /api/analytics/top/country/",
    "POST /api/analytics/performance/",
    "GET /api/analytics/blog-views/country/",
    "GET /api/analytics/blog-views/user/",
    "GET /api/analytics/top/blog/",
    "GET /api/analytics/top/user/",
    "GET /api/analytics/top/country/",
    "GET /api/analytics/performance/",
    "GET /api/analytics/realtime/",
]


@dataclass(frozen=True)
class FuzzRun:
    output: str
    # Operation ("METHOD /path") -> what schemathesis reported about it ("" = passed).
    failures: dict[str, str]
    documented: list[str]


@pytest.fixture(scope="module")
def fuzz_run(stack: Stack) -> FuzzRun:
    api = stack.api()
    # A real job, so that the job endpoint's cases reach its 200 and not only 404.
    job = api.post("/api/rollups/rebuild/", {"start_date": "2026-01-01", "end_date": "2026-01-31"})
    assert job.status_code == 202, job.text
    config = stack.folder / "schemathesis.toml"
    config.write_text(
        CONFIG.read_text() + f'\n[parameters]\n"path.job_id" = "{job.json()["job_id"]}"\n'
    )
    reports = stack.folder / "schemathesis"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color"),
            *("run", f"{stack.base_url}/api/schema/"),
            *("--header", f"Authorization: Bearer {api.token}"),
            # One worker: with two threads, CPython 3.11's ast module (which hypothesis uses to
            # describe the lambdas of schemathesis' strategies) failed at random with "AST
            # constructor recursion depth mismatch", a Runtime Error of the run, not of the API.
            *("--phases", "examples,coverage,fuzzing", "--workers", "1"),
            *("--report", "junit", "--report-junit-path", str(reports / "junit.xml")),
        ],
        cwd=settings.BASE_DIR,
        env={**stack.env, "SCHEMATHESIS_HOOKS": "soak.fuzz_checks"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=RUN_SECONDS,
        check=False,
    )
    output = done.stdout.decode(errors="replace")
    print(output)
    assert (reports / "junit.xml").exists(), output
    failures = {}
    for case in ElementTree.parse(reports / "junit.xml").iter("testcase"):
        problems = [*case.iter("failure"), *case.iter("error")]
        failures[case.attrib["name"]] = "\n".join(
            (problem.attrib.get("message", "") + "\n" + (problem.text or "")).strip()
            for problem in problems
        )
    schema = api.get("/api/schema/?format=json").json()
    documented = [
        f"{method.upper()} {path}"
        for path, methods in schema["paths"].items()
        for method in methods
    ]
    return FuzzRun(output=output, failures=failures, documented=documented)


def test_every_operation_is_fuzzed(fuzz_run: FuzzRun) -> None:
    assert sorted(fuzz_run.documented) == sorted(OPERATIONS)
    assert sorted(fuzz_run.failures) == sorted(OPERATIONS), fuzz_run.output


@pytest.mark.parametrize("operation", OPERATIONS)
def test_operation_answers_as_documented(fuzz_run: FuzzRun, operation: str) -> None:
    assert fuzz_run.failures[operation] == "", fuzz_run.failures[operation]
