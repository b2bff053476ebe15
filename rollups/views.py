from dataclasses import asdict
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from apikeys.authentication import ApiKeyNotAccepted
from core.serializers import ErrorResponseSerializer
from rollups.audit import audit_latest
from rollups.jobs import rebuild_job_create
from rollups.liveness import absorb_liveness
from rollups.models import RebuildJob
from rollups.selectors import rollups_status
from rollups.serializers import (
    RebuildAcceptedSerializer,
    RebuildJobSerializer,
    RebuildRequestSerializer,
    RollupStatusSerializer,
)

ERRORS: dict[int, Any] = {401: ErrorResponseSerializer, 403: ErrorResponseSerializer}
# A token, or the dashboard's session (same origin; DRF enforces CSRF for it). The token first:
# its 401 (with WWW-Authenticate) answers a request without credentials. An API key is refused
# with a 401 that says so.
AUTHENTICATION = [JWTAuthentication, SessionAuthentication, ApiKeyNotAccepted]


class RebuildView(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["rollups"],
        summary="Rebuild the summaries of a date range from raw views (staff)",
        description=(
            "Queues a job that recomputes every summary for the UTC days `start_date` to "
            "`end_date` (inclusive, within 1900-01-01..2100-12-31; an omitted end = the "
            "earliest / latest data). Ingest, absorb and reads go on; the range switches to the "
            "new numbers in one transaction. Follow the job at `/api/rollups/jobs/{job_id}/`.\n\n"
            "One job per range at a time: while a job of exactly the same range (open ends "
            "included) is queued or running, the request answers 200 with that job "
            "(`created: false`) and queues nothing; while one of an overlapping other range is, "
            "409 `rebuild_overlaps` naming it. A new job answers 202 (`created: true`). If the "
            "task broker cannot take the job, 503 `broker_unavailable`: the job is recorded as "
            "`failed` with the reason, and the request may be repeated once the broker is back."
        ),
        request=RebuildRequestSerializer,
        responses={
            200: RebuildAcceptedSerializer,
            202: RebuildAcceptedSerializer,
            400: ErrorResponseSerializer,
            413: ErrorResponseSerializer,
            **ERRORS,
            409: ErrorResponseSerializer,
            503: ErrorResponseSerializer,
        },
        examples=[
            OpenApiExample(
                "March 2025",
                value={"start_date": "2025-03-01", "end_date": "2025-03-31"},
                request_only=True,
            ),
            OpenApiExample(
                "queued",
                value={
                    "job_id": "3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10",
                    "created": True,
                    "state": "queued",
                },
                response_only=True,
                status_codes=["202"],
            ),
            OpenApiExample(
                "the same range already running",
                value={
                    "job_id": "3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10",
                    "created": False,
                    "state": "running",
                },
                response_only=True,
                status_codes=["200"],
            ),
            OpenApiExample(
                "overlapping job",
                value={
                    "error": {
                        "status": 409,
                        "code": "rebuild_overlaps",
                        "message": "Rebuild job 3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10 "
                        "(2025-03-01..2025-03-31, running) overlaps the requested range. Wait "
                        "until it ends, or request exactly its range to follow it.",
                        "details": [
                            {
                                "field": None,
                                "reason": "overlaps rebuild job "
                                "3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10",
                            }
                        ],
                    }
                },
                response_only=True,
                status_codes=["409"],
            ),
            OpenApiExample(
                "broker unavailable",
                value={
                    "error": {
                        "status": 503,
                        "code": "broker_unavailable",
                        "message": "The task broker is unavailable: rebuild job "
                        "3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10 could not be queued and is marked "
                        "failed. Try again once the broker is back.",
                        "details": [
                            {
                                "field": None,
                                "reason": "OperationalError: Error 111 connecting to "
                                "127.0.0.1:6379. Connection refused.",
                            }
                        ],
                    }
                },
                response_only=True,
                status_codes=["503"],
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = RebuildRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        answer = rebuild_job_create(
            start_date=serializer.validated_data.get("start_date"),
            end_date=serializer.validated_data.get("end_date"),
            requested_by=request.user,
        )
        return Response(
            RebuildAcceptedSerializer(
                {"job_id": answer.job.id, "created": answer.created, "state": answer.job.state}
            ).data,
            status=status.HTTP_202_ACCEPTED if answer.created else status.HTTP_200_OK,
        )


class RebuildJobView(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["rollups"],
        summary="State of a rebuild job (staff)",
        responses={200: RebuildJobSerializer, 404: ErrorResponseSerializer, **ERRORS},
        examples=[
            OpenApiExample(
                "running",
                value={
                    "job_id": "3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10",
                    "state": "running",
                    "start_date": "2025-03-01",
                    "end_date": "2025-03-31",
                    "progress": 0.45,
                    "views_rebuilt": None,
                    "error": "",
                    "created_at": "2025-04-02T10:00:00Z",
                    "started_at": "2025-04-02T10:00:01Z",
                    "finished_at": None,
                    "duration_ms": None,
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = get_object_or_404(RebuildJob, id=job_id)
        return Response(RebuildJobSerializer(job).data)


class RollupStatusView(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["rollups"],
        summary="How far the summaries are behind the raw views (staff)",
        responses={200: RollupStatusSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        status_now = rollups_status()
        return Response(
            RollupStatusSerializer(
                {
                    **asdict(status_now),
                    "absorb_alive": absorb_liveness().alive,
                    "last_audit": audit_latest(),
                }
            ).data
        )
