"""OpenAPI generation: say in the schema what the API enforces, in shapes client generators
take as meant (openapi-python-client is run over it in core/tests/test_generated_client.py)."""

from typing import Any, Literal

from django.conf import settings
from drf_spectacular import openapi
from rest_framework.permissions import AllowAny
from rest_framework.serializers import Serializer


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, with two rules of this API:

    - An operation anyone may call (``AllowAny``: health, readiness, the API root) needs no
      credentials: ``security: []``, not ``[{}]`` alongside the optional schemes, which
      generators read as "needs an authenticated client". What a token changes there (the
      readiness errors for staff) is in the operation's description.
    - A request serializer already named ``...RequestSerializer`` gives the component
      ``...Request``, not ``...RequestRequest`` (``COMPONENT_SPLIT_REQUEST`` appends
      ``Request`` to request components).
    """

    def get_auth(self) -> list[dict[str, list[str]]]:
        if any(isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            return []
        auth: list[dict[str, list[str]]] = super().get_auth()
        return auth

    def get_serializer_name(
        self, serializer: Serializer[Any], direction: Literal["request", "response"]
    ) -> str:
        name: str = super().get_serializer_name(serializer, direction)
        if direction == "request" and name.endswith("RequestSerializer"):
            name = name.removesuffix("RequestSerializer") + "Serializer"
        return name


# Every JSON string the API takes refuses a NUL character (the database cannot hold one):
# core.parsers answers 400 naming the field.
NO_NUL_PATTERN = "^[^\\u0000]*$"


def _string_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for prop in schema.get("properties", {}).values():
        found.append(prop)
        if isinstance(prop.get("items"), dict):
            found.append(prop["items"])
    return [
        item
        for item in found
        if item.get("type") == "string" and not {"pattern", "format", "enum"} & set(item)
    ]


def strings_without_nul(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Free-form strings of request bodies and query strings state that they hold no NUL
    character (a 400 for one is then a rule of the schema, which fuzzing and generated
    validators can see; core.middleware refuses one in a query string)."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            for string in _string_schemas(schema):
                string["pattern"] = NO_NUL_PATTERN
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            query = {
                parameter["name"]: parameter.get("schema", {})
                for parameter in operation.get("parameters", [])
                if parameter.get("in") == "query"
            }
            for string in _string_schemas({"properties": query}):
                string["pattern"] = NO_NUL_PATTERN
    return result


def explicit_security(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Every operation states its security; ``[]`` where it needs none (drf-spectacular leaves
    the key out, which a schema with a global requirement would read otherwise)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation.setdefault("security", [])
    return result


def strict_request_bodies(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Every request body rejects fields it does not define (the endpoints answer 400)."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    return result


def public_read_security(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """With ``ANALYTICS_PUBLIC_READ`` on, the analytics reads need no token: say so."""
    if settings.ANALYTICS_PUBLIC_READ:
        for path, operations in result.get("paths", {}).items():
            if path.startswith("/api/analytics/"):
                for operation in operations.values():
                    if isinstance(operation, dict) and {} not in operation.get("security", [{}]):
                        operation["security"].append({})
    return result


def query_parameters_not_null(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A query string cannot say ``null``: its parameters are given or left out; lists are
    written comma-separated.

    The analytics GETs derive their parameters from the request bodies' serializers, whose
    fields take ``null`` (= not given); as query parameters they lose it (an empty value is
    refused like the body's ``""``: a parameter not given is left out).
    """
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if parameter.get("in") == "query" and schema.get("type") == "array":
                    # Lists comma-separated (the API takes repeated keys too): 250 country
                    # codes fit in a request line (gunicorn's limit is 4,094 bytes).
                    parameter["style"], parameter["explode"] = "form", False
                if parameter.get("in") != "query" or not schema.pop("nullable", False):
                    continue
                if "enum" in schema:
                    schema["enum"] = [value for value in schema["enum"] if value is not None]
    return result
