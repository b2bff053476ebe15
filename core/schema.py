"""OpenAPI post-processing: say in the schema what the API enforces."""

from typing import Any


def strict_request_bodies(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Every request body rejects fields it does not define (the endpoints answer 400)."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    return result
