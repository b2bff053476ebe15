from typing import Any

from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import error_body
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


class ReadyView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["health"],
        summary="Readiness: database, cache and broker reachable",
        description="200 when every dependency answers; 503 naming each one that does not.",
        responses={
            (200, "application/json"): inline_serializer(
                "ReadyResponse",
                {
                    "status": serializers.ChoiceField(choices=["ready", "unavailable"]),
                    "checks": serializers.DictField(child=serializers.CharField()),
                },
            ),
            (503, "application/json"): inline_serializer(
                "NotReadyResponse",
                {
                    "status": serializers.ChoiceField(choices=["ready", "unavailable"]),
                    "checks": serializers.DictField(child=serializers.CharField()),
                    "unavailable": serializers.ListField(child=serializers.CharField()),
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
        if down:
            return Response(
                {"status": "unavailable", "checks": checks, "unavailable": down}, status=503
            )
        return Response({"status": "ready", "checks": checks})


# Django-level error pages (outside DRF views) answer in the same JSON shape as the API.


def _json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(status=status, code=code, message=message), status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(400, "bad_request", "Bad request.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(403, "permission_denied", "You do not have permission to do this.")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(404, "not_found", f"No such URL: {request.path}")


def server_error(request: HttpRequest) -> JsonResponse:
    return _json_error(500, "server_error", "Internal server error.")
