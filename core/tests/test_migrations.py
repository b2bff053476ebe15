from io import StringIO

import pycountry
import pytest
from django.core.management import call_command

from core.countries import countries_ensure
from core.models import Country

pytestmark = pytest.mark.django_db


def test_country_table_holds_every_iso_3166_alpha_2_code_plus_unknown() -> None:
    expected = {country.alpha_2 for country in pycountry.countries} | {"ZZ"}

    assert len(pycountry.countries) == 249  # the officially assigned codes
    assert sorted(Country.objects.values_list("code", flat=True)) == sorted(expected)
    assert Country.objects.get(code="ZZ").name == "Unknown"


def test_every_country_has_a_name() -> None:
    assert not Country.objects.filter(name="").exists()
    assert all(name.strip() for name in Country.objects.values_list("name", flat=True))


def test_country_names_prefer_the_common_name() -> None:
    # pycountry's official name of TW is "Taiwan, Province of China"; its common name is shorter.
    expected = {
        country.alpha_2: getattr(country, "common_name", None) or country.name
        for country in pycountry.countries
    }
    stored = dict(Country.objects.exclude(code="ZZ").values_list("code", "name"))

    assert stored == expected
    assert stored["TW"] == "Taiwan"


def test_loading_the_countries_again_changes_nothing() -> None:
    # What the migration and the post_migrate hook (after a flush) both run.
    before = list(Country.objects.values_list("code", "name"))

    countries_ensure(Country)

    assert list(Country.objects.values_list("code", "name")) == before


def test_models_and_migrations_agree() -> None:
    out = StringIO()
    # Exits non-zero (SystemExit) when a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
