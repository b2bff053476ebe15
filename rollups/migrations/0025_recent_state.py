"""The per-minute levels get their own watermark row (``RecentState``), so that they are
absorbed in their own transactions, concurrently with the summaries (``rollups.absorb``).

The row starts where the summaries' watermark is, with their ``recent_*`` fields, which move
over: the per-minute rows counted exactly the views up to that watermark. Without a state row
yet there is nothing to move (the first run of the per-minute absorb counts the last hour).
"""

from django.db import migrations, models

FIELDS = ("recent_from", "recent_window_end", "recent_window_through_id")


def recent_state_split(apps, schema_editor):
    absorb_state = apps.get_model("rollups", "AbsorbState")
    recent_state = apps.get_model("rollups", "RecentState")
    for state in absorb_state.objects.all():
        recent_state.objects.update_or_create(
            name=state.name,
            defaults={
                "absorbed_through_id": state.absorbed_through_id,
                **{field: getattr(state, field) for field in FIELDS},
            },
        )


def recent_state_join(apps, schema_editor):
    """Back: the per-minute rows counted the views up to their own watermark, which may differ
    from the summaries'; empty them (the next absorb of that release counts the hour again)."""
    absorb_state = apps.get_model("rollups", "AbsorbState")
    absorb_state.objects.update(**{field: None for field in FIELDS})
    for model in (
        "MinuteBlogCountryViews",
        "MinuteBlogViews",
        "FiveMinuteBlogViews",
        "MinuteCountryViews",
        "MinuteViews",
        "WindowBlogViews",
        "WindowCountryViews",
    ):
        schema_editor.execute(f"DELETE FROM {apps.get_model('rollups', model)._meta.db_table}")


class Migration(migrations.Migration):
    dependencies = [
        ("rollups", "0024_last_days_fillfactor"),
    ]

    operations = [
        migrations.CreateModel(
            name="RecentState",
            fields=[
                ("name", models.CharField(max_length=50, primary_key=True, serialize=False)),
                ("absorbed_through_id", models.BigIntegerField(default=0)),
                (
                    "recent_from",
                    models.DateTimeField(
                        blank=True,
                        help_text="The per-minute rows count exactly the views up to the watermark viewed at or after this instant (a 5-minute boundary; empty: no per-minute rows yet).",
                        null=True,
                    ),
                ),
                (
                    "recent_window_end",
                    models.DateTimeField(
                        blank=True,
                        help_text="The realtime window rows sum the per-minute rows of the 30 minutes before this instant and of the 30 before the minute after it.",
                        null=True,
                    ),
                ),
                (
                    "recent_window_through_id",
                    models.BigIntegerField(
                        blank=True,
                        help_text="The watermark the realtime window rows were summed at: they hold only while it is the current one (empty: none).",
                        null=True,
                    ),
                ),
                ("last_run_at", models.DateTimeField(blank=True, null=True)),
                ("last_run_duration_ms", models.PositiveIntegerField(blank=True, null=True)),
                ("last_run_views", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(recent_state_split, recent_state_join),
        migrations.RemoveField(
            model_name="absorbstate",
            name="recent_from",
        ),
        migrations.RemoveField(
            model_name="absorbstate",
            name="recent_window_end",
        ),
        migrations.RemoveField(
            model_name="absorbstate",
            name="recent_window_through_id",
        ),
    ]
