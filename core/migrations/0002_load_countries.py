"""Load every ISO 3166-1 alpha-2 country from pycountry, plus ZZ = Unknown."""

from django.db import migrations

from core.countries import countries_ensure


def load_countries(apps, schema_editor):
    countries_ensure(apps.get_model("core", "Country"), using=schema_editor.connection.alias)


def unload_countries(apps, schema_editor):
    apps.get_model("core", "Country").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [migrations.RunPython(load_countries, unload_countries)]
