"""The few SQL pieces that differ between PostgreSQL and the embedded SQLite, shared by the
rollups (write) and analytics (read) sides so that both compute days and months alike."""

from datetime import UTC, date, datetime, timedelta

from django.db import connection


def postgres() -> bool:
    return connection.vendor == "postgresql"


def day_of(column: str) -> str:
    """SQL for the UTC calendar day of a timestamp column."""
    if postgres():
        return f"({column} AT TIME ZONE 'UTC')::date"
    # Django keeps SQLite datetimes as naive UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
    return f"substr({column}, 1, 10)"


def month_of(day_column: str) -> str:
    """SQL for the first day of the month of a date column."""
    if postgres():
        return f"date_trunc('month', {day_column})::date"
    return f"substr({day_column}, 1, 8) || '01'"


def next_month_of(column: str) -> str:
    """SQL for the first day of the month after a month-start date column."""
    if postgres():
        return f"({column} + interval '1 month')::date"
    return f"date({column}, '+1 month')"


def day_param(day: date) -> date | str:
    """A day as a date column compares with it."""
    return day if postgres() else day.isoformat()


def day_start_param(day: date) -> datetime | str:
    """The instant a UTC day starts, as a timestamp column compares with it."""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return moment if postgres() else moment.replace(tzinfo=None).isoformat(" ")


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
