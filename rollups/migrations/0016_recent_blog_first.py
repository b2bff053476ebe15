"""Realtime questions for one author read that author's per-minute rows, not the window's.

The (minute, blog, country) rows are read only with blogs (an author's) or countries named;
their key led with the minute, so an author's question read every row of the window: about
350 k rows with 2 M views in the window, 99 ms of SQL for an author with 87 of those views.
The key now leads with the blog, and the (minute, blog) and 5-minute block rows get a (blog,
minute) index: that author's rows alone, 2.5 ms (and 33 instead of 92 ms for the author with
a third of the window's views, whose blogs the planner now walks one by one: see
``Facts._filters``). Absorb writes the rows minute first, as before: 158 k rows took 1.76-2.10 s
with the old key and 1.82-2.02 s with the new one (a third, blog-first index instead would have
cost 2.23-2.73 s).

Django cannot change a composite primary key, and these tables hold only the last hour,
recounted from raw whenever ``AbsorbState.recent_from`` is empty (as in migration 0012): the
(minute, blog, country) table is dropped and created again, the other per-minute tables are
emptied, and ``recent_from`` is emptied, in one transaction. The state row is locked first, so
an absorb that starts meanwhile waits for the migration at the state row instead of holding it
while it waits for a table. Until the next absorb refills the tables, realtime reads the raw
window (``api.planner.recent_views``).
"""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

KEPT_TABLES = ("MinuteBlogViews", "FiveMinuteBlogViews", "MinuteCountryViews")


def forget_recent(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Lock the state row and empty ``recent_from``: the next absorb counts the kept hour."""
    alias = schema_editor.connection.alias
    state = apps.get_model("rollups", "AbsorbState")
    list(state.objects.using(alias).select_for_update())
    state.objects.using(alias).update(recent_from=None)


def empty_recent(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """The per-minute tables kept by the migration lose their rows too (recounted with the
    new one's by the next absorb)."""
    alias = schema_editor.connection.alias
    for model in KEPT_TABLES:
        apps.get_model("rollups", model).objects.using(alias).all().delete()


def _reference(to: str) -> models.ForeignKey:
    """A blog or country column as the summaries declare it: no constraint, no index."""
    return models.ForeignKey(
        db_constraint=False,
        db_index=False,
        on_delete=models.deletion.DO_NOTHING,
        related_name="+",
        to=to,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_throttle_counter"),
        ("rollups", "0015_monthly_blog_covering"),
    ]

    operations = [
        migrations.RunPython(forget_recent, forget_recent, elidable=False),
        migrations.DeleteModel(name="MinuteBlogCountryViews"),
        migrations.CreateModel(
            name="MinuteBlogCountryViews",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "blog",
                        "minute",
                        "country",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("views", models.BigIntegerField()),
                ("minute", models.DateTimeField(help_text="The minute's first instant (UTC).")),
                ("blog", _reference("core.blog")),
                ("country", _reference("core.country")),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["country", "minute", "blog"], name="minuteblogcountry_country"
                    )
                ],
            },
        ),
        migrations.AddIndex(
            model_name="minuteblogviews",
            index=models.Index(fields=["blog", "minute"], name="minuteblog_blog"),
        ),
        migrations.AddIndex(
            model_name="fiveminuteblogviews",
            index=models.Index(fields=["blog", "minute"], name="fiveminuteblog_blog"),
        ),
        migrations.RunPython(empty_recent, empty_recent, elidable=False),
    ]
