"""Analytics answers as CSV (``Accept: text/csv`` or ``format=csv``): the rows, a header line
first, streamed, with the cells a spreadsheet would run as a formula neutralised."""

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rest_framework.renderers import BaseRenderer

from api.spec import Spec

CSV_MEDIA_TYPE = "text/csv"
# Rows written per chunk of a streamed answer; bytes per chunk of one the cache kept.
CHUNK_ROWS = 500
CHUNK_BYTES = 64 * 1024
# What starts a formula in Excel, LibreOffice or Google Sheets (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """``value`` as a CSV cell: a text that would start a formula gets a leading ``'`` (the
    OWASP way: the spreadsheet shows it as text). Numbers stay numbers: they are not
    user-written, and ``-3.5`` is a number to every spreadsheet."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_chunks(columns: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """The header line and one line per row, in chunks of ``CHUNK_ROWS`` rows (UTF-8).

    Every text is quoted (OWASP: so that a separator or a quote inside it cannot end the cell),
    numbers are not; ``null`` is an empty cell.
    """
    names = list(columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
    writer.writerow(names)
    for count, row in enumerate(rows, 1):
        writer.writerow([cell(row.get(name)) for name in names])
        if count % CHUNK_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def kept_chunks(kept: bytes) -> Iterator[bytes]:
    """A CSV the cache kept (``csv_chunks`` joined), streamed in chunks of ``CHUNK_BYTES``."""
    for at in range(0, len(kept), CHUNK_BYTES):
        yield kept[at : at + CHUNK_BYTES]


def csv_filename(endpoint: str, spec: Spec) -> str:
    """``top-blog-2025.csv``, ``blog-views-country-2025-01-01-to-2025-03-31.csv``..."""
    found = endpoint.replace("/", "-")
    if spec.year is not None:
        found += f"-{spec.year}"
    elif spec.start_date and spec.end_date:
        found += f"-{spec.start_date}-to-{spec.end_date}"
    elif spec.start_date:
        found += f"-from-{spec.start_date}"
    elif spec.end_date:
        found += f"-to-{spec.end_date}"
    if spec.compare:
        found += f"-vs-{spec.compare.replace('_', '-')}"
    return f"{found}.csv"


class CSVRenderer(BaseRenderer):
    """Picks CSV in content negotiation (``Accept: text/csv``, ``format=csv``). The analytics
    views stream their answers' CSV themselves (``api.views``); this renders the rows of any
    other answer the same way, the header taken from the first row."""

    media_type = CSV_MEDIA_TYPE
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if not data:
            return b""
        rows = data.get("results", [])
        return b"".join(csv_chunks(rows[0] if rows else [], rows))
