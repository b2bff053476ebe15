"""Request bodies: 413 past the limit on every URL, and a chunked body read in full or refused.

In-process through the WSGI application the Procfile serves (``core.wsgi.application``), and
against gunicorn itself started from the Procfile's configuration, with a chunked body sent
over a raw socket.
"""

import http.client
import io
import json
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import override_settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from api.tests.test_schema_fuzz import kept_connection
from core.models import Blog
from core.testing import child_env, free_port, project_process, wait_until
from core.wsgi import application
from ingest.models import BlogView

INGEST = "/api/ingest/views/"
READ = "/api/analytics/top/country/"
LIMIT = 1000


def _error(body: bytes, status: int) -> dict[str, Any]:
    error = json.loads(body)["error"]
    assert set(error) == {"status", "code", "message", "details"}
    assert error["status"] == status
    return error


# --- Content-Length over the limit ---------------------------------------------------------------


@pytest.fixture
def staff_client(db: None) -> APIClient:
    staff = get_user_model().objects.create_user(username="staff", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(staff).access_token}")
    return client


@pytest.mark.parametrize(
    ("url", "content_type"),
    [
        (INGEST, "application/json"),
        (READ, "application/json"),
        ("/api/token/", "application/json"),
        ("/api/token/refresh/", "application/json"),
        ("/api/rollups/rebuild/", "application/json"),
        ("/admin/login/", "application/x-www-form-urlencoded"),
        ("/no/such/url/", "application/json"),
    ],
)
def test_a_body_over_the_limit_is_413_on_every_url(
    staff_client: APIClient, settings: Any, url: str, content_type: str, caplog: Any
) -> None:
    # The two limits as the settings set them: equal.
    settings.REQUEST_BODY_MAX_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    settings.ANALYTICS_PUBLIC_READ = True
    body = (
        "x=" + "y" * LIMIT
        if content_type.endswith("urlencoded")
        else json.dumps({"a": "y" * LIMIT})
    )
    response = staff_client.generic("POST", url, body, content_type=content_type)
    assert response.status_code == 413, response.content
    error = _error(response.content, 413)
    assert error["code"] == "too_large"
    assert str(LIMIT) in error["message"]
    assert "Traceback" not in caplog.text


def test_a_body_at_the_limit_is_read(staff_client: APIClient, settings: Any) -> None:
    settings.REQUEST_BODY_MAX_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    settings.ANALYTICS_PUBLIC_READ = True
    body = json.dumps({"author_username": "a"})
    body += " " * (LIMIT - len(body))
    response = staff_client.generic("POST", READ, body, content_type="application/json")
    assert response.status_code == 200, response.content


def test_a_content_length_that_is_not_a_number_is_400(db: None) -> None:
    response = APIClient().generic(
        "POST", READ, "{}", content_type="application/json", CONTENT_LENGTH="12a"
    )
    assert response.status_code == 400
    assert _error(response.content, 400)["code"] == "bad_request"


# --- Chunked bodies, in-process -----------------------------------------------------------------


def _call(
    path: str, body: bytes, *, token: str | None = None, terminated: bool = True
) -> tuple[int, bytes]:
    """POST ``body`` to the WSGI application as gunicorn hands over a chunked request: no
    ``Content-Length``, the decoded body in ``wsgi.input``, marked terminated (or not, as a
    server that cannot decode chunks would)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if terminated:
        environ["wsgi.input_terminated"] = True
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    started: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.append(status)

    with kept_connection():
        answer = b"".join(application(environ, start_response))
    return int(started[0].split()[0]), answer


@pytest.fixture
def ingest_token(db: None) -> str:
    user = get_user_model().objects.create_user(username="ingester")
    user.user_permissions.add(Permission.objects.get(codename="add_blogview"))
    return str(RefreshToken.for_user(user).access_token)


@pytest.fixture
def blog(db: None) -> Blog:
    return Blog.objects.create(title="A", author=get_user_model().objects.create_user("ada"))


def test_a_chunked_read_answers_the_question_sent(db: None, settings: Any) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    status, body = _call(READ, b'{"limit": "x"}')
    assert status == 400, body
    assert _error(body, 400)["details"] == [{"field": "limit", "reason": "must be an integer"}]
    status, body = _call(READ, b'{"limit": 3}')
    assert status == 200, body
    assert json.loads(body)["meta"]["filters"]["limit"] == 3


def test_a_chunked_ingest_stores_its_views(ingest_token: str, blog: Blog) -> None:
    views = {"views": [{"blog_id": blog.pk, "country_code": "US"}] * 3}
    status, body = _call(INGEST, json.dumps(views).encode(), token=ingest_token)
    assert (status, json.loads(body)) == (202, {"accepted": 3})
    assert BlogView.objects.count() == 3


@override_settings(REQUEST_BODY_MAX_BYTES=LIMIT, DATA_UPLOAD_MAX_MEMORY_SIZE=LIMIT)
def test_a_chunked_body_over_the_limit_is_413(ingest_token: str, blog: Blog) -> None:
    views = {"views": [{"blog_id": blog.pk, "country_code": "US"}] * 100}
    status, body = _call(INGEST, json.dumps(views).encode(), token=ingest_token)
    assert status == 413
    assert _error(body, 413)["code"] == "too_large"
    assert BlogView.objects.count() == 0


def test_a_chunked_body_the_server_cannot_end_is_411(ingest_token: str, blog: Blog) -> None:
    views = {"views": [{"blog_id": blog.pk, "country_code": "US"}]}
    status, body = _call(INGEST, json.dumps(views).encode(), token=ingest_token, terminated=False)
    assert status == 411
    assert _error(body, 411)["code"] == "length_required"
    assert BlogView.objects.count() == 0


# --- Against gunicorn ---------------------------------------------------------------------------


@pytest.fixture
def gunicorn(
    transactional_db: None, tmp_path: Path, settings: Any
) -> Iterator[Callable[..., tuple[int, bytes]]]:
    """The Procfile's web process (its gunicorn.conf.py, one worker) on the test database;
    yields ``send(path, chunks, headers)`` sending the body as those chunks."""
    port = free_port()
    args = [
        *("-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "1"),
        *("--bind", f"127.0.0.1:{port}", "core.wsgi:application"),
    ]
    env = child_env(
        ANALYTICS_PUBLIC_READ="1",
        REQUEST_BODY_MAX_BYTES=str(LIMIT),
        DJANGO_SETTINGS_MODULE="core.settings_test",
    )
    log = tmp_path / "gunicorn.log"
    with project_process(args, log=log, env=env) as process:

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return process.poll() is not None

        assert wait_until(answers, seconds=60) and process.poll() is None, log.read_text()

        def send(path: str, chunks: list[bytes], headers: dict[str, str]) -> tuple[int, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.putrequest("POST", path)
            for name, value in {
                "Content-Type": "application/json",
                "Transfer-Encoding": "chunked",
                **headers,
            }.items():
                connection.putheader(name, value)
            connection.endheaders()
            for chunk in chunks:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
            response = connection.getresponse()
            answer = (response.status, response.read())
            connection.close()
            return answer

        yield send


def test_gunicorn_reads_a_chunked_body_in_full(gunicorn: Callable[..., Any]) -> None:
    user = get_user_model().objects.create_user(username="ingester")
    user.user_permissions.add(Permission.objects.get(codename="add_blogview"))
    token = str(RefreshToken.for_user(user).access_token)
    blog = Blog.objects.create(title="A", author=user)

    status, body = gunicorn(READ, [b'{"lim', b'it": "x"}'], {})
    assert status == 400, body
    assert _error(body, 400)["details"][0]["field"] == "limit"

    views = json.dumps({"views": [{"blog_id": blog.pk, "country_code": "US"}] * 2}).encode()
    status, body = gunicorn(INGEST, [views[:10], views[10:]], {"Authorization": f"Bearer {token}"})
    assert (status, json.loads(body)) == (202, {"accepted": 2})
    assert BlogView.objects.count() == 2

    status, body = gunicorn(READ, [b'{"author_username": "', b"a" * LIMIT, b'"}'], {})
    assert status == 413, body
    assert _error(body, 413)["code"] == "too_large"
