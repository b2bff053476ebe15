from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import ErrorResponseSerializer
from rollups.models import RebuildJob
from rollups.serializers import (
    RebuildAcceptedSerializer,
    RebuildJobSerializer,
    RebuildRequestSerializer,
    RollupStatusSerializer,
)
from rollups.services import rebuild_job_create, rollups_status

ERRORS: dict[int, Any] = {401: ErrorResponseSerializer, 403: ErrorResponseSerializer}


class RebuildView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["rollups"],
        summary="Rebuild the summaries of a date range from raw views (staff)",
        description=(
            "Queues a job that recomputes every summary for the UTC days `start_date` to "
            "`end_date` (inclusive; an omitted end = the earliest / latest data). Ingest, absorb "
            "and reads go on; the range switches to the new numbers in one transaction. Follow "
            "the job at `/api/rollups/jobs/{job_id}/`."
        ),
        request=RebuildRequestSerializer,
        responses={
            202: RebuildAcceptedSerializer,
            400: ErrorResponseSerializer,
            **ERRORS,
        },
        examples=[
            OpenApiExample(
                "March 2025",
                value={"start_date": "2025-03-01", "end_date": "2025-03-31"},
                request_only=True,
            ),
            OpenApiExample(
                "queued",
                value={"job_id": "3f1c2a9e-8d4b-4c1e-9a57-0b6f2d7e5c10"},
                response_only=True,
                status_codes=["202"],
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = RebuildRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = rebuild_job_create(
            start_date=serializer.validated_data.get("start_date"),
            end_date=serializer.validated_data.get("end_date"),
            requested_by=request.user,
        )
        return Response({"job_id": str(job.id)}, status=status.HTTP_202_ACCEPTED)


class RebuildJobView(APIView):
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
    permission_classes = [IsAdminUser]

    @extend_schema(
        tags=["rollups"],
        summary="How far the summaries are behind the raw views (staff)",
        responses={200: RollupStatusSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        return Response(RollupStatusSerializer(rollups_status()).data)
