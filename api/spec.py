"""The analytics filters: strict validation of a request body into one small query spec."""

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from core.dates import FIRST_DAY, LAST_DAY, day_out_of_range
from core.exceptions import ApplicationError
from core.models import Country

# The query parameter that picks the answer's format (json, csv) on GET: not a filter.
FORMAT_PARAMETER = "format"
LIST_FIELDS = ("country_codes", "exclude_country_codes")
FILTER_FIELDS = (
    "start_date",
    "end_date",
    "year",
    "country_codes",
    "exclude_country_codes",
    "author_username",
)
MAX_COUNTRY_CODES = 250
# The longest username Django's user model allows: a longer one cannot match.
MAX_USERNAME_LENGTH = 150
# The deepest page of a grouped answer: far past any real listing, and a bound on the work.
MAX_OFFSET = 1_000_000
PERIODS = ("day", "week", "month", "year")
COMPARISONS = ("previous_period", "previous_year")


@dataclass(frozen=True)
class Spec:
    """What one analytics question asks: the filters plus the endpoint's own options."""

    start_date: date | None = None
    end_date: date | None = None
    year: int | None = None
    country_codes: tuple[str, ...] | None = None
    exclude_country_codes: tuple[str, ...] | None = None
    author_username: str | None = None
    limit: int | None = None
    offset: int | None = None
    compare_period: str | None = None
    compare: str | None = None
    extras: tuple[str, ...] = field(default=(), compare=False)

    @property
    def first_day(self) -> date | None:
        """The first day asked for (from ``year`` or ``start_date``), or ``None`` (open)."""
        return date(self.year, 1, 1) if self.year is not None else self.start_date

    @property
    def last_day(self) -> date | None:
        """The last day asked for (from ``year`` or ``end_date``), or ``None`` (open)."""
        return date(self.year, 12, 31) if self.year is not None else self.end_date

    @property
    def countries_filtered(self) -> bool:
        return self.country_codes is not None or self.exclude_country_codes is not None

    def normalized(self) -> dict[str, Any]:
        """The filters as echoed in ``meta.filters`` and used in cache keys."""
        found: dict[str, Any] = {
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "end_date": self.end_date.isoformat() if self.end_date else None,
            "year": self.year,
            "country_codes": list(self.country_codes) if self.country_codes is not None else None,
            "exclude_country_codes": (
                list(self.exclude_country_codes) if self.exclude_country_codes is not None else None
            ),
            "author_username": self.author_username,
        }
        for name in self.extras:
            found[name] = getattr(self, name)
        return found


@dataclass(frozen=True)
class Extra:
    """An endpoint's own body field: an integer in a range, or one of some choices.

    Declared once: ``spec_parse`` validates with it and ``api.serializers`` derives the
    request schema's field from it.
    """

    name: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    help_text: str = ""


# Every endpoint's comparison with an earlier range (api.selectors resolves it).
COMPARE = Extra(
    "compare",
    None,
    choices=COMPARISONS,
    help_text=(
        "Compare with an earlier range: previous_period = the same number of days just before "
        "the range, previous_year = the same dates one year earlier (Feb 29 -> Feb 28). Rows "
        "gain previous_views and change_pct; meta.compare gives the range. Needs a start (year "
        "or start_date) not after the end (an open end is today), and a comparison range from "
        "1900-01-01 on; else 400."
    ),
)
# Each endpoint family's own fields.
GROUPED = (
    Extra("limit", 100, 1, 1000, help_text="Groups per page."),
    Extra("offset", 0, 0, MAX_OFFSET, help_text="Groups to skip (paging)."),
    COMPARE,
)
TOP = (Extra("limit", 10, 1, 100, help_text="How many of the most viewed."), COMPARE)
# The realtime answer's window is fixed: no dates.
REALTIME = (
    Extra("limit", 10, 1, 100, help_text="How many of the most viewed blogs and countries."),
)
REALTIME_FILTERS = ("country_codes", "exclude_country_codes", "author_username")
PERFORMANCE = (
    Extra(
        "compare_period",
        None,
        choices=PERIODS,
        help_text=(
            "Bucket size; omitted = automatic (<= 31 days: day, <= 180: week, else month, or "
            "year where month would give more than 1,000 buckets). More than 1,000 buckets of "
            "an explicit size is a 400."
        ),
    ),
    COMPARE,
)


def _error(name: str | None, reason: str) -> dict[str, Any]:
    return {"field": name, "reason": reason}


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date(name: str, value: object, errors: list[dict[str, Any]]) -> date | None:
    if value is None:
        return None
    # fromisoformat also takes ISO week dates ("2025-W01-1"): only YYYY-MM-DD passes here.
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        errors.append(_error(name, "must be a date string YYYY-MM-DD"))
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        errors.append(_error(name, f"'{value}' is not a valid date (YYYY-MM-DD)"))
        return None
    reason = day_out_of_range(day)
    if reason:
        errors.append(_error(name, reason))
        return None
    return day


def _integer(
    name: str, value: object, low: int | None, high: int | None, errors: list[dict[str, Any]]
) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        errors.append(_error(name, "must be an integer"))
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low}" if high is None else f"from {low} to {high}"
        errors.append(_error(name, f"must be {bounds}; got {value}"))
        return None
    return value


def _codes(
    name: str, value: object, known: frozenset[str], errors: list[dict[str, Any]]
) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        errors.append(_error(name, "must be a list of country codes"))
        return None
    if not 1 <= len(value) <= MAX_COUNTRY_CODES:
        errors.append(_error(name, f"must hold 1 to {MAX_COUNTRY_CODES} codes; got {len(value)}"))
        return None
    codes = set()
    for code in value:
        if not isinstance(code, str):
            errors.append(_error(name, f"{code!r} is not a country code string"))
        # ASCII first: Unicode upper-casing maps "\u00df" to "SS" and "\u0131t" to "IT".
        elif not (len(code) == 2 and code.isascii()) or code.upper() not in known:
            errors.append(_error(name, f"unknown country code '{code}'"))
        else:
            codes.add(code.upper())
    return tuple(sorted(codes))


# The country codes, read at most once a minute per process: they change only by migration
# (or an admin's edit), and reading them on every request was a tenth of a cached answer's time.
KNOWN_CODES_SECONDS = 60
_known: tuple[float, frozenset[str]] | None = None


def _known_codes() -> frozenset[str]:
    global _known
    now = time.monotonic()
    if _known is None or now - _known[0] > KNOWN_CODES_SECONDS:
        _known = (now, frozenset(Country.objects.values_list("code", flat=True)))
    return _known[1]


def spec_parse(
    *, payload: object, extras: tuple[Extra, ...] = (), filters: tuple[str, ...] = FILTER_FIELDS
) -> Spec:
    """Validate an analytics request body; raise ``ApplicationError`` naming every bad field.

    ``filters``: the filters the endpoint takes (the others are unknown fields).
    """
    if not isinstance(payload, dict):
        raise ApplicationError(
            "The body must be a JSON object of filters (it may be empty: {}).",
            details=[_error(None, "not a JSON object")],
        )
    allowed = set(filters) | {extra.name for extra in extras}
    errors = [_error(name, "unknown field") for name in sorted(set(payload) - allowed)]
    # An unknown field is said so once, not also checked as the field it would be elsewhere.
    given = {name: value for name, value in payload.items() if name in allowed}

    start = _date("start_date", given.get("start_date"), errors)
    end = _date("end_date", given.get("end_date"), errors)
    year = _integer("year", given.get("year"), FIRST_DAY.year, LAST_DAY.year, errors)
    if given.get("year") is not None and (
        given.get("start_date") is not None or given.get("end_date") is not None
    ):
        errors.append(_error("year", "give either year or start_date/end_date, not both"))
    if start and end and start > end:
        errors.append(_error("start_date", f"{start} is after end_date {end}"))

    country_fields = ("country_codes", "exclude_country_codes")
    known: frozenset[str] = frozenset()
    if any(given.get(name) is not None for name in country_fields):
        known = _known_codes()
    include = _codes("country_codes", given.get("country_codes"), known, errors)
    exclude = _codes("exclude_country_codes", given.get("exclude_country_codes"), known, errors)

    author = given.get("author_username")
    if author is not None and (not isinstance(author, str) or not author):
        errors.append(_error("author_username", "must be a non-empty string"))
        author = None
    elif author is not None and len(author) > MAX_USERNAME_LENGTH:
        errors.append(
            _error(
                "author_username",
                f"must be at most {MAX_USERNAME_LENGTH} characters; got {len(author)}",
            )
        )
        author = None

    options: dict[str, Any] = {}
    for extra in extras:
        value = given.get(extra.name)
        if extra.choices:
            if value is not None and value not in extra.choices:
                errors.append(_error(extra.name, f"must be one of: {', '.join(extra.choices)}"))
                value = None
        else:
            value = _integer(extra.name, value, extra.minimum, extra.maximum, errors)
        options[extra.name] = extra.default if value is None else value

    if errors:
        fields = sorted({e["field"] for e in errors if e["field"]})
        raise ApplicationError(f"Invalid filters: {', '.join(fields)}.", details=errors)
    return Spec(
        start_date=start,
        end_date=end,
        year=year,
        country_codes=include,
        exclude_country_codes=exclude,
        author_username=author,
        extras=tuple(extra.name for extra in extras),
        **options,
    )


# An integer longer than this stays text (and is refused as not an integer): Python refuses to
# convert a string of more than 4,300 digits, and no bound here has more than 7.
MAX_INTEGER_DIGITS = 18
_INTEGER = re.compile(rf"-?[0-9]{{1,{MAX_INTEGER_DIGITS}}}")


def query_payload(
    *, query: Mapping[str, Sequence[str]], extras: tuple[Extra, ...] = ()
) -> dict[str, Any]:
    """A GET query string (each name with its values) as the body it stands for, for
    ``spec_parse`` to validate by the same rules.

    Lists are comma-separated (``country_codes=US,DE``) or repeated (``country_codes=US&
    country_codes=DE``), or both; integers are written as digits; every other field is given at
    most once. An empty value is an empty text, refused as the body's ``""`` would be (a query
    string has no ``null``: leave the parameter out). ``format`` is left out (it picks the
    answer's format). Anything the body could not hold is passed on as text, for
    ``spec_parse`` to refuse naming the field.
    """
    integers = {"year"} | {extra.name for extra in extras if not extra.choices}
    payload: dict[str, Any] = {}
    errors = []
    for key, found in query.items():
        if key == FORMAT_PARAMETER:
            continue
        if key in LIST_FIELDS:
            payload[key] = [code for value in found for code in value.split(",")]
        elif len(found) > 1:
            errors.append(_error(key, f"given {len(found)} times; give it once"))
        elif key in integers and _INTEGER.fullmatch(found[0]):
            payload[key] = int(found[0])
        else:
            payload[key] = found[0]
    if errors:
        fields = sorted({e["field"] for e in errors})
        raise ApplicationError(f"Invalid filters: {', '.join(fields)}.", details=errors)
    return payload
