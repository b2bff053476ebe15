"""What every request must be before a view sees it: a body within one size limit (413), read
in full or refused, never silently read as empty (411); a query string without a NUL (400).

Django reads a body by its ``Content-Length``; a body sent with ``Transfer-Encoding: chunked``
has none, and Django would read it as empty (an ingest "without views", a read "without
filters" answering a different question than the one sent). WSGI gives the application no
length for it: only a server that marks its input as terminated (``wsgi.input_terminated``, as
gunicorn does after decoding the chunks) lets it be read to its end. ``ChunkedBodyMiddleware``
reads such a body in full (at most one byte past the limit) and hands Django a sized one; on
other servers it answers 411 Length Required.

Around all of it: ``RequestIdMiddleware`` gives each request its id (``X-Request-ID``, on every log
line), and ``MetricsMiddleware`` counts and times it for ``/metrics`` (``core.metrics``).
"""

import io
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

from core.exceptions import error_body, error_json
from core.logs import REQUEST_ID_HEADER, request_id_from, request_id_var
from core.metrics import HTTP_LATENCY, HTTP_REQUESTS, HTTP_THROTTLED

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
READ_CHUNK = 64 * 1024
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
request_logger = logging.getLogger("core.requests")


def _too_large(limit: int) -> JsonResponse:
    return error_json(
        status=413,
        code="too_large",
        message=f"The request body is larger than {limit} bytes.",
        details=[{"field": None, "reason": f"at most {limit} bytes (REQUEST_BODY_MAX_BYTES)"}],
    )


class RequestBodyLimitMiddleware:
    """413 for a body declared larger than ``REQUEST_BODY_MAX_BYTES``, on every URL, before
    anything reads it (Django's own ``DATA_UPLOAD_MAX_MEMORY_SIZE`` check would answer 400)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.REQUEST_BODY_MAX_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not declared.isdigit():
            return error_json(
                status=400,
                code="bad_request",
                message="Content-Length is not a number.",
                details=[{"field": None, "reason": "invalid Content-Length header"}],
            )
        if int(declared) > limit:
            return _too_large(limit)
        return self.get_response(request)


class QueryStringMiddleware:
    """400 for a query string holding a NUL character, or bytes that are not UTF-8, on every
    URL.

    No parameter may hold a NUL, and PostgreSQL refuses it in a query: the admin's list filters
    and autocomplete, and the schema's ``version``, passed it on (a 500). Django decodes bytes
    that are not UTF-8 (``%ff``) as U+FFFD, so a name asked for would silently become another.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = request.META.get("QUERY_STRING", "")
        if "%" in raw or not raw.isascii():
            try:
                # WSGI hands the query string over as its bytes, decoded as Latin-1.
                unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                return error_json(
                    status=400,
                    code="bad_request",
                    message="The query string is not valid UTF-8.",
                    details=[{"field": None, "reason": "percent-encode UTF-8 bytes only"}],
                )
        names: list[str] = []
        if "%00" in raw or "\x00" in raw:
            names = sorted(
                {
                    name
                    for name, values in request.GET.lists()
                    for value in [name, *values]
                    if "\x00" in value
                }
            )
        if names:
            return error_json(
                status=400,
                code="bad_request",
                message="A query parameter holds a NUL character.",
                details=[
                    {
                        "field": ascii(name) if "\x00" in name else name,
                        "reason": "must not contain a NUL character",
                    }
                    for name in names
                ],
            )
        return self.get_response(request)


class ChunkedBodyMiddleware:
    """WSGI middleware: a body without ``Content-Length`` is read in full, or refused (411)."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("CONTENT_LENGTH") or not environ.get("HTTP_TRANSFER_ENCODING"):
            return self.app(environ, start_response)
        if not environ.get("wsgi.input_terminated"):
            body = error_body(
                status=411,
                code="length_required",
                message=(
                    "Send the body with a Content-Length: this server cannot read a chunked body."
                ),
                details=[{"field": None, "reason": "Transfer-Encoding without Content-Length"}],
            )
            encoded = json.dumps(body).encode()
            start_response(
                "411 Length Required",
                [("Content-Type", "application/json"), ("Content-Length", str(len(encoded)))],
            )
            return [encoded]
        # One byte past the limit is enough for RequestBodyLimitMiddleware to answer 413.
        wanted = settings.REQUEST_BODY_MAX_BYTES + 1
        stream = environ["wsgi.input"]
        received = bytearray()
        while len(received) < wanted:
            chunk = stream.read(min(READ_CHUNK, wanted - len(received)))
            if not chunk:
                break
            received += chunk
        environ["wsgi.input"] = io.BytesIO(bytes(received))
        environ["CONTENT_LENGTH"] = str(len(received))
        return self.app(environ, start_response)


class RequestIdMiddleware:
    """Gives every request an id (its ``X-Request-ID`` when sane, else a new one), kept for the
    log lines written while it runs and returned in the response's ``X-Request-ID``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        # Kept past this call: Django logs a 4xx/5xx ("Not Found: ...") after every middleware
        # has returned. It is cleared when the response is closed (request_finished, CoreConfig).
        request_id_var.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _endpoint(request: HttpRequest) -> str:
    """A request's endpoint as a metric label: its URL's name (a handful of values), or
    ``unmatched`` for a path no URL matches."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        # Answered before URL resolution (a 413, a 400 for the query string): resolve it here.
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return "unmatched"
    return match.view_name or match.route or "unnamed"


class MetricsMiddleware:
    """Counts and times every request by endpoint, method and status; counts the 429s; with
    ``LOG_REQUESTS`` writes one log line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        endpoint = _endpoint(request)
        # Only the methods Django's views know, so that a client cannot mint label values.
        method = request.method if request.method in KNOWN_METHODS else "other"
        HTTP_REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
        HTTP_LATENCY.labels(endpoint, method).observe(seconds)
        if response.status_code == 429:
            HTTP_THROTTLED.labels(endpoint).inc()
        if settings.LOG_REQUESTS:
            request_logger.info(
                "%s %s %s",
                method,
                request.path,
                response.status_code,
                extra={
                    "method": method,
                    "path": request.path,
                    "endpoint": endpoint,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
        return response
