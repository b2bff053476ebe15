import hmac
import math
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    inline_serializer,
)
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken

from core.exceptions import error_json
from core.metrics import metrics_text
from core.serializers import ErrorResponseSerializer
from core.services import dependencies_check


class HealthView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["health"],
        summary="Liveness: the process answers",
        responses={200: inline_serializer("HealthResponse", {"status": serializers.CharField()})},
        examples=[OpenApiExample("alive", value={"status": "ok"}, response_only=True)],
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


def _readyz_details_allowed(request: Request) -> bool:
    """Staff (token or admin session), or the monitor's ``READYZ_TOKEN``."""
    token = settings.READYZ_TOKEN
    sent = request.headers.get("X-Readyz-Token", "")
    if token and sent and hmac.compare_digest(sent.encode(), token.encode()):
        return True
    try:
        user = request.user
    except DatabaseError:
        # The user cannot be looked up while the database is down: the answer (503) still comes.
        return False
    return bool(user and user.is_staff)


READY_CHECKS_FIELD = serializers.DictField(
    child=serializers.CharField(),
    help_text=(
        '"ok" or "unavailable" per dependency; staff and the READYZ_TOKEN see the error, '
        '"unavailable: <error>".'
    ),
)


ABSORB_FIELD = inline_serializer(
    "AbsorbLiveness",
    {
        "alive": serializers.BooleanField(
            help_text="False when no absorb run finished within three ROLLUP_INTERVAL_SECONDS: "
            "beat, or every worker, is gone."
        ),
        "last_run_at": serializers.DateTimeField(allow_null=True),
        "age_seconds": serializers.FloatField(allow_null=True),
        "max_age_seconds": serializers.FloatField(),
    },
    allow_null=True,
    help_text="Staff and READYZ_TOKEN only (null for anyone else, and when the database is "
    "down). Does not change the status code: the web process can serve while absorb is stale "
    "(reads add the raw tail).",
)


def _absorb_liveness() -> dict[str, Any] | None:
    """The absorb liveness for ``/readyz``'s staff answer (None when the database is down)."""
    from rollups.liveness import absorb_liveness

    try:
        liveness = absorb_liveness()
    except DatabaseError:
        return None
    return {
        "alive": liveness.alive,
        "last_run_at": liveness.last_run_at,
        "age_seconds": liveness.age_seconds,
        "max_age_seconds": liveness.max_age_seconds,
    }


class ReadyView(APIView):
    # Anyone may probe; staff (a token or the admin's session) see why a dependency is down.
    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [AllowAny]

    def perform_authentication(self, request: Request) -> None:
        # Deferred to get(): looking a user up needs the database, which may be what is down.
        pass

    @extend_schema(
        tags=["health"],
        summary="Readiness: database, cache and broker reachable",
        description=(
            "200 when every dependency answers; 503 naming each one that does not. No "
            "credentials needed: anonymous callers get the statuses only; staff (an "
            "`Authorization: Bearer` token or the admin's session) or a request with the "
            "`X-Readyz-Token` header set to `READYZ_TOKEN` also get the errors (a bad token "
            "is a 401), and `absorb`: whether an absorb run finished within three rollup "
            "intervals."
        ),
        parameters=[
            OpenApiParameter(
                "X-Readyz-Token",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="The configured READYZ_TOKEN: show the errors.",
            )
        ],
        responses={
            (200, "application/json"): inline_serializer(
                "ReadyResponse",
                {
                    "status": serializers.ChoiceField(choices=["ready", "unavailable"]),
                    "checks": READY_CHECKS_FIELD,
                    "absorb": ABSORB_FIELD,
                },
            ),
            (401, "application/json"): ErrorResponseSerializer,
            (503, "application/json"): inline_serializer(
                "NotReadyResponse",
                {
                    "status": serializers.ChoiceField(choices=["ready", "unavailable"]),
                    "checks": READY_CHECKS_FIELD,
                    "unavailable": serializers.ListField(child=serializers.CharField()),
                    "absorb": ABSORB_FIELD,
                },
            ),
        },
        examples=[
            OpenApiExample(
                "ready",
                value={
                    "status": "ready",
                    "checks": {"database": "ok", "cache": "ok", "broker": "ok"},
                },
                response_only=True,
                status_codes=["200"],
            ),
            OpenApiExample(
                "cache down",
                value={
                    "status": "unavailable",
                    "checks": {"database": "ok", "cache": "unavailable", "broker": "ok"},
                    "unavailable": ["cache"],
                },
                response_only=True,
                status_codes=["503"],
            ),
            OpenApiExample(
                "cache down (staff)",
                value={
                    "status": "unavailable",
                    "checks": {
                        "database": "ok",
                        "cache": "unavailable: ConnectionError: Connection refused",
                        "broker": "ok",
                    },
                    "unavailable": ["cache"],
                },
                response_only=True,
                status_codes=["503"],
            ),
        ],
    )
    def get(self, request: Request) -> Response:
        checks = dependencies_check()
        down = [name for name, result in checks.items() if result != "ok"]
        extra: dict[str, Any] = {"absorb": None}
        if not _readyz_details_allowed(request):
            # Error text can name hosts, ports and versions: not for anonymous callers.
            checks = {
                name: "ok" if result == "ok" else "unavailable" for name, result in checks.items()
            }
        elif "database" not in down:
            extra["absorb"] = _absorb_liveness()
        if down:
            return Response(
                {"status": "unavailable", "checks": checks, "unavailable": down, **extra},
                status=503,
            )
        return Response({"status": "ready", "checks": checks, **extra})


def login_throttled_status(response: HttpResponse) -> HttpResponse:
    """A login page's answer as 429 with ``Retry-After`` when its form refused a throttled
    sign-in (``core.forms.LoginThrottledMixin``)."""
    context = getattr(response, "context_data", None) or {}
    wait = getattr(context.get("form"), "throttle_wait", None)
    if wait is not None:
        response.status_code = 429
        response["Retry-After"] = str(math.ceil(wait))
    return response


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's login page (429 when throttled: ``login_throttled_status``)."""
    return login_throttled_status(admin.site.login(request))


# Django-level error pages (outside DRF views) answer in the same JSON shape as the API.


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_json(status=400, code="bad_request", message="Bad request.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_json(
        status=403, code="permission_denied", message="You do not have permission to do this."
    )


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    # Where to look instead: a newcomer guessing /api/docs/ finds the documentation's address.
    return error_json(
        status=404,
        code="not_found",
        message=(
            f"No such URL: {request.path}. The API's endpoints are described at "
            f"{reverse('swagger-ui')} and {reverse('redoc')} (schema: {reverse('schema')})."
        ),
    )


def server_error(request: HttpRequest) -> JsonResponse:
    return error_json(status=500, code="server_error", message="Internal server error.")


def _metrics_allowed(request: HttpRequest) -> bool | None:
    """True: the scraper's ``METRICS_TOKEN`` or a staff user (admin session or access token).
    False: a signed-in user who is not staff. None: no (valid) credentials."""
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    bearer = scheme.lower() == "bearer" and bool(sent.strip())
    token = settings.METRICS_TOKEN
    if bearer and token and hmac.compare_digest(sent.strip().encode(), token.encode()):
        return True
    user: Any = getattr(request, "user", None)
    if bearer:
        try:
            found = JWTAuthentication().authenticate(Request(request))
        except (AuthenticationFailed, InvalidToken):
            return None
        user = found[0] if found else None
    if user is None or not user.is_authenticated:
        return None
    return bool(user.is_staff)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics (text exposition) for staff and the scraper's ``METRICS_TOKEN``.

    Not on a separate port: the web process serves one port behind the TLS proxy, and a
    token lets a scraper anywhere reach it there without exposing the figures to anyone else.
    """
    if request.method not in ("GET", "HEAD"):
        return error_json(status=405, code="method_not_allowed", message="Use GET.")
    allowed = _metrics_allowed(request)
    if allowed is None:
        response = error_json(
            status=401,
            code="not_authenticated",
            message="Send Authorization: Bearer <METRICS_TOKEN> or a staff user's access token.",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not allowed:
        return error_json(
            status=403, code="permission_denied", message="Metrics are for staff only."
        )
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
