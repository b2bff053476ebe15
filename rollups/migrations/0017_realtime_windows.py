"""An unfiltered realtime answer reads a few rows, not every blog's and country's of the window.

Without filters, the realtime answer summed the (minute, country) rows of the window twice
(minutes, countries) and the (minute, blog) and 5-minute rows of every blog viewed, to rank a
few of them. Now the minutes come from per-minute totals (``MinuteViews``, one row a minute),
and the countries and blogs from window rows that absorb sums as it moves the watermark, for
the window of its minute and of the next (``WindowBlogViews``, ``WindowCountryViews``; the
state row says which windows and at which watermark): the read takes the window's ``limit``
first and the tail's, whatever the number viewed (``api.planner._recent_from_minutes``).

The new per-minute level needs the kept hour counted: as in migrations 0012 and 0016, the
state row is locked, ``recent_from`` and the other per-minute tables emptied, and the next
absorb recounts the hour from raw. Until then realtime reads the raw window; until absorb
has summed the window rows, the per-minute rows.
"""

import django.db.models.deletion
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

KEPT_TABLES = (
    "MinuteBlogCountryViews",
    "MinuteBlogViews",
    "FiveMinuteBlogViews",
    "MinuteCountryViews",
)


def forget_recent(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Lock the state row and empty ``recent_from``: the next absorb counts the kept hour."""
    alias = schema_editor.connection.alias
    state = apps.get_model("rollups", "AbsorbState")
    list(state.objects.using(alias).select_for_update())
    state.objects.using(alias).update(recent_from=None)


def empty_recent(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """The per-minute tables lose their rows (recounted with the new level's by the next
    absorb)."""
    alias = schema_editor.connection.alias
    for model in KEPT_TABLES:
        apps.get_model("rollups", model).objects.using(alias).all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_throttle_counter"),
        ("rollups", "0016_recent_blog_first"),
    ]

    operations = [
        migrations.RunPython(forget_recent, forget_recent, elidable=False),
        migrations.CreateModel(
            name="MinuteViews",
            fields=[
                ("views", models.BigIntegerField()),
                (
                    "minute",
                    models.DateTimeField(
                        help_text="The minute's first instant (UTC).",
                        primary_key=True,
                        serialize=False,
                    ),
                ),
            ],
            options={
                "abstract": False,
            },
        ),
        migrations.AddField(
            model_name="absorbstate",
            name="recent_window_end",
            field=models.DateTimeField(
                blank=True,
                help_text="The realtime window rows sum the per-minute rows of the 30 minutes before this instant and of the 30 before the minute after it.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="absorbstate",
            name="recent_window_through_id",
            field=models.BigIntegerField(
                blank=True,
                help_text="The watermark the realtime window rows were summed at: they hold only while it is the current one (empty: none).",
                null=True,
            ),
        ),
        migrations.CreateModel(
            name="WindowCountryViews",
            fields=[
                ("views", models.BigIntegerField()),
                (
                    "window_end",
                    models.DateTimeField(help_text="The window's end (exclusive; UTC minute)."),
                ),
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "window_end",
                        "country",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
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
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="WindowBlogViews",
            fields=[
                ("views", models.BigIntegerField()),
                (
                    "window_end",
                    models.DateTimeField(help_text="The window's end (exclusive; UTC minute)."),
                ),
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "window_end",
                        "blog",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
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
                "indexes": [
                    models.Index(
                        models.F("window_end"),
                        models.OrderBy(models.F("views"), descending=True),
                        models.F("blog"),
                        name="windowblog_most_viewed",
                    )
                ],
            },
        ),
        migrations.RunPython(empty_recent, empty_recent, elidable=False),
    ]
