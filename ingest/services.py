"""The write side: validate batches of raw views and store them with one bulk write."""

import io
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from core.dates import END_MOMENT, FIRST_MOMENT, RANGE_TEXT
from core.exceptions import ApplicationError
from core.models import Blog, Country
from ingest.models import BlogView

MAX_BATCH = 10_000
FUTURE_TOLERANCE = timedelta(minutes=5)
ITEM_FIELDS = ("blog_id", "country_code", "viewed_at")
_FIELD_ORDER: dict[str | None, int] = {None: -1} | {
    name: position for position, name in enumerate(ITEM_FIELDS)
}

_COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")

# A validated view: (blog id, upper-case country code, aware UTC timestamp).
ViewRow = tuple[int, str, datetime]


def _item_error(index: int, field: str | None, reason: str) -> dict[str, Any]:
    return {"index": index, "field": field, "reason": reason}


def _parse_viewed_at(value: object, *, now: datetime) -> datetime | str:
    """The timestamp as aware UTC, or the reason it is rejected."""
    if not isinstance(value, str):
        return "must be an ISO 8601 timestamp string"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"'{value[:40]}' is not an ISO 8601 timestamp"
    if parsed.tzinfo is None:
        return "must carry a UTC offset or 'Z' (naive timestamps are ambiguous)"
    # The range holds in UTC: 1900-01-01T00:00+14:00 is a day too early. Converting a time near
    # year 1 or 9999 overflows; it is out of range either way.
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        return f"is outside {RANGE_TEXT} (UTC)"
    if not FIRST_MOMENT <= parsed < END_MOMENT:
        return f"is outside {RANGE_TEXT} (UTC)"
    if parsed > now + FUTURE_TOLERANCE:
        return "is more than 5 minutes in the future"
    return parsed


def views_parse(*, payload: object, now: datetime) -> list[ViewRow]:
    """Validate an ingest body and return its views, or raise listing every bad item.

    One query resolves the batch's blog ids and one its country codes. Raises
    ``ApplicationError`` (400) whose details name each bad item's index, field and reason.
    """
    if not isinstance(payload, dict):
        raise ApplicationError(
            'The body must be a JSON object: {"views": [...]}.',
            details=[{"field": None, "reason": "not a JSON object"}],
        )
    unknown = sorted(set(payload) - {"views"})
    if unknown:
        raise ApplicationError(
            f"Unknown field(s): {', '.join(unknown)}.",
            details=[{"field": name, "reason": "unknown field"} for name in unknown],
        )
    items = payload.get("views")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        if items is None:
            reason = "this field is required"
        elif not isinstance(items, list):
            reason = "must be a list of views"
        else:
            reason = f"must hold 1 to {MAX_BATCH} views; got {len(items)}"
        raise ApplicationError(f"views {reason}.", details=[{"field": "views", "reason": reason}])

    errors: list[dict[str, Any]] = []
    rows: list[ViewRow] = []
    # Well-formed ids and codes of every item, to look up with one query each.
    item_keys: list[tuple[int, int | None, str | None]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(_item_error(index, None, "must be an object"))
            continue
        item_errors = len(errors)
        for name in item.keys() - _FIELD_ORDER.keys():
            errors.append(_item_error(index, name, "unknown field"))

        blog_id = item.get("blog_id")
        if blog_id is None:
            errors.append(_item_error(index, "blog_id", "this field is required"))
        elif type(blog_id) is not int or not 0 < blog_id < 2**63:
            errors.append(_item_error(index, "blog_id", "must be a positive integer"))
            blog_id = None

        code = item.get("country_code")
        if code is None:
            errors.append(_item_error(index, "country_code", "this field is required"))
        # ASCII letters only: Unicode upper-casing maps "\u0131t" (dotless i) to "IT", and a
        # NUL would reach the database, which refuses it.
        elif not isinstance(code, str) or not _COUNTRY_CODE.fullmatch(code):
            errors.append(_item_error(index, "country_code", "must be a 2-letter ISO 3166-1 code"))
            code = None
        else:
            code = code.upper()

        viewed_at = _parse_viewed_at(item["viewed_at"], now=now) if "viewed_at" in item else now
        if isinstance(viewed_at, str):
            errors.append(_item_error(index, "viewed_at", viewed_at))
        elif len(errors) == item_errors and blog_id is not None and code is not None:
            rows.append((blog_id, code, viewed_at))
        item_keys.append((index, blog_id, code))

    blog_ids = {blog_id for _, blog_id, _ in item_keys if blog_id is not None}
    codes = {code for _, _, code in item_keys if code is not None}
    known_blogs = set(Blog.objects.filter(pk__in=blog_ids).values_list("pk", flat=True))
    known_codes = set(Country.objects.filter(code__in=codes).values_list("code", flat=True))
    if len(known_blogs) < len(blog_ids) or len(known_codes) < len(codes):
        for index, blog_id, code in item_keys:
            if blog_id is not None and blog_id not in known_blogs:
                errors.append(_item_error(index, "blog_id", f"no blog with id {blog_id}"))
            if code is not None and code not in known_codes:
                original = items[index]["country_code"]
                errors.append(
                    _item_error(index, "country_code", f"unknown country code '{original}'")
                )

    if errors:
        errors.sort(key=lambda e: (e["index"], _FIELD_ORDER.get(e["field"], len(_FIELD_ORDER))))
        bad = len({e["index"] for e in errors})
        raise ApplicationError(
            f"{bad} of {len(items)} views are invalid; nothing was stored.",
            code="invalid_views",
            details=errors,
        )
    return rows


def views_record(*, views: Iterable[ViewRow]) -> int:
    """Store validated views in one transaction with one bulk write; return how many.

    The single write path into the raw table: ingest and ``seed_data`` both come through here.
    PostgreSQL gets ``COPY``; other databases a multi-row ``executemany``.
    """
    table = BlogView._meta.db_table
    count = 0
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            buffer = io.StringIO()
            for blog_id, code, viewed_at in views:
                buffer.write(f"{blog_id}\t{code}\t{viewed_at.isoformat()}\n")
                count += 1
            buffer.seek(0)
            cursor.copy_expert(f"COPY {table} (blog_id, country_id, viewed_at) FROM STDIN", buffer)
        else:
            # Django stores SQLite datetimes as naive UTC text; write them the same way.
            values = [
                (blog_id, code, viewed_at.astimezone(UTC).replace(tzinfo=None).isoformat(" "))
                for blog_id, code, viewed_at in views
            ]
            count = len(values)
            cursor.executemany(
                f"INSERT INTO {table} (blog_id, country_id, viewed_at) VALUES (%s, %s, %s)",
                values,
            )
    return count


def views_ingest(*, payload: object, now: datetime | None = None) -> int:
    """Validate an ingest body and store it all or nothing; return the number accepted."""
    rows = views_parse(payload=payload, now=now or timezone.now())
    return views_record(views=rows)
