"""The write side: validate batches of raw views and store them with one bulk write."""

import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from rest_framework import status

from core.dates import END_MOMENT, FIRST_MOMENT, RANGE_TEXT
from core.exceptions import ApplicationError
from core.models import Blog, Country
from ingest.models import BlogView, IdempotencyKey
from rollups.trigger import absorb_trigger as rollups_absorb_trigger

MAX_BATCH = 10_000
# Blog ids are bigint: a larger number cannot be one.
MAX_BLOG_ID = 2**63 - 1
FUTURE_TOLERANCE = timedelta(minutes=5)
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# Printable ASCII; not starting or ending with a space, which HTTP servers strip from headers.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[!-~](?:[ -~]*[!-~])?")
# How long a key's first answer is replayed; afterwards the key counts as unused.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
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
        raise ApplicationError(
            f"`views`: {reason}.", details=[{"field": "views", "reason": reason}]
        )

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
        elif type(blog_id) is not int or not 0 < blog_id <= MAX_BLOG_ID:
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


def views_record(*, views: Iterable[ViewRow], absorb_trigger: bool = True) -> int:
    """Store validated views in one transaction with one bulk write; return how many.

    The single write path into the raw table: ingest and ``seed_data`` both come through here.
    PostgreSQL gets ``COPY``; other databases a multi-row ``executemany``. Once the views are
    committed, ``absorb_trigger`` asks for an absorb run if too many are pending
    (``rollups.trigger``; ``seed_data``, which absorbs at its end, passes False).
    """
    table = BlogView._meta.db_table
    count = 0
    with transaction.atomic(), connection.cursor() as cursor:
        if absorb_trigger:
            transaction.on_commit(rollups_absorb_trigger)
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


@dataclass(frozen=True)
class IngestAnswer:
    """What the ingest endpoint answers, and whether it replays a key's stored first answer."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def _idempotency_key_check(key: str) -> None:
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        reason = f"must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters; got {len(key)}"
    elif not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        reason = "must be printable ASCII without spaces at either end"
    else:
        return
    raise ApplicationError(
        f"The {IDEMPOTENCY_HEADER} header {reason}.",
        details=[{"field": IDEMPOTENCY_HEADER, "reason": reason}],
    )


def _request_hash(payload: object) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys, no whitespace, ASCII escapes).

    Canonical rather than raw bytes so that a client re-serializing its retry (another key
    order, other spacing) is still recognised; any difference in a value is a different body.
    """
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _idempotency_key_claim(
    *, user_id: int, key: str, request_hash: str, answer: IngestAnswer, now: datetime
) -> bool:
    """Store ``answer`` as the key's first answer unless the key is in use; return whether it was.

    One statement, inside the caller's transaction. A row older than the window is taken over
    in place. On PostgreSQL an uncommitted row of a concurrent request with the same key makes
    this wait for that transaction: if it commits, the key is in use; if it rolls back, the key
    is claimed here. SQLite runs one writing transaction at a time (``IMMEDIATE``).
    """
    quote = connection.ops.quote_name
    table = quote(IdempotencyKey._meta.db_table)
    body_field = IdempotencyKey._meta.get_field("body")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} "
            f"(user_id, {quote('key')}, request_hash, status, body, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) "
            f"ON CONFLICT (user_id, {quote('key')}) DO UPDATE SET "
            "request_hash = excluded.request_hash, status = excluded.status, "
            "body = excluded.body, created_at = excluded.created_at "
            f"WHERE {table}.created_at <= %s "
            "RETURNING id",
            [
                user_id,
                key,
                request_hash,
                answer.status,
                body_field.get_db_prep_value(answer.body, connection),
                connection.ops.adapt_datetimefield_value(now),
                connection.ops.adapt_datetimefield_value(now - IDEMPOTENCY_WINDOW),
            ],
        )
        return cursor.fetchone() is not None


def views_ingest_idempotent(
    *, payload: object, user_id: int, idempotency_key: str | None, now: datetime | None = None
) -> IngestAnswer:
    """Ingest a body as the endpoint does; with a key, store its views at most once.

    Without a key this is ``views_ingest``. With one, the key (scoped to the user) and the
    answer are stored in the same transaction as the views; a retry within
    ``IDEMPOTENCY_WINDOW`` with the same body (compared by ``_request_hash``) gets that answer
    again, marked ``replayed``, and stores nothing; with a different body it is a 409. A
    concurrent request with the same key waits for the first one and then answers the same way.
    An invalid body is a 400 whatever the key, and stores no key, so a corrected retry may reuse
    it. Raises ``ApplicationError`` (400 for a malformed key or body, 409 for a reused key).
    """
    now = now or timezone.now()
    if idempotency_key is None:
        accepted = views_ingest(payload=payload, now=now)
        return IngestAnswer(status=status.HTTP_202_ACCEPTED, body={"accepted": accepted})

    _idempotency_key_check(idempotency_key)
    rows = views_parse(payload=payload, now=now)
    request_hash = _request_hash(payload)
    answer = IngestAnswer(status=status.HTTP_202_ACCEPTED, body={"accepted": len(rows)})
    with transaction.atomic():
        if _idempotency_key_claim(
            user_id=user_id,
            key=idempotency_key,
            request_hash=request_hash,
            answer=answer,
            now=now,
        ):
            views_record(views=rows)
            return answer
        first = IdempotencyKey.objects.get(user_id=user_id, key=idempotency_key)
    if first.request_hash != request_hash:
        raise ApplicationError(
            f"This {IDEMPOTENCY_HEADER} was used in the last 24 hours for a different body; "
            "send a new key with a new request.",
            status=status.HTTP_409_CONFLICT,
            code="idempotency_key_reused",
            details=[{"field": IDEMPOTENCY_HEADER, "reason": "used for a different body"}],
        )
    return IngestAnswer(status=first.status, body=first.body, replayed=True)


def idempotency_keys_delete_expired(*, now: datetime | None = None, chunk: int = 10_000) -> int:
    """Delete the idempotency keys older than ``IDEMPOTENCY_WINDOW``; return how many.

    In chunks of about ``chunk`` rows, oldest first, each its own short transaction, so that a
    large backlog neither holds locks for long nor loses its progress to a time limit. A chunk
    is a range of ``created_at`` (an index range scan), and a key taken over again meanwhile
    (its ``created_at`` moved to now) falls out of the range and survives.
    """
    cutoff = (now or timezone.now()) - IDEMPOTENCY_WINDOW
    expired = IdempotencyKey.objects.filter(created_at__lte=cutoff).order_by("created_at")
    deleted = 0
    while True:
        # The created_at of the chunk-th oldest expired key; None when fewer are left.
        boundary = next(iter(expired.values_list("created_at", flat=True)[chunk - 1 : chunk]), None)
        batch, _ = IdempotencyKey.objects.filter(created_at__lte=boundary or cutoff).delete()
        deleted += batch
        if boundary is None:
            return deleted
