"""The one range of days the service stores and answers about (API.md section 10).

Every date it takes (filters, ``viewed_at`` once converted to UTC, rebuild ranges) lies in
``FIRST_DAY..LAST_DAY``: far enough from the ends of Python's and the databases' calendars that
a bucket, a month or a day after the last one never overflows.
"""

from datetime import UTC, date, datetime

FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(2100, 12, 31)
# The instants of those days: FIRST_MOMENT <= t < END_MOMENT.
FIRST_MOMENT = datetime(1900, 1, 1, tzinfo=UTC)
END_MOMENT = datetime(2101, 1, 1, tzinfo=UTC)
RANGE_TEXT = f"{FIRST_DAY.isoformat()}..{LAST_DAY.isoformat()}"


def day_out_of_range(day: date) -> str | None:
    """Why ``day`` is outside the range, or ``None``."""
    if FIRST_DAY <= day <= LAST_DAY:
        return None
    return f"{day.isoformat()} is outside {RANGE_TEXT}"
