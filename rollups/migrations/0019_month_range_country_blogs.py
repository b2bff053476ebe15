"""Distinct blogs per country for every range of whole months of a year, kept like the other
presence counts; the presence rows gain the months they have views in.

On PostgreSQL the presence table gets two columns the model does not declare: ``months``,
generated from ``days`` (bit ``m - 1`` set when month ``m`` has a view; a stored generated
column, so it is right whoever writes ``days``), and ``months_added``, which absorb's upsert
sets to the months it added to the row. Adding a stored generated column rewrites the table
under an exclusive lock (about 0.1 s per 100 k presence rows): absorb waits for it. The counts
are then filled from the presence rows.
"""

import calendar

import django.db.models.deletion
from django.db import migrations, models

PRESENCE = "rollups_yearlypresence"


def months_of_days(leap_year: int) -> str:
    """The ``months`` bits of a presence row's ``days`` in a year shaped like ``leap_year``."""
    terms = []
    first = 1
    for month in range(1, 13):
        length = calendar.monthrange(leap_year, month)[1]
        terms.append(
            f"CASE WHEN bit_count(substring(days FROM {first} FOR {length})) > 0 "
            f"THEN {1 << (month - 1)} ELSE 0 END"
        )
        first += length
    return " + ".join(terms)


MONTHS = (
    "(CASE WHEN mod(year, 4) = 0 AND (mod(year, 100) <> 0 OR mod(year, 400) = 0) "
    f"THEN {months_of_days(2024)} ELSE {months_of_days(2023)} END)::smallint"
)

RANGES = ", ".join(
    f"({first}, {last}, {(1 << last) - (1 << (first - 1))})"
    for first in range(1, 13)
    for last in range(first, 13)
)


def months_add(apps, schema_editor):
    """Give the presence rows their months and count each range's pairs (PostgreSQL keeps
    presence)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"ALTER TABLE {PRESENCE} ADD COLUMN months smallint GENERATED ALWAYS AS ({MONTHS}) "
        "STORED, ADD COLUMN months_added smallint NOT NULL DEFAULT 0"
    )
    schema_editor.execute(
        "INSERT INTO rollups_monthrangecountryblogs "
        "(year, first_month, last_month, country_id, blogs) "
        "SELECT p.year, ranges.first_month, ranges.last_month, p.country_id, count(*) "
        f"FROM {PRESENCE} p JOIN (VALUES {RANGES}) AS ranges (first_month, last_month, mask) "
        "ON p.months & ranges.mask <> 0 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    )


def months_drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"ALTER TABLE {PRESENCE} DROP COLUMN months, DROP COLUMN months_added")


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_throttle_counter"),
        ("rollups", "0018_minute_country_covering"),
    ]

    operations = [
        migrations.CreateModel(
            name="MonthRangeCountryBlogs",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("year", models.SmallIntegerField()),
                ("first_month", models.SmallIntegerField()),
                ("last_month", models.SmallIntegerField()),
                ("blogs", models.IntegerField()),
                (
                    "country",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="core.country",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("year", "first_month", "last_month", "country"),
                        name="monthrangecountryblogs_key",
                    )
                ],
            },
        ),
        migrations.RunPython(months_add, months_drop),
    ]
