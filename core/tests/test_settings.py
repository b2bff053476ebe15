"""Settings and process configuration as operators meet them: `manage.py` from a fresh checkout,
the files holding secrets, the production deploy check, and where the web process listens.

Each runs the project's own commands in a child process, as an operator would.
"""

import json
import os
import re
import runpy
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.test import Client

ROOT = Path(settings.BASE_DIR)
# What an operator's shell would not have: the test run's own configuration.
PROJECT_VARIABLES = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "CELERY_FILESYSTEM_DIR",
    "DJANGO_SETTINGS_MODULE",
)


def _operator_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in PROJECT_VARIABLES}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _manage(
    checkout: Path, *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    # `python manage.py ...` as the README writes it (the virtualenv's python).
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fresh checkout of the project: its files, no var/."""
    copy = tmp_path / "checkout"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(".venv", "var", ".git", "__pycache__", ".*_cache"),
    )
    return copy


FILE_MODES = """
import json, os, stat
from django.conf import settings
from django.test import Client
from django.contrib.auth import get_user_model
get_user_model().objects.count()  # an open connection: the -wal and -shm files exist now
var = settings.BASE_DIR / "var"
names = ["secret_key", "db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"]
print(json.dumps({
    "modes": {n: oct(stat.S_IMODE(os.stat(var / n).st_mode)) for n in names},
    "key_is_the_file": settings.SECRET_KEY == (var / "secret_key").read_text().strip(),
}))
"""


def test_manage_py_works_from_a_fresh_checkout_and_keeps_secrets_private(checkout: Path) -> None:
    env = _operator_env()

    _manage(checkout, "migrate", "--noinput", env=env)
    report = json.loads(
        _manage(checkout, "shell", "--verbosity", "0", "-c", FILE_MODES, env=env).stdout
    )
    _manage(checkout, "run_rollups", env=env)  # a README command, as written

    # The generated key (scripts/run reads the same file), and only the owner reads the key and
    # the database with its password hashes, the SQLite journal files included.
    assert report == {
        "modes": {
            "secret_key": "0o600",
            "db.sqlite3": "0o600",
            "db.sqlite3-wal": "0o600",
            "db.sqlite3-shm": "0o600",
        },
        "key_is_the_file": True,
    }
    # The same key on every run.
    key = (checkout / "var" / "secret_key").read_text()
    _manage(checkout, "check", env=env)
    assert (checkout / "var" / "secret_key").read_text() == key


def test_an_existing_database_readable_by_others_is_made_private(checkout: Path) -> None:
    env = _operator_env()
    _manage(checkout, "migrate", "--noinput", env=env)
    database = checkout / "var" / "db.sqlite3"
    database.chmod(0o644)

    _manage(checkout, "check", env=env)

    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_a_configured_database_without_a_key_refuses_to_start(checkout: Path) -> None:
    env = _operator_env(DATABASE_URL=f"sqlite:///{checkout / 'elsewhere.sqlite3'}")

    result = _manage(checkout, "check", env=env, check=False)

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
    assert not (checkout / "var" / "secret_key").exists()


def test_log_level_is_case_insensitive_and_a_wrong_one_is_named(checkout: Path) -> None:
    # The Procfile hands the same LOG_LEVEL to gunicorn and Celery, which take "info".
    assert _manage(checkout, "check", env=_operator_env(LOG_LEVEL="info")).returncode == 0

    result = _manage(checkout, "check", env=_operator_env(LOG_LEVEL="loud"), check=False)

    assert result.returncode != 0
    assert "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL; got 'LOUD'" in result.stderr


def _compose_environment(**given: str) -> dict[str, str]:
    """docker-compose.yml's environment for the app services, ``${NAME:-default}`` and
    ``${NAME:?error}`` resolved from ``given`` (as a shell that sets only those would)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    reference = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")

    def resolve(match: re.Match[str]) -> str:
        name, kind, word = match.groups()
        if name in given:
            return given[name]
        assert kind != "?", f"docker-compose.yml needs {name}"
        return word or ""

    return {name: reference.sub(resolve, str(value)) for name, value in compose["x-env"].items()}


def _deploy_check(**overrides: str) -> subprocess.CompletedProcess[str]:
    environment = _compose_environment(
        SECRET_KEY="x7Qp2LwZ9vB4nR8tK1mF6cH3jD5sG0aY-uE_oI7pL2kW9qT4zX8bN1vM6rC3",
        ALLOWED_HOSTS="analytics.example.com",
    )
    # The containers' metrics folder is a tmpfs of theirs; here, a folder of this test's.
    with tempfile.TemporaryDirectory() as metrics:
        environment["PROMETHEUS_MULTIPROC_DIR"] = metrics
        return _manage(
            ROOT,
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
            env=_operator_env(**{**environment, **overrides}),
            check=False,
        )


def test_the_production_compose_environment_passes_the_deploy_check() -> None:
    result = _deploy_check()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_without_https_the_deploy_check_names_what_is_missing() -> None:
    result = _deploy_check(HTTPS="0")

    assert result.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stderr


def _gunicorn_config(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in ("HOST", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS"):
        monkeypatch.delenv(name, raising=False)
    # Set, so that loading the config neither makes a folder nor leaves the variable behind.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/metrics-folder-of-the-config-test")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_the_web_process_listens_on_this_machine_only_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _gunicorn_config(monkeypatch)["bind"] == ["127.0.0.1:8000"]
    assert _gunicorn_config(monkeypatch, HOST="0.0.0.0", PORT="9000")["bind"] == ["0.0.0.0:9000"]
    # The container image listens on every interface of its own network namespace.
    assert "HOST=0.0.0.0" in (ROOT / "Dockerfile").read_text()


def test_each_worker_takes_a_connection_only_with_a_free_thread_and_keeps_some_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _gunicorn_config(monkeypatch, WEB_CONCURRENCY="3", GUNICORN_THREADS="6")

    assert config["worker_class"] == "core.web_worker.KeepAliveThreadWorker"
    # gthread keeps worker_connections - threads connections alive: 6 per worker here.
    assert (config["workers"], config["threads"], config["worker_connections"]) == (3, 6, 12)
    assert config["keepalive"] == 5


def test_the_web_worker_accepts_while_a_thread_is_free_whatever_it_keeps_alive() -> None:
    from collections import deque
    from types import SimpleNamespace

    from core.web_worker import KeepAliveThreadWorker

    worker = KeepAliveThreadWorker.__new__(KeepAliveThreadWorker)
    worker.cfg = SimpleNamespace(threads=6)
    worker.keepalived_conns = deque()
    # gthread's run loop accepts while nr_conns (kept-alive ones included) is below this.
    assert worker.worker_connections == 6
    worker.keepalived_conns.extend(["idle"] * 4)
    assert worker.worker_connections == 10
    # What gthread's own __init__ sets from the configuration changes nothing.
    worker.worker_connections = 12
    assert worker.worker_connections == 10


@pytest.mark.django_db
def test_with_https_on_probes_answer_over_http_and_everything_else_redirects(
    settings: Any,
) -> None:
    # The container's healthcheck and a load balancer's probes speak plain http to the process.
    settings.SECURE_SSL_REDIRECT = True
    browser = Client()

    assert browser.get("/healthz").status_code == 200
    assert browser.get("/readyz").status_code == 200
    redirected = browser.get("/admin/login/")
    assert redirected.status_code == 301
    assert redirected["Location"] == "https://testserver/admin/login/"
    # Behind the proxy (X-Forwarded-Proto trusted), https requests are served.
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert Client().get("/admin/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200


def test_gunicorn_gets_a_fresh_metrics_folder_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Recorded by monkeypatch, so that the variable the config sets is undone afterwards.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    try:
        assert folder.is_dir() and not any(folder.iterdir())
        assert folder.name.startswith("blogviews-metrics-")
    finally:
        folder.rmdir()


def test_raw_retention_months_must_be_a_whole_number(checkout: Path) -> None:
    for value in ("0", "", "12"):
        assert (
            _manage(checkout, "check", env=_operator_env(RAW_RETENTION_MONTHS=value)).returncode
            == 0
        )
    for value in ("twelve", "-1", "1.5", "2401"):
        result = _manage(
            checkout, "check", env=_operator_env(RAW_RETENTION_MONTHS=value), check=False
        )
        assert result.returncode != 0
        assert "RAW_RETENTION_MONTHS must be a whole number of months" in result.stderr
