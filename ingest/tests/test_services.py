from datetime import UTC, datetime, timedelta

import pytest

from core.exceptions import ApplicationError
from ingest.models import BlogView
from ingest.services import MAX_BATCH, views_ingest, views_parse, views_record

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _details(payload):
    with pytest.raises(ApplicationError) as raised:
        views_parse(payload=payload, now=NOW)
    assert raised.value.status == 400
    return raised.value.details


def _stored():
    return sorted(BlogView.objects.values_list("blog_id", "country_id", "viewed_at"))


def test_parse_normalizes_codes_and_timestamps(blogs):
    rows = views_parse(
        payload={
            "views": [
                {"blog_id": blogs[0].pk, "country_code": "us", "viewed_at": "2025-03-01T12:00:00Z"},
                {
                    "blog_id": blogs[1].pk,
                    "country_code": "Et",
                    "viewed_at": "2025-03-01T23:30:00-02:00",
                },
                {"blog_id": blogs[2].pk, "country_code": "ZZ"},
            ]
        },
        now=NOW,
    )
    assert rows == [
        (blogs[0].pk, "US", datetime(2025, 3, 1, 12, 0, tzinfo=UTC)),
        (blogs[1].pk, "ET", datetime(2025, 3, 2, 1, 30, tzinfo=UTC)),
        (blogs[2].pk, "ZZ", NOW),
    ]


def test_parse_accepts_up_to_five_minutes_ahead_and_old_backfill(blogs):
    edge = (NOW + timedelta(minutes=5)).isoformat()
    rows = views_parse(
        payload={
            "views": [
                {"blog_id": blogs[0].pk, "country_code": "DE", "viewed_at": edge},
                {"blog_id": blogs[0].pk, "country_code": "DE", "viewed_at": "1999-12-31T23:59:59Z"},
            ]
        },
        now=NOW,
    )
    assert [row[2] for row in rows] == [
        NOW + timedelta(minutes=5),
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("item", "field", "reason"),
    [
        ({"country_code": "US"}, "blog_id", "this field is required"),
        ({"blog_id": "1", "country_code": "US"}, "blog_id", "must be a positive integer"),
        ({"blog_id": True, "country_code": "US"}, "blog_id", "must be a positive integer"),
        ({"blog_id": 1.0, "country_code": "US"}, "blog_id", "must be a positive integer"),
        ({"blog_id": 0, "country_code": "US"}, "blog_id", "must be a positive integer"),
        ({"blog_id": 2**63, "country_code": "US"}, "blog_id", "must be a positive integer"),
        ({"blog_id": 987654, "country_code": "US"}, "blog_id", "no blog with id 987654"),
        ({"blog_id": "B"}, "country_code", "this field is required"),
        ({"blog_id": "B", "country_code": "USA"}, "country_code", "must be a 2-letter"),
        ({"blog_id": "B", "country_code": 12}, "country_code", "must be a 2-letter"),
        # Unicode upper-casing would turn the dotless i into I: "IT" is Italy.
        ({"blog_id": "B", "country_code": "\u0131t"}, "country_code", "must be a 2-letter"),
        ({"blog_id": "B", "country_code": "xx"}, "country_code", "unknown country code 'xx'"),
        # PostgreSQL refuses a NUL in a query; none may reach it.
        ({"blog_id": "B", "country_code": "U\x00"}, "country_code", "must be a 2-letter"),
        ({"blog_id": "B", "country_code": "1!"}, "country_code", "must be a 2-letter"),
        # Past the range only after the conversion to UTC (or past what a datetime can hold).
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "1900-01-01T00:00+14:00"},
            "viewed_at",
            "outside 1900-01-01..2100-12-31 (UTC)",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "9999-12-31T23:59:59-14:00"},
            "viewed_at",
            "outside 1900-01-01..2100-12-31 (UTC)",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "9999-12-31T23:59:59Z"},
            "viewed_at",
            "outside 1900-01-01..2100-12-31 (UTC)",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "2025-03-01T12:00:00"},
            "viewed_at",
            "must carry a UTC offset",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "2025-03-01"},
            "viewed_at",
            "must carry a UTC offset",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "yesterday"},
            "viewed_at",
            "is not an ISO 8601 timestamp",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": 1740830400},
            "viewed_at",
            "must be an ISO 8601 timestamp string",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "2025-06-01T12:05:01Z"},
            "viewed_at",
            "more than 5 minutes in the future",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "1899-12-31T23:59:59Z"},
            "viewed_at",
            "outside 1900-01-01..2100-12-31 (UTC)",
        ),
        (
            {"blog_id": "B", "country_code": "US", "viewed_at": "0001-01-01T00:00:00+01:00"},
            "viewed_at",
            "outside 1900-01-01..2100-12-31 (UTC)",
        ),
        ({"blog_id": "B", "country_code": "US", "browser": "x"}, "browser", "unknown field"),
    ],
)
def test_each_bad_item_is_named(blogs, item, field, reason):
    if item.get("blog_id") == "B":
        item = {**item, "blog_id": blogs[0].pk}
    good = {"blog_id": blogs[0].pk, "country_code": "US"}
    details = _details({"views": [good, item, good]})
    assert [(d["index"], d["field"]) for d in details] == [(1, field)]
    assert reason in details[0]["reason"]


def test_every_bad_item_is_listed_in_order(blogs):
    details = _details(
        {
            "views": [
                {"blog_id": blogs[0].pk, "country_code": "US"},
                "not an object",
                {"blog_id": -1, "country_code": "QQ", "viewed_at": "x"},
                {"blog_id": 424242, "country_code": "qq"},
            ]
        }
    )
    assert [(d["index"], d["field"]) for d in details] == [
        (1, None),
        (2, "blog_id"),
        (2, "country_code"),
        (2, "viewed_at"),
        (3, "blog_id"),
        (3, "country_code"),
    ]
    assert [d["reason"] for d in details[1:]] == [
        "must be a positive integer",
        "unknown country code 'QQ'",
        "'x' is not an ISO 8601 timestamp",
        "no blog with id 424242",
        "unknown country code 'qq'",
    ]


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ([{"blog_id": 1}], None, "not a JSON object"),
        ("views", None, "not a JSON object"),
        ({}, "views", "this field is required"),
        ({"views": None}, "views", "this field is required"),
        ({"views": {"blog_id": 1}}, "views", "must be a list"),
        ({"views": []}, "views", "got 0"),
        ({"views": [{}] * (MAX_BATCH + 1)}, "views", f"got {MAX_BATCH + 1}"),
        ({"views": [], "extra": 1}, "extra", "unknown field"),
    ],
)
def test_bad_body(db, payload, field, reason):
    details = _details(payload)
    assert details[0]["field"] == field
    assert reason in details[0]["reason"]


def test_full_batch_is_accepted(blogs):
    views = [{"blog_id": blogs[n % 3].pk, "country_code": "FR"} for n in range(MAX_BATCH)]
    assert views_ingest(payload={"views": views}, now=NOW) == MAX_BATCH
    assert BlogView.objects.count() == MAX_BATCH


def test_all_or_nothing(blogs):
    views = [{"blog_id": blogs[0].pk, "country_code": "FR"}] * 500
    views.append({"blog_id": blogs[0].pk, "country_code": "XX"})
    with pytest.raises(ApplicationError):
        views_ingest(payload={"views": views}, now=NOW)
    assert BlogView.objects.count() == 0


def test_record_stores_exact_rows(blogs):
    rows = [
        (blogs[0].pk, "US", datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)),
        (blogs[1].pk, "ZZ", datetime(1900, 1, 1, tzinfo=UTC)),
        (blogs[1].pk, "ZZ", datetime(1900, 1, 1, tzinfo=UTC)),
    ]
    assert views_record(views=iter(rows)) == 3
    assert _stored() == sorted(rows)


def test_the_first_instant_of_the_range_is_accepted_in_any_offset(blogs):
    rows = views_parse(
        payload={
            "views": [
                {"blog_id": blogs[0].pk, "country_code": "US", "viewed_at": moment}
                for moment in ("1900-01-01T00:00:00Z", "1899-12-31T23:00:00-01:00")
            ]
        },
        now=NOW,
    )
    assert [viewed_at for _, _, viewed_at in rows] == [datetime(1900, 1, 1, tzinfo=UTC)] * 2
