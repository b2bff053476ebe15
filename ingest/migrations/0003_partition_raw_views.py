"""PostgreSQL: the raw views table becomes partitioned by month (``ingest.partitions``).

An existing table is converted with its views, each keeping its id, and the id sequence goes on
where it was (the absorb watermark stays valid). The table is held exclusively while it is
copied: see the README (*Raw storage*) for the time it takes per 10 M views. SQLite keeps its
plain table. The model does not change: Django still knows ``id`` as the primary key (the
database's is ``(id, viewed_at)``).
"""

from django.db import migrations

from ingest import partitions


def partition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        partitions.raw_table_partition(schema_editor.connection)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        partitions.raw_table_unpartition(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0002_idempotency_key"),
    ]

    operations = [
        migrations.RunPython(partition, unpartition, elidable=False),
    ]
