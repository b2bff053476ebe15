import json
import re
from typing import Any

from django.conf import settings
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# Escapes that can put a NUL or half of a surrogate pair into a decoded string. Raw NUL bytes
# and raw surrogates cannot reach one (JSON forbids raw control characters; raw surrogates are
# not UTF-8), so a body without these escapes needs no walk.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _bad_string(text: str) -> str | None:
    """Why ``text`` cannot be stored or compared by the database, or ``None``."""
    if "\x00" in text:
        return "must not contain a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain an unpaired surrogate (\\ud800-\\udfff)"
    return None


def _string_problems(value: Any) -> dict[str, list[str]]:
    """Every string (key or value) in ``value`` that no field accepts, by its path."""
    found: dict[str, list[str]] = {}
    stack: list[tuple[Any, str | None]] = [(value, None)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                inner_path = key if path is None else f"{path}.{key}"
                reason = _bad_string(key)
                if reason:
                    found.setdefault(ascii(key), []).append(f"a field name {reason}")
                else:
                    stack.append((inner, inner_path))
        elif isinstance(item, list):
            stack.extend((inner, f"{path or ''}[{n}]") for n, inner in enumerate(item))
        elif isinstance(item, str):
            reason = _bad_string(item)
            if reason:
                found.setdefault(path or "non_field_errors", []).append(reason)
    return dict(sorted(found.items()))


class _RepeatedField(ValueError):
    def __init__(self, key: str, times: int) -> None:
        super().__init__(key)
        self.key, self.times = key, times


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's fields; a field given twice would otherwise silently keep its last value."""
    fields = dict(pairs)
    if len(fields) != len(pairs):
        counts: dict[str, int] = {}
        for key, _ in pairs:
            counts[key] = counts.get(key, 0) + 1
        key = next(key for key, count in counts.items() if count > 1)
        raise _RepeatedField(key, counts[key])
    return fields


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with a cap on the body size (413 past ``REQUEST_BODY_MAX_BYTES``),
    and a 400 for what parses but no field may hold: nesting deeper than the parser recurses,
    a NUL character or an unpaired surrogate in a string (PostgreSQL and UTF-8 refuse them),
    a field given twice in one object (as a query string's parameter given twice)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.REQUEST_BODY_MAX_BYTES
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            data = json.loads(
                raw.decode("utf-8"),
                parse_constant=_reject_constant,
                object_pairs_hook=_unique_fields,
            )
        except _RepeatedField as exc:
            raise ValidationError(
                {exc.key: [f"given {exc.times} times in one object; give it once"]}
            ) from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(f"The body is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise ParseError("The body is nested too deeply to be parsed.") from exc
        if _SUSPECT_ESCAPE.search(raw):
            problems = _string_problems(data)
            if problems:
                raise ValidationError(problems)
        return data
