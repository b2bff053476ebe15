"""Leave room on every summary page (PostgreSQL) so that absorb's in-place count updates are HOT.

At the default fillfactor of 100 an updated row rarely fits on its page, so nearly every
``views = views + n`` wrote a new row version and a new entry in every index (measured at 10 M
views: 2.5% HOT updates; the same upsert ran 2.3x faster and wrote 3x less WAL at 70).
"""

from django.db import migrations

TABLES = (
    "rollups_dailycountryviews",
    "rollups_monthlycountryviews",
    "rollups_dailyblogviews",
    "rollups_monthlyblogviews",
    "rollups_dailyblogcountryviews",
    "rollups_monthlyblogcountryviews",
    "rollups_yearlypresence",
)


def fillfactor(value):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {value})")

    return apply


class Migration(migrations.Migration):
    dependencies = [("rollups", "0001_initial")]

    operations = [migrations.RunPython(fillfactor(70), fillfactor(100))]
