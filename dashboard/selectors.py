"""What the dashboard page needs besides the read API: the choices of its filters."""

from functools import cache

import pycountry

from core.models import Blog, Country

AUTHORS_LISTED = 2000


def country_choices() -> list[tuple[str, str]]:
    """Every country a view may carry, as ``(code, name)`` by name (``ZZ`` = Unknown)."""
    return list(Country.objects.order_by("name", "code").values_list("code", "name"))


def author_choices() -> list[str]:
    """Usernames of authors with at least one blog (at most ``AUTHORS_LISTED``), for the author
    filter's suggestions; any other username may still be typed."""
    return list(
        Blog.objects.order_by("author__username")
        .values_list("author__username", flat=True)
        .distinct()[:AUTHORS_LISTED]
    )


@cache
def country_numeric_codes() -> dict[str, str]:
    """ISO 3166-1 numeric code (as the world map's shapes are keyed) to alpha-2 code."""
    return {country.numeric: country.alpha_2 for country in pycountry.countries}
