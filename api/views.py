from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from django.conf import settings
from django.http import HttpResponseNotModified, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import resolve, reverse
from django.utils.cache import patch_vary_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import selectors
from api.caching import (
    Answered,
    AnsweredJSONRenderer,
    answer_cached,
    answer_digest,
    answer_etag,
    etag_matches,
    realtime_cached,
)
from api.exports import CSV_MEDIA_TYPE, CSVRenderer, csv_chunks, csv_filename, kept_chunks
from api.permissions import (
    AnalyticsAnonThrottle,
    AnalyticsReadPermission,
    AnalyticsUserThrottle,
    CountedWithLookup,
    spec_for_reader,
)
from api.serializers import (
    COMPARED,
    ApiRootSerializer,
    AuthorResponseSerializer,
    AuthorRowSerializer,
    BlogResponseSerializer,
    BlogRowSerializer,
    CountryResponseSerializer,
    CountryRowSerializer,
    GroupedRequestSerializer,
    PerformanceRequestSerializer,
    PerformanceResponseSerializer,
    PerformanceRowSerializer,
    RealtimeRequestSerializer,
    RealtimeResponseSerializer,
    TopRequestSerializer,
)
from api.spec import (
    FILTER_FIELDS,
    FORMAT_PARAMETER,
    GROUPED,
    PERFORMANCE,
    REALTIME,
    REALTIME_FILTERS,
    TOP,
    Extra,
    Spec,
    query_payload,
    spec_parse,
)
from apikeys.authentication import ApiKeyAuthentication, ApiKeyThrottle
from core.auth import ReadTokenAuthentication
from core.exceptions import ApplicationError
from core.serializers import ErrorResponseSerializer

ERRORS: dict[int, Any] = {
    400: ErrorResponseSerializer,
    401: ErrorResponseSerializer,
    403: ErrorResponseSerializer,
    406: ErrorResponseSerializer,
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


class AnalyticsNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, with an unknown ``format`` a 400 naming it (DRF answers 404)."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> Any:
        renderers = list(renderers)
        wanted = request.query_params.get(FORMAT_PARAMETER)
        formats = [str(renderer.format) for renderer in renderers]
        if wanted is not None and wanted not in formats:
            raise ApplicationError(
                f"Invalid format: {wanted!r}; use one of: {', '.join(formats)}.",
                details=[
                    {"field": FORMAT_PARAMETER, "reason": f"must be one of: {', '.join(formats)}"}
                ],
            )
        return super().select_renderer(request, renderers, format_suffix)


class AnalyticsView(CountedWithLookup):
    """Parse the filters (a JSON body, or a GET query string), answer from the cache or the
    planner (the throttles counted in the cache lookup's round trip), return results and meta
    as JSON or CSV."""

    # The token first: its 401 (with WWW-Authenticate) answers a request without credentials.
    # An API key with the read scope (apikeys). The session is the dashboard's (same origin;
    # DRF enforces CSRF for it).
    authentication_classes = [ReadTokenAuthentication, ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [AnalyticsReadPermission]
    throttle_classes = [AnalyticsUserThrottle, AnalyticsAnonThrottle, ApiKeyThrottle]
    renderer_classes = [AnsweredJSONRenderer, CSVRenderer]
    content_negotiation_class = AnalyticsNegotiation
    endpoint: ClassVar[str]
    extras: ClassVar[tuple[Extra, ...]]
    selector: ClassVar[Callable[..., selectors.Answer]]
    row: ClassVar[type[serializers.Serializer]]

    def post(self, request: Request) -> HttpResponseBase:
        # Filters in the query string of a POST would be ignored: the answer would be to
        # another question than the one sent.
        stray = sorted(set(request.query_params) - {FORMAT_PARAMETER})
        if stray:
            raise ApplicationError(
                f"Invalid query parameters: {', '.join(stray)} (a POST takes its filters in the "
                "body; only format may be in the query string).",
                details=[{"field": name, "reason": "unknown query parameter"} for name in stray],
            )
        spec = spec_for_reader(
            request=request, spec=spec_parse(payload=request.data, extras=self.extras)
        )
        return self._answer(request, spec, self._answered(request, spec))

    def get(self, request: Request) -> HttpResponseBase:
        """The same question as a query string; with ``ETag`` and ``Cache-Control``, and 304
        when ``If-None-Match`` names the answer's ETag."""
        payload = query_payload(query=dict(request.query_params.lists()), extras=self.extras)
        spec = spec_for_reader(
            request=request, spec=spec_parse(payload=payload, extras=self.extras)
        )
        answered = self._answered(request, spec, tagged=True)
        digest = answered.digest or answer_digest(endpoint=self.endpoint, body=answered.body)
        headers = {
            "ETag": answer_etag(digest=digest, media_type=request.accepted_media_type),
            "Cache-Control": f"private, max-age={settings.ANALYTICS_CACHE_SECONDS}",
        }
        if etag_matches(request.headers.get("If-None-Match"), headers["ETag"]):
            response: HttpResponseBase = HttpResponseNotModified(headers=headers)
        else:
            response = self._answer(request, spec, answered, headers)
        patch_vary_headers(response, ["Accept"])
        return response

    def _answered(self, request: Request, spec: Spec, *, tagged: bool = False) -> Answered:
        """The answer (``answer_cached``), stored with its digest when ``tagged`` (a GET: its
        ETag) and with its CSV when the request asks for CSV."""
        bypass = "no-cache" in request.headers.get("Cache-Control", "").lower()
        select = type(self).selector
        return answer_cached(
            endpoint=self.endpoint,
            spec=spec,
            compute=lambda: select(spec=spec),
            bypass=bypass,
            counts=self.counts_take(),
            tagged=tagged,
            csv_columns=self._csv_columns(spec) if self._wants_csv(request) else None,
        )

    @staticmethod
    def _wants_csv(request: Request) -> bool:
        return request.accepted_renderer.format == CSVRenderer.format

    def _csv_columns(self, spec: Spec) -> list[str]:
        """The CSV's columns: the row's fields, ``previous_views`` and ``change_pct`` last and
        only with a comparison."""
        fields: list[str] = list(self.row().fields)
        columns = [name for name in fields if name not in COMPARED]
        return columns + (list(COMPARED) if spec.compare else [])

    def _answer(
        self,
        request: Request,
        spec: Spec,
        answered: Answered,
        headers: dict[str, str] | None = None,
    ) -> HttpResponseBase:
        """The answer as JSON, or its rows as streamed CSV (a header line, then one per row;
        as the cache kept them, when it did)."""
        if not self._wants_csv(request):
            return Response(answered, headers=headers)
        kept = answered.csv
        response = StreamingHttpResponse(
            csv_chunks(self._csv_columns(spec), answered.body["results"])
            if kept is None
            else kept_chunks(kept),
            content_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
            headers=headers,
        )
        response["Content-Disposition"] = (
            f'attachment; filename="{csv_filename(self.endpoint, spec)}"'
        )
        return response

    def handle_exception(self, exc: Exception) -> Response:
        # Errors stay JSON, whatever format the request asked for.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


JSON = JSONRenderer.media_type
GET_TEXT = (
    " GET takes the same fields as query parameters (lists comma-separated or repeated: "
    "`country_codes=US,DE`), validated by the same rules (the same 400s), and gives the same "
    "answer, with a weak `ETag` (of the rows, filters and totals, not of `as_of`/`cached`) and "
    "`Cache-Control: private, max-age=ANALYTICS_CACHE_SECONDS`; `If-None-Match` with that ETag "
    "gives a 304 without a body."
)
CSV_TEXT = (
    " `Accept: text/csv` (or `format=csv`) gives the rows as CSV: a header line, numbers "
    "unquoted, texts quoted, a text starting with = + - @ tab or CR prefixed with ' (OWASP), "
    "null as an empty cell; `Content-Disposition` names a file. Errors stay JSON."
)
GET_HEADERS = [
    OpenApiParameter(
        "ETag",
        location=OpenApiParameter.HEADER,
        response=[200, 304],
        description="Weak validator of the answer's content; send it back in If-None-Match.",
    ),
    OpenApiParameter(
        "Cache-Control",
        location=OpenApiParameter.HEADER,
        response=[200, 304],
        description="private, max-age=ANALYTICS_CACHE_SECONDS",
    ),
]
FORMAT_JSON = OpenApiParameter(
    FORMAT_PARAMETER, enum=["json"], description="The answer's format: JSON only."
)
FORMAT = OpenApiParameter(
    FORMAT_PARAMETER,
    enum=["json", "csv"],
    description="The answer's format (instead of an Accept header); csv: the rows as CSV.",
)


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
        "compare": None,
    }
    if "period_start" in row:
        meta |= {"granularity": "week", "granularity_auto": False}
    answers = {
        (200, JSON): response,
        (200, CSV_MEDIA_TYPE): OpenApiTypes.STR,
        **{(code, JSON): error for code, error in ERRORS.items()},
    }
    answer_example = OpenApiExample(
        "answer", value={"results": [row], "meta": meta}, response_only=True, status_codes=["200"]
    )
    return extend_schema_view(
        post=extend_schema(
            tags=["analytics"],
            summary=summary,
            description=description + CSV_TEXT + NO_CACHE + TIMEOUT,
            request=request,
            responses=answers,
            examples=[
                OpenApiExample("example", value=example, request_only=True),
                answer_example,
            ],
        ),
        get=extend_schema(
            tags=["analytics"],
            summary=f"{summary} (GET)",
            description=description + GET_TEXT + CSV_TEXT + NO_CACHE + TIMEOUT,
            parameters=[request, FORMAT, *GET_HEADERS],
            responses={
                **answers,
                304: OpenApiResponse(description="Not modified: If-None-Match names the ETag."),
            },
            examples=[answer_example],
        ),
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
    """Views and distinct blogs per country, paged (POST a JSON body, or GET a query string)."""

    endpoint = "blog-views/country"
    extras = GROUPED
    selector = staticmethod(selectors.country_breakdown)
    row = CountryRowSerializer


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
    """Views and distinct blogs per author, paged (POST a JSON body, or GET a query string)."""

    endpoint = "blog-views/user"
    extras = GROUPED
    selector = staticmethod(selectors.author_breakdown)
    row = AuthorRowSerializer


@_schema(
    summary="Top blogs",
    description="The `limit` (default 10) most viewed blogs; ties broken by blog_id.",
    request=TopRequestSerializer,
    response=BlogResponseSerializer,
    example={},
    row={"blog_id": 4, "title": "Notes on caching", "username": "ada", "views": 3416},
)
class TopBlogsView(AnalyticsView):
    """Top blogs by views (POST a JSON body, or GET a query string)."""

    endpoint = "top/blog"
    extras = TOP
    selector = staticmethod(selectors.top_blogs)
    row = BlogRowSerializer


@_schema(
    summary="Top authors",
    description="The `limit` (default 10) most viewed authors; ties broken by username.",
    request=TopRequestSerializer,
    response=AuthorResponseSerializer,
    example={"year": 2025, "limit": 5},
    row=AUTHOR_ROW,
)
class TopAuthorsView(AnalyticsView):
    """Top authors by views (POST a JSON body, or GET a query string)."""

    endpoint = "top/user"
    extras = TOP
    selector = staticmethod(selectors.author_breakdown)
    row = AuthorRowSerializer


@_schema(
    summary="Top countries",
    description="The `limit` (default 10) most viewed countries; ties broken by country_code.",
    request=TopRequestSerializer,
    response=CountryResponseSerializer,
    example={"author_username": "ada"},
    row=COUNTRY_ROW,
)
class TopCountriesView(AnalyticsView):
    """Top countries by views (POST a JSON body, or GET a query string)."""

    endpoint = "top/country"
    extras = TOP
    selector = staticmethod(selectors.country_breakdown)
    row = CountryRowSerializer


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
    """Views per period, with growth (POST a JSON body, or GET a query string)."""

    endpoint = "performance"
    extras = PERFORMANCE
    selector = staticmethod(selectors.views_performance)
    row = PerformanceRowSerializer


class UnknownTypeView(APIView):
    """``blog-views/<x>/`` and ``top/<x>/`` for an ``x`` that does not exist: 404 naming the
    ones that do."""

    permission_classes = [AllowAny]
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "object_type": ("country", "user"),
        "top_type": ("blog", "user", "country"),
    }

    @extend_schema(exclude=True)
    def get(self, request: Request, **kwargs: str) -> Response:
        return self.post(request, **kwargs)

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


class RealtimeView(CountedWithLookup):
    """Views of the last 5 and 30 minutes, per minute, with the top blogs and countries (GET;
    the throttles counted in the cache lookup's round trip)."""

    authentication_classes = AnalyticsView.authentication_classes
    permission_classes = AnalyticsView.permission_classes
    throttle_classes = AnalyticsView.throttle_classes
    content_negotiation_class = AnalyticsNegotiation

    @extend_schema(
        tags=["analytics"],
        summary="Views of the last 5 and 30 minutes, per minute, with the top blogs and countries",
        description=(
            "The views whose viewed_at lies in the last 30 UTC minutes (the current minute, so "
            "far, and the 29 before it), per minute, oldest first, every minute listed; "
            "`views_last_5_minutes` sums the last 5 of them. `top_blogs` and `top_countries`: "
            "the `limit` (default 10) most viewed of the window, ties by blog_id / country_code. "
            "Exact at `as_of`: every view committed before it counts, absorbed by a rollup or "
            "not, late ones included once they arrive; a view dated after the current minute "
            "counts once its minute has come. Read from per-minute summaries of the last hour "
            "plus the views not absorbed yet; the answer may come from "
            "a cache at most `REALTIME_CACHE_SECONDS` (5) old (`meta.cached`; "
            "`Cache-Control: no-cache` skips it). Filters: country_codes, exclude_country_codes, "
            "author_username (dates are a 400: the window is fixed). JSON only."
        ),
        parameters=[
            RealtimeRequestSerializer,
            FORMAT_JSON,
            OpenApiParameter(
                "Cache-Control",
                location=OpenApiParameter.HEADER,
                response=[200],
                description="private, max-age=REALTIME_CACHE_SECONDS",
            ),
        ],
        responses={200: RealtimeResponseSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        payload = query_payload(query=dict(request.query_params.lists()), extras=REALTIME)
        # An API key restricted to an author sees that author's views only, here too.
        spec = spec_for_reader(
            request=request,
            spec=spec_parse(payload=payload, extras=REALTIME, filters=REALTIME_FILTERS),
        )
        body = realtime_cached(
            spec=spec,
            compute=lambda: selectors.views_realtime(spec=spec),
            bypass="no-cache" in request.headers.get("Cache-Control", "").lower(),
            counts=self.counts_take(),
        )
        seconds = settings.REALTIME_CACHE_SECONDS
        return Response(body, headers={"Cache-Control": f"private, max-age={seconds}"})


ENDPOINTS = (
    ("analytics-country", "Views and distinct blogs per country (paged)."),
    ("analytics-user", "Views and distinct blogs per author (paged)."),
    ("analytics-top-blog", "Top blogs by views."),
    ("analytics-top-user", "Top authors by views."),
    ("analytics-top-country", "Top countries by views."),
    ("analytics-performance", "Views per day/week/month/year with growth against the previous."),
    (
        "analytics-realtime",
        "Views of the last 5 and 30 minutes, per minute, with the top blogs and countries.",
    ),
)


def _methods(url: str) -> list[str]:
    """The methods the view at ``url`` answers, as its ``Allow`` header lists them, less HEAD
    and OPTIONS (which every view answers): read from the view, so that the root cannot list
    other methods than the view takes."""
    view = resolve(url).func.cls  # type: ignore[attr-defined]
    return [
        method.upper()
        for method in view.http_method_names
        if method not in ("head", "options") and hasattr(view, method)
    ]


class ApiRootView(APIView):
    """The analytics endpoints, with the methods each takes, its URL and a line about it."""

    permission_classes = [AllowAny]

    @extend_schema(
        tags=["analytics"],
        summary="The analytics endpoints",
        description=(
            "Each endpoint but realtime takes POST with a JSON body of filters, or GET with them "
            "as query parameters; realtime takes GET. `methods` lists what each takes (besides "
            "HEAD and OPTIONS). See each one's schema."
        ),
        responses={200: ApiRootSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "endpoints": [
                    {
                        "name": name.removeprefix("analytics-"),
                        "methods": _methods(reverse(name)),
                        "url": request.build_absolute_uri(reverse(name)),
                        "description": description,
                    }
                    for name, description in ENDPOINTS
                ]
            }
        )
