"""Fixtures of the soak tests (``make soak``): a stack per test module, its logs on failure."""

import os
from collections.abc import Iterator
from typing import Any

import pytest

from soak.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The service as real processes on a fresh database, one per test module."""
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        pytest.fail(
            "the soak tests need DATABASE_URL=postgres://... (a server to create databases on)"
        )
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    folder = tmp_path_factory.mktemp(f"soak-{name}")
    with running_stack(name=name, folder=folder, server_url=server_url) as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # A failing soak test shows what the processes logged: the server's traceback of a 500, the
    # worker's last words before it died.
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(stack, Stack):
        report.sections.append(("soak stack logs", stack.output()))
    return report
