"""This project's own schemathesis check, loaded by the soak's run of the CLI
(``SCHEMATHESIS_HOOKS=soak.fuzz_checks``, see ``soak/test_fuzz.py``).

``positive_data_acceptance`` is on: a request that the schema calls valid must not be refused.
A few rules cannot be written in an OpenAPI schema, though, and a 400 for one of them is right;
the schema states them in words. This check lets a 400 through only when every problem it
names is one of them, so a rule the schema *could* state but does not (a bound, a length, an
enum) fails the run.
"""

from typing import Any

import schemathesis

# What the 400 details say (substrings of ``reason``) for the rules a schema cannot state.
UNSTATED_RULES = {
    # A date's range (JSON Schema bounds numbers, not dates): core.dates.
    "is outside": "dates lie in 1900-01-01..2100-12-31",
    "must lie in": "a rebuild's dates lie in 1900-01-01..2100-12-31",
    # One field compared with another.
    "is after end_date": "start_date <= end_date",
    "give either year or start_date/end_date": "year or start_date/end_date, not both",
    # compare needs a start not after the resolved end (an open end is today: the clock).
    "compare needs": "compare needs a start (year or start_date) that is not after today",
    # Depends on the range and the bucket size together.
    "buckets": "at most 1,000 buckets in a series",
    # Depends on the database's rows: the countries table and the blogs.
    "unknown country code": "country codes of the countries table",
    "no blog with id": "blog ids that exist",
    # Depends on the clock.
    "minutes in the future": "viewed_at at most 5 minutes ahead",
}


@schemathesis.check
def refusals_name_only_unstated_rules(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 400 to data the schema calls valid must name only rules a schema cannot state."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code != 400:
        return None
    try:
        details = response.json()["error"]["details"] or []
    except (ValueError, KeyError, TypeError):
        details = []
    stated = [
        detail
        for detail in details
        if not any(rule in str(detail.get("reason", "")) for rule in UNSTATED_RULES)
    ]
    if stated or not details:
        raise AssertionError(
            "Valid data by the schema was refused for a rule the schema could state: "
            f"{stated or response.text[:300]}"
        )
    return None
