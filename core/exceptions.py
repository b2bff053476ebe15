"""One error shape for the whole API.

Every error answer is ``{"error": {"status", "code", "message", "details"}}``; ``details`` is a list
of ``{"field", "reason"}`` (plus ``"index"`` for items of a batch) naming each problem.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

# What a 503 for an unreachable database tells the client to wait before trying again.
DATABASE_RETRY_AFTER_SECONDS = 5


class ApplicationError(Exception):
    """An error answered with ``status``, the standard error body and any ``headers`` (such as
    ``Retry-After`` on a 503)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = status.HTTP_400_BAD_REQUEST,
        code: str = "invalid",
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or []
        self.headers = headers or {}


def error_body(
    *, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The standard error body."""
    return {"error": {"status": status, "code": code, "message": message, "details": details or []}}


def error_json(
    *, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> JsonResponse:
    """The standard error body as a plain Django response: for middleware and Django's error
    pages, which answer outside DRF."""
    return JsonResponse(
        error_body(status=status, code=code, message=message, details=details), status=status
    )


def _flatten_validation(detail: Any, prefix: str | None = None) -> list[dict[str, Any]]:
    if isinstance(detail, dict):
        found = []
        for key, value in detail.items():
            field = None if key == "non_field_errors" else key
            if prefix is not None:
                field = f"{prefix}.{key}" if field else prefix
            found.extend(_flatten_validation(value, field))
        return found
    if isinstance(detail, list):
        found = []
        for position, value in enumerate(detail):
            if isinstance(value, dict | list):
                found.extend(_flatten_validation(value, f"{prefix}[{position}]"))
            else:
                found.append({"field": prefix, "reason": str(value)})
        return found
    return [{"field": prefix, "reason": str(detail)}]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with every answer rewritten into the standard error body."""
    if isinstance(exc, ApplicationError):
        return Response(
            error_body(status=exc.status, code=exc.code, message=exc.message, details=exc.details),
            status=exc.status,
            headers=exc.headers,
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away (restart, failover, network) or refused the work (a lock or
        # serialization failure): the request was fine, the service cannot serve it now.
        logger.error("database unavailable; answered 503", exc_info=exc)
        return Response(
            error_body(
                status=503,
                code="database_unavailable",
                message="The database is unavailable; nothing was done. Try again shortly.",
                # The error's own text names hosts and ports: it goes to the log, not the client.
                details=[{"field": None, "reason": "database unavailable"}],
            ),
            status=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response

    if isinstance(exc, exceptions.ValidationError):
        details = _flatten_validation(exc.detail)
        fields = sorted({d["field"] for d in details if d["field"]})
        message = "Invalid input" + (f": {', '.join(fields)}." if fields else ".")
        code = "invalid"
    elif isinstance(exc.detail, dict):
        # SimpleJWT's InvalidToken and AuthenticationFailed: {"detail", "code", "messages":
        # [{..., "message"}]} ("code" says which: "user_not_found", "password_changed"...).
        message = str(exc.detail.get("detail", exc.default_detail))
        details = [
            {"field": None, "reason": str(item["message"])}
            for item in exc.detail.get("messages", [])
            if isinstance(item, dict) and "message" in item
        ]
        code = str(exc.detail.get("code", exc.default_code))
    else:
        message = str(exc.detail)
        details = []
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
    response.data = error_body(
        status=response.status_code, code=code, message=message, details=details
    )
    return response
