"""The country reference data: every ISO 3166-1 alpha-2 code from pycountry, plus ZZ."""

from typing import Any

UNKNOWN = ("ZZ", "Unknown")


def country_rows() -> list[tuple[str, str]]:
    """(code, name) of every country; the common name where pycountry has one."""
    import pycountry

    rows = [
        (country.alpha_2, getattr(country, "common_name", None) or country.name)
        for country in pycountry.countries
    ]
    return [*rows, UNKNOWN]


def countries_ensure(model: Any, *, using: str = "default") -> None:
    """Insert the countries ``model`` (the current or a historical Country) is missing."""
    model.objects.using(using).bulk_create(
        [model(code=code, name=name) for code, name in country_rows()], ignore_conflicts=True
    )
