"""Views per (span, blog, country) and per (span, blog) of the 29 and 89 days before the open
day, filled from the daily rows (which count every absorbed day).

A blog or author question for a few countries over the last 30 or 90 days read a month and a
few days of (blog, country) rows per 30 days: 27 k rows for three countries over 90 days at
10 M views; without countries, or excluding some, a month and a few days of (blog) rows too.
It needs worker and beat stopped: a previous release's worker would not keep them.
"""

from datetime import timedelta

import django.db.models.deletion
from django.db import migrations, models

# rollups.tables.TRAILING_SPANS and STATE_NAME when this was written.
SPANS = (30, 90)
STATE_NAME = "views"
# Each trailing table, its daily table and their columns besides the day or span.
TABLES = (
    ("rollups_trailingblogcountryviews", "rollups_dailyblogcountryviews", "blog_id, country_id"),
    ("rollups_trailingblogviews", "rollups_dailyblogviews", "blog_id"),
)


def trailing_fill(apps, schema_editor):
    state = apps.get_model("rollups", "AbsorbState").objects.filter(name=STATE_NAME).first()
    if state is None or state.monthly_open_from is None:
        return  # absorb's first run of a day fills them
    open_from = state.monthly_open_from
    for trailing, daily, columns in TABLES:
        for span in SPANS:
            schema_editor.execute(
                f"INSERT INTO {trailing} (span, {columns}, views) "
                f"SELECT %s, {columns}, sum(views) FROM {daily} "
                f"WHERE day >= %s AND day < %s GROUP BY {columns} ORDER BY {columns}",
                (span, open_from - timedelta(days=span - 1), open_from),
            )


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_throttle_counter"),
        ("rollups", "0021_yearly_blog_country"),
    ]

    operations = [
        migrations.CreateModel(
            name="TrailingBlogCountryViews",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("views", models.BigIntegerField()),
                (
                    "span",
                    models.PositiveSmallIntegerField(
                        help_text="Days of the range the row serves, the open day included."
                    ),
                ),
                (
                    "blog",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="core.blog",
                    ),
                ),
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
                "indexes": [
                    models.Index(
                        fields=["span", "country", "blog"],
                        include=("views",),
                        name="trailingblogcountry_country",
                    ),
                    models.Index(
                        fields=["blog", "span", "country"],
                        include=("views",),
                        name="trailingblogcountry_blog",
                    ),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("span", "blog", "country"), name="trailingblogcountry_key"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="TrailingBlogViews",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("views", models.BigIntegerField()),
                (
                    "span",
                    models.PositiveSmallIntegerField(
                        help_text="Days of the range the row serves, the open day included."
                    ),
                ),
                (
                    "blog",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="core.blog",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("span", "blog"), name="trailingblog_key")
                ],
            },
        ),
        migrations.RunPython(trailing_fill, migrations.RunPython.noop),
    ]
