"""Each (country, blog) pair's last absorbed day, by country and block of 256 blogs: the tail of
a read whose range reaches the last absorbed day is tested against it pair by pair (an array
subscript) instead of probing the presence index for each pair.

Filled from the presence rows (each pair's latest row's last bit) on PostgreSQL, in about a
second at 10 M views. It needs worker and beat stopped: a previous release's worker would not
move the pairs' days on (a rebuild of any range recomputes them).
"""

import django.db.models.deletion
from django.db import migrations, models

import rollups.models

# rollups.tables.LAST_DAYS_BLOCK when this was written.
BLOCK = 256


def last_days_fill(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        "INSERT INTO rollups_countrybloglastdays (country_id, block, days) "
        "SELECT g.country_id, g.block, ARRAY(SELECT coalesce(n.day, e.day) "
        f"FROM unnest(array_fill('-infinity'::date, ARRAY[{BLOCK}])) WITH ORDINALITY e (day, slot) "
        "LEFT JOIN unnest(g.slots, g.days) n (slot, day) ON n.slot = e.slot ORDER BY e.slot) "
        f"FROM (SELECT country_id, blog_id / {BLOCK} AS block, "
        f"array_agg(mod(blog_id, {BLOCK}) + 1) AS slots, array_agg(day) AS days FROM ("
        "SELECT DISTINCT ON (p.country_id, p.blog_id) p.country_id, p.blog_id, "
        "make_date(p.year, 1, 1) + (length(rtrim(p.days::text, '0')) - 1) AS day "
        "FROM rollups_yearlypresence p ORDER BY p.country_id, p.blog_id, p.year DESC) pairs "
        "GROUP BY 1, 2) g ORDER BY 1, 2"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_throttle_counter"),
        ("rollups", "0022_trailing_rows"),
    ]

    operations = [
        migrations.CreateModel(
            name="CountryBlogLastDays",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "block",
                    models.IntegerField(help_text="The blog id divided by the block size (256)."),
                ),
                ("days", rollups.models.BlockDays()),
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
                        fields=("country", "block"), name="countrybloglastdays_key"
                    )
                ],
            },
        ),
        migrations.RunPython(last_days_fill, migrations.RunPython.noop),
    ]
