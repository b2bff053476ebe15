"""A Python client generated from the OpenAPI schema, as an integrator would make one
(openapi-python-client), type-checked with ``mypy --strict`` and run against the live server on
every endpoint: each answer must parse into the generated types, with the fields the API always
sends typed as present, the public endpoints callable without credentials, and both a token and
an API key accepted where the schema says.

Needs the dev requirements (openapi-python-client, mypy, ruff); CI installs them.
"""

import importlib
import inspect
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from apikeys.services import api_key_create
from core.models import Blog
from rollups.jobs import rebuild_job_run
from rollups.tests.conftest import broker_at, filesystem_broker_options

pytestmark = pytest.mark.django_db(transaction=True)

BIN = Path(sys.executable).parent
PACKAGE = "blog_views_client"
PASSWORD = "correct-horse-battery-staple"


def _run(*command: str, cwd: Path) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        # The generator formats its output with ruff, found on PATH: the virtualenv's.
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd)},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the generated package, from the schema the server serves."""
    pytest.importorskip("openapi_python_client", reason="openapi-python-client not installed")
    pytest.importorskip("mypy", reason="mypy not installed")
    folder = tmp_path_factory.mktemp("client")
    schema = folder / "schema.yaml"
    # Public read off (the default), as production serves it.
    call_command("spectacular", "--file", str(schema))
    output = _run(
        str(BIN / "openapi-python-client"),
        "generate",
        "--path",
        str(schema),
        "--output-path",
        str(folder / PACKAGE),
        "--meta",
        "none",
        cwd=folder,
    )
    # Everything in the schema made it into the client (the generator skips what it cannot
    # express, with a warning).
    assert "Warning" not in output, output
    return folder


def test_the_generated_client_passes_mypy_strict(generated: Path) -> None:
    config = generated / "mypy.ini"
    # The generator's own client.py (not made from this schema) passes *args: object to httpx's
    # __exit__: its one known complaint, left to the generator.
    config.write_text(f"[mypy]\n[mypy-{PACKAGE}.client]\ndisable_error_code = arg-type\n")
    output = _run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--config-file",
        str(config),
        "--cache-dir",
        str(generated / ".mypy_cache"),
        PACKAGE,
        cwd=generated,
    )
    assert "Success: no issues found" in output, output


@pytest.fixture
def client_module(generated: Path) -> Iterator[ModuleType]:
    sys.path.insert(0, str(generated))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(generated))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def _models() -> Any:
    return importlib.import_module(f"{PACKAGE}.models")


def _client_annotation(module: str) -> Any:
    return inspect.signature(_api(module).sync).parameters["client"].annotation


def test_the_generated_types_say_what_the_api_does(client_module: ModuleType) -> None:
    models = _models()
    # No credentials needed: the plain client is enough.
    for module in (
        "health.healthz_retrieve",
        "health.readyz_retrieve",
        "analytics.api_analytics_retrieve",
        "auth.api_token_create",
        "auth.api_token_refresh_create",
    ):
        assert _client_annotation(module) == (
            client_module.AuthenticatedClient | client_module.Client
        ), module
    for module in (
        "analytics.api_analytics_top_blog_create",
        "ingest.api_ingest_views_create",
        "rollups.api_rollups_status_retrieve",
    ):
        assert _client_annotation(module) is client_module.AuthenticatedClient, module
    # Every field of an answer is typed as present (null where the API sends null); only an
    # error detail's "index" (items of a batch) and the rows' comparison fields (with compare
    # only) may be missing.
    optional = {
        (name, field)
        for name in models.__all__
        if not name.endswith(("Request", "Enum"))
        for field, annotation in getattr(models, name).__annotations__.items()
        if "Unset" in str(annotation)
    }
    assert optional == {("ErrorDetail", "index")} | {
        (row, field)
        for row in ("AuthorRow", "BlogRow", "CountryRow", "PerformanceRow")
        for field in ("previous_views", "change_pct")
    }
    # Request components are named once "Request".
    assert {"GroupedRequest", "TopRequest", "PerformanceRequest", "RebuildRequest"} <= set(
        models.__all__
    )
    assert [name for name in models.__all__ if "RequestRequest" in name] == []


def test_the_generated_client_parses_every_answer_of_the_live_server(
    client_module: ModuleType, live_server: Any, settings: Any, tmp_path: Path
) -> None:
    settings.ANALYTICS_PUBLIC_READ = False
    models = _models()
    staff = get_user_model().objects.create_user(
        username="integrator", password=PASSWORD, is_staff=True
    )
    author = get_user_model().objects.create_user(username="ada")
    blog = Blog.objects.create(title="Notes", author=author)
    _, secret = api_key_create(name="pipeline", user=staff, scope="ingest+read")

    anonymous = client_module.Client(base_url=live_server.url, raise_on_unexpected_status=True)

    # Public endpoints take the plain client.
    health = _api("health.healthz_retrieve").sync(client=anonymous)
    assert isinstance(health, models.HealthResponse)
    assert health.status == "ok"
    ready = _api("health.readyz_retrieve").sync(client=anonymous)
    assert isinstance(ready, models.ReadyResponse | models.NotReadyResponse)
    root = _api("analytics.api_analytics_retrieve").sync(client=anonymous)
    assert isinstance(root, models.ApiRoot)
    assert len(root.endpoints) == 7

    tokens = _api("auth.api_token_create").sync(
        client=anonymous,
        body=models.TokenObtainPairRequest(username="integrator", password=PASSWORD),
    )
    assert isinstance(tokens, models.TokenPair)
    refreshed = _api("auth.api_token_refresh_create").sync(
        client=anonymous, body=models.TokenRefreshRequest(refresh=tokens.refresh)
    )
    assert isinstance(refreshed, models.AccessToken)

    bearer = client_module.AuthenticatedClient(
        base_url=live_server.url, token=tokens.access, raise_on_unexpected_status=True
    )
    keyed = client_module.AuthenticatedClient(
        base_url=live_server.url, token=secret, prefix="Api-Key", raise_on_unexpected_status=True
    )

    ingest = _api("ingest.api_ingest_views_create")
    for credentials, country in ((bearer, "us"), (keyed, "de")):
        accepted = ingest.sync(
            client=credentials,
            body=models.IngestViewsRequest(
                views=[
                    models.IngestViewItemRequest(
                        blog_id=blog.pk,
                        country_code=country,
                        viewed_at=datetime(2025, 3, 1, 12, tzinfo=UTC),
                    )
                ]
            ),
            idempotency_key=str(uuid.uuid4()),
        )
        assert isinstance(accepted, models.IngestViewsResponse)
        assert accepted.accepted == 1

    reads = [
        (
            "analytics.api_analytics_blog_views_country_create",
            models.GroupedRequest,
            models.CountryResponse,
        ),
        (
            "analytics.api_analytics_blog_views_user_create",
            models.GroupedRequest,
            models.AuthorResponse,
        ),
        ("analytics.api_analytics_top_blog_create", models.TopRequest, models.BlogResponse),
        ("analytics.api_analytics_top_user_create", models.TopRequest, models.AuthorResponse),
        ("analytics.api_analytics_top_country_create", models.TopRequest, models.CountryResponse),
        (
            "analytics.api_analytics_performance_create",
            models.PerformanceRequest,
            models.PerformanceResponse,
        ),
    ]
    for module, request, response in reads:
        for credentials in (bearer, keyed):
            answer = _api(module).sync(client=credentials, body=request(year=2025))
            assert isinstance(answer, response), (module, answer)
            assert answer.results, module
            assert answer.meta.filters.additional_properties["year"] == 2025
    rows = _api("analytics.api_analytics_top_blog_create").sync(
        client=keyed, body=models.TopRequest()
    )
    assert [(row.blog_id, row.title, row.views) for row in rows.results] == [(blog.pk, "Notes", 2)]

    # An error answer parses into the one error shape (400 is documented).
    bad = _api("analytics.api_analytics_performance_create").sync(
        client=bearer,
        body=models.PerformanceRequest(
            start_date=datetime(2025, 3, 2).date(), end_date=datetime(2025, 3, 1).date()
        ),
    )
    assert isinstance(bad, models.ErrorResponse)
    assert bad.error.code == "invalid"

    # Staff endpoints.
    status = _api("rollups.api_rollups_status_retrieve").sync(client=bearer)
    assert isinstance(status, models.RollupStatus)
    assert status.pending_views == 2
    broker = tmp_path / "broker"
    with broker_at("filesystem://", filesystem_broker_options(broker)):
        queued = _api("rollups.api_rollups_rebuild_create").sync(
            client=bearer, body=models.RebuildRequest()
        )
    assert isinstance(queued, models.RebuildAccepted)
    assert queued.created is True
    jobs = _api("rollups.api_rollups_jobs_retrieve")
    job = jobs.sync(client=bearer, job_id=queued.job_id)
    assert isinstance(job, models.RebuildJob)
    # Always present, typed as present: no Unset to test for.
    assert (job.state, job.progress, job.error, job.finished_at) == (
        models.StateEnum.QUEUED,
        0.0,
        "",
        None,
    )
    rebuild_job_run(job_id=str(queued.job_id))
    done = jobs.sync(client=bearer, job_id=queued.job_id)
    assert done.state == models.StateEnum.DONE
    assert done.views_rebuilt == 2
    assert isinstance(done.finished_at, datetime)
    assert isinstance(done.duration_ms, int)
