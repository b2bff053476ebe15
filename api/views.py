from collections.abc import Callable
from typing import Any, ClassVar

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import selectors
from api.caching import answer_cached
from api.permissions import (
    AnalyticsAnonThrottle,
    AnalyticsReadPermission,
    AnalyticsUserThrottle,
    spec_for_reader,
)
from api.serializers import (
    ApiRootSerializer,
    AuthorResponseSerializer,
    BlogResponseSerializer,
    CountryResponseSerializer,
    GroupedRequestSerializer,
    PerformanceRequestSerializer,
    PerformanceResponseSerializer,
    TopRequestSerializer,
)
from api.spec import FILTER_FIELDS, GROUPED, PERFORMANCE, TOP, Extra, spec_parse
from apikeys.authentication import ApiKeyAuthentication, ApiKeyThrottle
from core.auth import ReadTokenAuthentication
from core.exceptions import ApplicationError
from core.serializers import ErrorResponseSerializer

ERRORS: dict[int, Any] = {
    400: ErrorResponseSerializer,
    401: ErrorResponseSerializer,
    403: ErrorResponseSerializer,
    413: ErrorResponseSerializer,
    429: ErrorResponseSerializer,
    503: ErrorResponseSerializer,
}
NO_CACHE = (
    " Answers may come from a cache at most `ANALYTICS_CACHE_SECONDS` old; send "
    "`Cache-Control: no-cache` for an answer that counts every view committed before it."
)
TIMEOUT = (
    " A query that runs longer than `ANALYTICS_STATEMENT_TIMEOUT_MS` is stopped: 503 "
    "`query_timeout` (try again later or narrow the question)."
)


class AnalyticsView(APIView):
    """Parse the filters, answer from the cache or the planner, return results and meta."""

    # The token first: its 401 (with WWW-Authenticate) answers a request without credentials.
    # An API key with the read scope (apikeys). The session is the dashboard's (same origin;
    # DRF enforces CSRF for it).
    authentication_classes = [ReadTokenAuthentication, ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [AnalyticsReadPermission]
    throttle_classes = [AnalyticsUserThrottle, AnalyticsAnonThrottle, ApiKeyThrottle]
    endpoint: ClassVar[str]
    extras: ClassVar[tuple[Extra, ...]]
    selector: ClassVar[Callable[..., selectors.Answer]]

    def post(self, request: Request) -> Response:
        spec = spec_for_reader(
            request=request, spec=spec_parse(payload=request.data, extras=self.extras)
        )
        bypass = "no-cache" in request.headers.get("Cache-Control", "").lower()
        select = type(self).selector
        body = answer_cached(
            endpoint=self.endpoint, spec=spec, compute=lambda: select(spec=spec), bypass=bypass
        )
        return Response(body)


def _schema(
    *,
    summary: str,
    description: str,
    request: Any,
    response: Any,
    example: dict[str, Any],
    row: dict[str, Any],
) -> Any:
    meta = {
        "filters": {field: example.get(field) for field in FILTER_FIELDS},
        "total": 1,
        "as_of": "2025-04-02T10:00:00Z",
        "cached": False,
    }
    if "period_start" in row:
        meta |= {"granularity": "week", "granularity_auto": False}
    return extend_schema_view(
        post=extend_schema(
            tags=["analytics"],
            summary=summary,
            description=description + NO_CACHE + TIMEOUT,
            request=request,
            responses={200: response, **ERRORS},
            examples=[
                OpenApiExample("example", value=example, request_only=True),
                OpenApiExample(
                    "answer",
                    value={"results": [row], "meta": meta},
                    response_only=True,
                    status_codes=["200"],
                ),
            ],
        )
    )


COUNTRY_ROW = {"country_code": "IN", "country_name": "India", "blogs": 114, "views": 1259}
AUTHOR_ROW = {"username": "ada", "blogs": 6, "views": 3486}


@_schema(
    summary="Views and blogs per country",
    description=(
        "One row per country with matching views: `views`, and `blogs` = distinct blogs with a "
        "matching view. Ordered by views desc, then country_code. Paged with limit/offset."
    ),
    request=GroupedRequestSerializer,
    response=CountryResponseSerializer,
    example={"year": 2024, "exclude_country_codes": ["US"]},
    row=COUNTRY_ROW,
)
class CountryBreakdownView(AnalyticsView):
    endpoint = "blog-views/country"
    extras = GROUPED
    selector = staticmethod(selectors.country_breakdown)


@_schema(
    summary="Views and blogs per author",
    description=(
        "One row per author with matching views. Ordered by views desc, then username. Paged."
    ),
    request=GroupedRequestSerializer,
    response=AuthorResponseSerializer,
    example={"start_date": "2025-01-01", "end_date": "2025-03-31", "country_codes": ["us", "ET"]},
    row=AUTHOR_ROW,
)
class AuthorBreakdownView(AnalyticsView):
    endpoint = "blog-views/user"
    extras = GROUPED
    selector = staticmethod(selectors.author_breakdown)


@_schema(
    summary="Top blogs",
    description="The `limit` (default 10) most viewed blogs; ties broken by blog_id.",
    request=TopRequestSerializer,
    response=BlogResponseSerializer,
    example={},
    row={"blog_id": 4, "title": "Notes on caching", "username": "ada", "views": 3416},
)
class TopBlogsView(AnalyticsView):
    endpoint = "top/blog"
    extras = TOP
    selector = staticmethod(selectors.top_blogs)


@_schema(
    summary="Top authors",
    description="The `limit` (default 10) most viewed authors; ties broken by username.",
    request=TopRequestSerializer,
    response=AuthorResponseSerializer,
    example={"year": 2025, "limit": 5},
    row=AUTHOR_ROW,
)
class TopAuthorsView(AnalyticsView):
    endpoint = "top/user"
    extras = TOP
    selector = staticmethod(selectors.author_breakdown)


@_schema(
    summary="Top countries",
    description="The `limit` (default 10) most viewed countries; ties broken by country_code.",
    request=TopRequestSerializer,
    response=CountryResponseSerializer,
    example={"author_username": "ada"},
    row=COUNTRY_ROW,
)
class TopCountriesView(AnalyticsView):
    endpoint = "top/country"
    extras = TOP
    selector = staticmethod(selectors.country_breakdown)


@_schema(
    summary="Views over time, with period-over-period growth",
    description=(
        "Calendar buckets (ISO weeks start on Monday) over the filter's range, the first and last "
        "clipped to it; every bucket appears, zero-view ones included. An open start is the day of "
        "the earliest matching view, an open end is today. `compare_period` sets the bucket size, "
        "else it is automatic (<= 31 days: day, <= 180 days: week, else month, or year where "
        "month would give more than 1,000 buckets). An explicit `compare_period` giving more than "
        "1,000 buckets is a 400. `growth_pct` compares with the previous row (null first and "
        "after a 0-view row); `blogs_created` counts blogs created in the bucket (by the author, "
        "if given; country filters do not apply to it)."
    ),
    request=PerformanceRequestSerializer,
    response=PerformanceResponseSerializer,
    example={"year": 2023, "compare_period": "week"},
    row={
        "period_start": "2023-03-06",
        "period_end": "2023-03-12",
        "label": "2023-W10",
        "blogs_created": 2,
        "views": 1310,
        "growth_pct": 4.55,
    },
)
class PerformanceView(AnalyticsView):
    endpoint = "performance"
    extras = PERFORMANCE
    selector = staticmethod(selectors.views_performance)


class UnknownTypeView(APIView):
    """``blog-views/<x>/`` and ``top/<x>/`` for an ``x`` that does not exist: 404 naming the
    ones that do."""

    permission_classes = [AllowAny]
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "object_type": ("country", "user"),
        "top_type": ("blog", "user", "country"),
    }

    @extend_schema(exclude=True)
    def post(self, request: Request, **kwargs: str) -> Response:
        ((name, value),) = kwargs.items()
        valid = self.choices[name]
        raise ApplicationError(
            f"Unknown {name} '{value}'; use one of: {', '.join(valid)}.",
            status=status.HTTP_404_NOT_FOUND,
            code="not_found",
            details=[{"field": name, "reason": f"must be one of: {', '.join(valid)}"}],
        )


ENDPOINTS = (
    ("analytics-country", "Views and distinct blogs per country (paged)."),
    ("analytics-user", "Views and distinct blogs per author (paged)."),
    ("analytics-top-blog", "Top blogs by views."),
    ("analytics-top-user", "Top authors by views."),
    ("analytics-top-country", "Top countries by views."),
    ("analytics-performance", "Views per day/week/month/year with growth against the previous."),
)


class ApiRootView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["analytics"],
        summary="The analytics endpoints",
        description="Each endpoint takes POST with a JSON body of filters; see its schema.",
        responses={200: ApiRootSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "endpoints": [
                    {
                        "name": name.removeprefix("analytics-"),
                        "method": "POST",
                        "url": request.build_absolute_uri(reverse(name)),
                        "description": description,
                    }
                    for name, description in ENDPOINTS
                ]
            }
        )
