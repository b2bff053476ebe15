"""Load every ISO 3166-1 alpha-2 country from pycountry, plus ZZ = Unknown."""

from django.db import migrations


def load_countries(apps, schema_editor):
    import pycountry

    Country = apps.get_model("core", "Country")
    rows = [
        Country(code=c.alpha_2, name=getattr(c, "common_name", None) or c.name)
        for c in pycountry.countries
    ]
    rows.append(Country(code="ZZ", name="Unknown"))
    Country.objects.bulk_create(rows, ignore_conflicts=True)


def unload_countries(apps, schema_editor):
    apps.get_model("core", "Country").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [migrations.RunPython(load_countries, unload_countries)]
