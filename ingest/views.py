from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from apikeys.authentication import ApiKeyAuthentication, ApiKeyThrottle
from core.auth import CanIngestViews
from core.exceptions import ApplicationError
from core.metrics import INGEST_BATCHES, INGEST_VIEWS
from core.serializers import ErrorResponseSerializer
from ingest.serializers import IngestViewsRequestSerializer, IngestViewsResponseSerializer
from ingest.services import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PATTERN,
    views_ingest_idempotent,
)

REPLAYED_HEADER = "Idempotent-Replayed"


def _views_sent(request: Request) -> int:
    """How many views a refused body held (0 when it was no list of views, or unparsable)."""
    try:
        data = request.data
    except APIException:
        return 0
    items = data.get("views") if isinstance(data, dict) else None
    return len(items) if isinstance(items, list) else 0


class ViewsIngestView(APIView):
    # A token, or an API key with the ingest scope (throttled per key).
    authentication_classes = [JWTAuthentication, ApiKeyAuthentication]
    permission_classes = [CanIngestViews]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(
        tags=["ingest"],
        summary="Record a batch of page views (all or nothing)",
        description=(
            "1 to 10,000 views per batch. If any item is invalid, nothing is stored and the 400 "
            "lists each bad item's index, field and reason. On 202 the views are committed and "
            "every later read counts them. Needs the `ingest.add_blogview` permission or staff.\n\n"
            f"Send an `{IDEMPOTENCY_HEADER}` to make retries safe: a retry with the same key and "
            "the same body within 24 hours gets the first answer again (with "
            f"`{REPLAYED_HEADER}: true`) and stores nothing; the same key with a different body "
            "is a 409. Keys are per user (an API key's: the user it acts for). A request that "
            "was a 400 stores no key.\n\n"
            "With an API key (`Authorization: Api-Key <secret>`): the key needs the `ingest` "
            "scope (else 403) and its user the ingest permission; requests are throttled per "
            "key (`API_KEY_THROTTLE`, 429 with `Retry-After`)."
        ),
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
                    "pattern": f"^{IDEMPOTENCY_KEY_PATTERN.pattern}$",
                },
                OpenApiParameter.HEADER,
                required=False,
                description=(
                    f"A key you choose per logical request (1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
                    "printable ASCII characters, e.g. a UUID); reuse it only to retry that "
                    "request."
                ),
            ),
            OpenApiParameter(
                REPLAYED_HEADER,
                str,
                OpenApiParameter.HEADER,
                enum=["true"],
                response=[202],
                description=(
                    f"Present (`true`) when the answer replays the first answer to this "
                    f"`{IDEMPOTENCY_HEADER}`: nothing was stored by this request."
                ),
            ),
        ],
        request=IngestViewsRequestSerializer,
        responses={
            202: IngestViewsResponseSerializer,
            400: ErrorResponseSerializer,
            401: ErrorResponseSerializer,
            403: ErrorResponseSerializer,
            409: ErrorResponseSerializer,
            413: ErrorResponseSerializer,
            429: ErrorResponseSerializer,
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
            OpenApiExample(
                "a key reused for another body",
                value={
                    "error": {
                        "status": 409,
                        "code": "idempotency_key_reused",
                        "message": (
                            f"This {IDEMPOTENCY_HEADER} was used in the last 24 hours for a "
                            "different body; send a new key with a new request."
                        ),
                        "details": [
                            {"field": IDEMPOTENCY_HEADER, "reason": "used for a different body"}
                        ],
                    }
                },
                response_only=True,
                status_codes=["409"],
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        # CanIngestViews admits signed-in users only, so there is a user to scope keys to.
        assert request.user.pk is not None
        try:
            answer = views_ingest_idempotent(
                payload=request.data,
                user_id=request.user.pk,
                idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            )
        except (ApplicationError, APIException):
            # Whatever refused the batch (a bad body or key, a reused key, unparsable JSON):
            # nothing was stored.
            INGEST_BATCHES.labels("refused").inc()
            INGEST_VIEWS.labels("refused").inc(_views_sent(request))
            raise
        if answer.replayed:
            INGEST_BATCHES.labels("replayed").inc()
        else:
            INGEST_BATCHES.labels("accepted").inc()
            INGEST_VIEWS.labels("accepted").inc(answer.body["accepted"])
        response = Response(answer.body, status=answer.status)
        if answer.replayed:
            response[REPLAYED_HEADER] = "true"
        return response
