"""OpenAPI post-processing: say in the schema what the API enforces."""

from typing import Any

from django.conf import settings


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
