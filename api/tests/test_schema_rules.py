"""The request schema and the parser state one contract: for every field of every analytics
endpoint, the bounds the OpenAPI document gives are exactly the ones ``spec_parse`` enforces.

The endpoints' own fields (limit, offset, compare_period) are declared once (``api.spec.Extra``)
and the schema derives them; the filters are written in both places, so this checks them.
"""

import json
from datetime import timedelta
from typing import Any

import pytest
from django.urls import resolve

from api.spec import spec_parse
from api.tests.conftest import ENDPOINTS
from core.dates import FIRST_DAY, LAST_DAY, RANGE_TEXT
from core.exceptions import ApplicationError


@pytest.fixture(scope="module")
def schema(django_db_setup: None, django_db_blocker: Any) -> dict[str, Any]:
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    document: dict[str, Any] = json.loads(response.content)
    return document


def _request_properties(schema: dict[str, Any], path: str) -> dict[str, Any]:
    body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    component = body["$ref"].rsplit("/", 1)[-1]
    properties: dict[str, Any] = schema["components"]["schemas"][component]["properties"]
    return {name: _resolved(schema, rules) for name, rules in properties.items()}


def _resolved(schema: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    """``rules`` with a ``oneOf`` of enum components (a nullable choice) as one ``enum``."""
    if "oneOf" not in rules:
        return rules
    components = schema["components"]["schemas"]
    choices = [components[one["$ref"].rsplit("/", 1)[-1]] for one in rules["oneOf"]]
    return {**rules, "enum": [value for choice in choices for value in choice["enum"]]}


def _rejected(path: str, body: dict[str, Any]) -> list[str]:
    """The fields ``spec_parse`` names for ``body`` at ``path`` (empty: accepted)."""
    extras = resolve(path).func.view_class.extras  # type: ignore[attr-defined]
    try:
        spec_parse(payload=body, extras=extras)
    except ApplicationError as error:
        return sorted({detail["field"] for detail in error.details})
    return []


def _edges(name: str, rules: dict[str, Any]) -> list[tuple[Any, bool]]:
    """Values at and just past each bound the schema states, and whether it allows them."""
    edges: list[tuple[Any, bool]] = []
    if rules.get("type") == "integer":
        if "minimum" in rules:
            edges += [(rules["minimum"], True), (rules["minimum"] - 1, False)]
        if "maximum" in rules:
            edges += [(rules["maximum"], True), (rules["maximum"] + 1, False)]
        edges.append(("7", False))
    if "enum" in rules:
        edges += [(value, True) for value in rules["enum"] if value is not None]
        edges.append(("fortnight", False))
    if rules.get("type") == "array":
        edges += [([], False), (["US"] * rules["maxItems"], True)]
        edges += [(["US"] * (rules["maxItems"] + 1), False), ("US", False)]
        assert rules["minItems"] == 1
    if rules.get("type") == "string" and rules.get("format") == "date":
        # The one date range of core.dates, which the schema can state only in words.
        assert RANGE_TEXT in rules["description"], name
        edges += [(FIRST_DAY.isoformat(), True), (LAST_DAY.isoformat(), True)]
        edges += [((FIRST_DAY - timedelta(days=1)).isoformat(), False)]
        edges += [((LAST_DAY + timedelta(days=1)).isoformat(), False)]
        edges += [("2025-02-30", False), ("20250101", False)]
    if rules.get("type") == "string" and "maxLength" in rules:
        edges += [("a" * rules["maxLength"], True), ("a" * (rules["maxLength"] + 1), False)]
        edges += [("", rules.get("minLength", 0) == 0)]
    assert edges, f"{name}: no rule of the schema is checked: {rules}"
    return edges


@pytest.mark.django_db
@pytest.mark.parametrize("path", ENDPOINTS)
def test_schema_bounds_are_the_parsers_bounds(schema: dict[str, Any], path: str) -> None:
    properties = _request_properties(schema, path)
    extras = resolve(path).func.view_class.extras  # type: ignore[attr-defined]
    # Every field the schema offers is one the parser takes (others are 400 "unknown field").
    assert not _rejected(path, dict.fromkeys(properties))
    assert _rejected(path, {"unknown_field": 1}) == ["unknown_field"]
    assert set(properties) >= {extra.name for extra in extras}
    disagreements = []
    for name, rules in properties.items():
        for value, allowed in _edges(name, rules):
            rejected = _rejected(path, {name: value})
            if rejected not in ([], [name]) or (not rejected) != allowed:
                disagreements.append((name, value if len(str(value)) < 40 else "...", rejected))
    assert not disagreements, disagreements


@pytest.mark.django_db
@pytest.mark.parametrize("path", ENDPOINTS)
def test_schema_defaults_are_the_parsers_defaults(schema: dict[str, Any], path: str) -> None:
    extras = resolve(path).func.view_class.extras  # type: ignore[attr-defined]
    spec = spec_parse(payload={}, extras=extras)
    for name, rules in _request_properties(schema, path).items():
        if "default" in rules:
            assert getattr(spec, name) == rules["default"], name


@pytest.mark.django_db
@pytest.mark.parametrize("path", ENDPOINTS)
def test_get_parameters_are_the_body_fields(schema: dict[str, Any], path: str) -> None:
    """The GET's query parameters state the body's rules (``test_get`` checks that the GET
    applies them), without ``null`` (a query string leaves a parameter out), plus ``format``."""
    body = _request_properties(schema, path)
    parameters = {
        parameter["name"]: parameter["schema"]
        for parameter in schema["paths"][path]["get"]["parameters"]
        if parameter["in"] == "query"
    }
    assert parameters.pop("format") == {"type": "string", "enum": ["csv", "json"]}
    assert set(parameters) == set(body)
    for name, rules in parameters.items():
        expected = {key: value for key, value in body[name].items() if key != "nullable"}
        if "enum" in rules:
            assert set(rules["enum"]) == set(expected["enum"]) - {None}, name
            continue
        assert {k: v for k, v in rules.items() if k != "description"} == {
            k: v for k, v in expected.items() if k not in ("description", "readOnly")
        }, name
