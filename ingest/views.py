from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import CanIngestViews
from core.serializers import ErrorResponseSerializer
from ingest.serializers import IngestViewsRequestSerializer, IngestViewsResponseSerializer
from ingest.services import views_ingest


class ViewsIngestView(APIView):
    permission_classes = [CanIngestViews]

    @extend_schema(
        tags=["ingest"],
        summary="Record a batch of page views (all or nothing)",
        description=(
            "1 to 10,000 views per batch. If any item is invalid, nothing is stored and the 400 "
            "lists each bad item's index, field and reason. On 202 the views are committed and "
            "every later read counts them. Needs the `ingest.add_blogview` permission or staff."
        ),
        request=IngestViewsRequestSerializer,
        responses={
            202: IngestViewsResponseSerializer,
            400: ErrorResponseSerializer,
            401: ErrorResponseSerializer,
            403: ErrorResponseSerializer,
            413: ErrorResponseSerializer,
        },
        examples=[
            OpenApiExample(
                "two views",
                value={
                    "views": [
                        {"blog_id": 1, "country_code": "us", "viewed_at": "2025-03-01T12:00:00Z"},
                        {"blog_id": 2, "country_code": "ET"},
                    ]
                },
                request_only=True,
            ),
            OpenApiExample(
                "accepted", value={"accepted": 2}, response_only=True, status_codes=["202"]
            ),
            OpenApiExample(
                "a bad item",
                value={
                    "error": {
                        "status": 400,
                        "code": "invalid_views",
                        "message": "1 of 2 views are invalid; nothing was stored.",
                        "details": [
                            {
                                "index": 1,
                                "field": "country_code",
                                "reason": "unknown country code 'XX'",
                            }
                        ],
                    }
                },
                response_only=True,
                status_codes=["400"],
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        accepted = views_ingest(payload=request.data)
        return Response({"accepted": accepted}, status=status.HTTP_202_ACCEPTED)
