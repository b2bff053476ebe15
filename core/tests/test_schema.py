"""The OpenAPI document and the two documentation pages, served without any third-party host."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def schema(api_client: APIClient) -> dict[str, Any]:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    document: dict[str, Any] = json.loads(response.content)
    return document


def _has_example(operation: dict[str, Any]) -> bool:
    bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
    return any(
        "examples" in media or "example" in media
        for body in bodies
        for media in body.get("content", {}).values()
    )


def _responses_described(operation: dict[str, Any]) -> bool:
    return bool(operation["responses"]) and all(
        response.get("description") or response.get("content")
        for response in operation["responses"].values()
    )


def test_schema_generates_without_warnings(tmp_path: Path) -> None:
    target = tmp_path / "schema.yaml"

    # --fail-on-warn turns every warning and error of the generator into a failure.
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(target))

    assert target.read_text().startswith("openapi: 3.")


def test_schema_endpoint_serves_the_document(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Blog-views analytics API"
    assert {"/api/token/", "/api/token/refresh/", "/api/ingest/views/"} <= set(schema["paths"])
    assert {"/healthz", "/readyz"} <= set(schema["paths"])


def test_every_path_documents_an_example_or_its_responses(schema: dict[str, Any]) -> None:
    undocumented = []
    for path, item in schema["paths"].items():
        operations = [item[method] for method in HTTP_METHODS & set(item)]
        if not any(_has_example(op) or _responses_described(op) for op in operations):
            undocumented.append(path)

    assert schema["paths"]
    assert undocumented == []


def test_every_operation_has_a_summary_and_a_tag(schema: dict[str, Any]) -> None:
    for path, item in schema["paths"].items():
        for method in HTTP_METHODS & set(item):
            assert item[method].get("summary"), f"{method.upper()} {path} has no summary"
            assert item[method].get("tags"), f"{method.upper()} {path} has no tag"


def test_ingest_documents_its_error_answers_in_the_standard_shape(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/api/ingest/views/"]["post"]["responses"]

    assert {"202", "400", "401", "403"} <= set(responses)
    for status in ("400", "401", "403"):
        body = responses[status]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorResponse"}


def test_ingest_requires_a_bearer_token_and_health_does_not(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"
    assert schema["paths"]["/api/ingest/views/"]["post"]["security"] == [
        {"jwtAuth": []},
        {"apiKeyAuth": []},
    ]
    # No credentials needed ([], not [{}], which client generators read as "authenticated").
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    # Anyone may probe readiness; staff may sign in to see the errors (said in its text).
    assert schema["paths"]["/readyz"]["get"]["security"] == []
    assert "Bearer" in schema["paths"]["/readyz"]["get"]["description"]
    for path in ("/api/analytics/", "/api/token/", "/api/token/refresh/"):
        assert schema["paths"][path][next(iter(schema["paths"][path]))]["security"] == []


@pytest.mark.parametrize("url", ["/swagger/", "/redoc/"])
def test_documentation_page_is_served_from_this_site_only(api_client: APIClient, url: str) -> None:
    response = api_client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    for external in ("cdn.", "jsdelivr", "unpkg", "googleapis", "gstatic"):
        assert external not in html
    references = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert references
    assert [ref for ref in references if not ref.startswith(("/", "data:"))] == []
    # Every asset the page loads ships with the project (drf-spectacular-sidecar).
    static = [ref.removeprefix("/static/") for ref in references if ref.startswith("/static/")]
    assert static
    assert [path for path in static if finders.find(path) is None] == []
    assert "/api/schema/" in html


@pytest.mark.parametrize("public", [False, True])
def test_analytics_reads_need_a_token_in_the_schema_unless_public(
    api_client: APIClient, settings: Any, public: bool
) -> None:
    settings.ANALYTICS_PUBLIC_READ = public
    document = json.loads(api_client.get("/api/schema/", {"format": "json"}).content)
    security = document["paths"]["/api/analytics/top/blog/"]["post"]["security"]
    assert ({} in security) is public
    assert {"jwtReadAuth": []} in security
    assert {"apiKeyAuth": []} in security
    assert {} not in document["paths"]["/api/ingest/views/"]["post"]["security"]


def test_api_keys_are_a_security_scheme_of_reads_and_ingest_only(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["apiKeyAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "Api-Key <secret>" in scheme["description"]
    with_key = sorted(
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in HTTP_METHODS and {"apiKeyAuth": []} in operation.get("security", [])
    )
    reads = [
        "/api/analytics/blog-views/country/",
        "/api/analytics/blog-views/user/",
        "/api/analytics/performance/",
        "/api/analytics/top/blog/",
        "/api/analytics/top/country/",
        "/api/analytics/top/user/",
    ]
    assert with_key == sorted(
        [
            *(f"{method} {path}" for path in reads for method in ("GET", "POST")),
            "GET /api/analytics/realtime/",
            "POST /api/ingest/views/",
        ]
    )


@pytest.mark.parametrize("version", ["\x01", "\n", '"; x="y'])
def test_the_version_query_parameter_does_not_reach_the_headers(
    api_client: APIClient, version: str
) -> None:
    response = api_client.get("/api/schema/", {"version": version})
    assert response.status_code == 200
    assert (
        response["Content-Disposition"]
        == 'inline; filename="Blog-views analytics API (1.0.0).yaml"'
    )


def test_every_operation_taking_a_body_documents_413(schema: dict[str, Any]) -> None:
    taking = [
        (path, method)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in HTTP_METHODS and "requestBody" in operation
    ]
    assert len(taking) >= 9
    for path, method in taking:
        assert "413" in schema["paths"][path][method]["responses"], (path, method)


def test_free_form_fields_carry_their_bounds(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for name in ("GroupedRequest", "TopRequest", "PerformanceRequest"):
        assert components[name]["properties"]["author_username"]["maxLength"] == 150, name
    assert components["GroupedRequest"]["properties"]["offset"]["maximum"] == 1_000_000


def test_request_components_are_named_once_request(schema: dict[str, Any]) -> None:
    names = set(schema["components"]["schemas"])
    assert {"GroupedRequest", "TopRequest", "PerformanceRequest", "RebuildRequest"} <= names
    assert {"IngestViewsRequest", "TokenObtainPairRequest"} <= names
    assert [name for name in names if name.endswith("RequestRequest")] == []


def test_a_rebuild_job_answer_requires_every_field(schema: dict[str, Any]) -> None:
    job = schema["components"]["schemas"]["RebuildJob"]
    assert sorted(job["required"]) == sorted(job["properties"])
    # Present but null until the job gets there.
    assert job["properties"]["finished_at"]["nullable"] is True


def test_every_response_component_requires_its_fields(schema: dict[str, Any]) -> None:
    # Answers always carry every field (null where there is no value): generated clients then
    # type them as present. Only an error detail's "index" (batch items only) and the rows'
    # comparison fields (with compare only) may be missing.
    optional = {
        name: sorted(set(component.get("properties", {})) - set(component.get("required", [])))
        for name, component in schema["components"]["schemas"].items()
        if component.get("type") == "object" and not name.endswith("Request")
    }
    assert {name: fields for name, fields in optional.items() if fields} == {
        "ErrorDetail": ["index"],
        # Rows gain these two only when the request asks for compare.
        **{
            row: ["change_pct", "previous_views"]
            for row in ("AuthorRow", "BlogRow", "CountryRow", "PerformanceRow")
        },
    }


def test_free_form_request_strings_state_that_they_hold_no_nul(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for name, field in [
        ("TopRequest", "author_username"),
        ("TokenObtainPairRequest", "username"),
        ("TokenRefreshRequest", "refresh"),
    ]:
        pattern = components[name]["properties"][field]["pattern"]
        assert re.fullmatch(pattern, "ada") and not re.fullmatch(pattern, "a\x00da"), name
    # Strings with a pattern or a format of their own keep it.
    assert components["IngestViewItemRequest"]["properties"]["country_code"]["pattern"] == (
        "^[A-Za-z]{2}$"
    )
