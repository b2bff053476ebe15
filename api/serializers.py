"""Schemas of the analytics endpoints, for the OpenAPI document.

The endpoints validate with ``api.spec.spec_parse`` (strict: unknown fields, wrong types and
unknown codes are 400s); these serializers describe the same contract. Each endpoint's own
fields are derived from its ``Extra`` declarations; the filters' bounds come from the same
constants as the parser's, and ``api/tests/test_schema_rules.py`` checks that the two agree
field by field.
"""

import copy

from rest_framework import serializers

from api.spec import (
    COMPARISONS,
    GROUPED,
    MAX_COUNTRY_CODES,
    MAX_USERNAME_LENGTH,
    PERFORMANCE,
    PERIODS,
    REALTIME,
    REALTIME_FILTERS,
    TOP,
    Extra,
)
from core.dates import FIRST_DAY, LAST_DAY, RANGE_TEXT


def _country_codes(help_text: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z]{2}$"),
        required=False,
        allow_null=True,
        min_length=1,
        max_length=MAX_COUNTRY_CODES,
        help_text=help_text,
    )


class FiltersSerializer(serializers.Serializer):
    start_date = serializers.DateField(
        required=False,
        allow_null=True,
        help_text=f"First UTC day (inclusive), within {RANGE_TEXT}.",
    )
    end_date = serializers.DateField(
        required=False, allow_null=True, help_text=f"Last UTC day (inclusive), within {RANGE_TEXT}."
    )
    year = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=FIRST_DAY.year,
        max_value=LAST_DAY.year,
        help_text="Jan 1 to Dec 31 of that year; not together with start_date/end_date.",
    )
    country_codes = _country_codes(
        "Only views from these countries (case-insensitive ISO 3166-1 alpha-2; ZZ)."
    )
    exclude_country_codes = _country_codes("Drop views from these countries.")
    author_username = serializers.CharField(
        required=False,
        allow_null=True,
        min_length=1,
        max_length=MAX_USERNAME_LENGTH,
        help_text="Only views of this author's blogs; an unknown author gives empty results.",
    )


def _extra_field(extra: Extra) -> serializers.Field:
    if extra.choices:
        return serializers.ChoiceField(
            choices=extra.choices, required=False, allow_null=True, help_text=extra.help_text
        )
    return serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=extra.minimum,
        max_value=extra.maximum,
        default=extra.default,
        help_text=extra.help_text,
    )


def _request(name: str, extras: tuple[Extra, ...]) -> type[FiltersSerializer]:
    """The filters plus ``extras``, as a serializer class named ``name``."""
    fields = {extra.name: _extra_field(extra) for extra in extras}
    return type(name, (FiltersSerializer,), {"__module__": __name__, **fields})


GroupedRequestSerializer = _request("GroupedRequestSerializer", GROUPED)
TopRequestSerializer = _request("TopRequestSerializer", TOP)
PerformanceRequestSerializer = _request("PerformanceRequestSerializer", PERFORMANCE)
# Realtime's window is fixed: the filters without the dates, and its own limit.
RealtimeRequestSerializer = type(
    "RealtimeRequestSerializer",
    (serializers.Serializer,),
    {
        "__module__": __name__,
        **{
            name: copy.deepcopy(FiltersSerializer._declared_fields[name])
            for name in REALTIME_FILTERS
        },
        **{extra.name: _extra_field(extra) for extra in REALTIME},
    },
)


class CompareMetaSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=COMPARISONS)
    start_date = serializers.DateField(help_text="First day of the comparison range.")
    end_date = serializers.DateField(help_text="Last day of the comparison range.")
    current_start_date = serializers.DateField(help_text="First day of the answer's range.")
    current_end_date = serializers.DateField(
        help_text="Last day of the answer's range (an open end resolved to today)."
    )


class MetaSerializer(serializers.Serializer):
    filters = serializers.DictField(help_text="The normalized filters and options.")
    total = serializers.IntegerField(help_text="Rows before limit/offset.")
    as_of = serializers.DateTimeField(help_text="The answer counts every view committed before.")
    cached = serializers.BooleanField(help_text="Whether the answer came from the cache.")
    compare = CompareMetaSerializer(
        allow_null=True, help_text="The comparison range (null without compare)."
    )


# The fields a row gains with compare.
COMPARED = ("previous_views", "change_pct")


class ComparedSerializer(serializers.Serializer):
    """The two fields a row gains with ``compare``."""

    previous_views = serializers.IntegerField(
        required=False,
        help_text=(
            "With compare: the views of the same key (series: of the bucket's days, each mapped "
            "to the day it compares with) in the comparison range."
        ),
    )
    change_pct = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text=(
            "With compare: (views - previous_views) / previous_views x 100, 2 decimals; "
            "null where previous_views is 0."
        ),
    )


class PerformanceMetaSerializer(MetaSerializer):
    granularity = serializers.ChoiceField(choices=PERIODS, allow_null=True)
    granularity_auto = serializers.BooleanField()


class CountryRowSerializer(ComparedSerializer):
    country_code = serializers.CharField()
    country_name = serializers.CharField()
    blogs = serializers.IntegerField(help_text="Distinct blogs with a matching view.")
    views = serializers.IntegerField()


class AuthorRowSerializer(ComparedSerializer):
    username = serializers.CharField()
    blogs = serializers.IntegerField(help_text="Distinct blogs with a matching view.")
    views = serializers.IntegerField()


class BlogRowSerializer(ComparedSerializer):
    blog_id = serializers.IntegerField()
    title = serializers.CharField()
    username = serializers.CharField()
    views = serializers.IntegerField()


class PerformanceRowSerializer(ComparedSerializer):
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    label = serializers.CharField(  # type: ignore[assignment]  # a field named "label"
        help_text="2025-03-07, 2025-W10, 2025-03 or 2025."
    )
    blogs_created = serializers.IntegerField()
    views = serializers.IntegerField()
    growth_pct = serializers.FloatField(
        allow_null=True, help_text="Against the previous row; null first and after 0 views."
    )


class CountryResponseSerializer(serializers.Serializer):
    results = CountryRowSerializer(many=True)
    meta = MetaSerializer()


class AuthorResponseSerializer(serializers.Serializer):
    results = AuthorRowSerializer(many=True)
    meta = MetaSerializer()


class BlogResponseSerializer(serializers.Serializer):
    results = BlogRowSerializer(many=True)
    meta = MetaSerializer()


class PerformanceResponseSerializer(serializers.Serializer):
    results = PerformanceRowSerializer(many=True)
    meta = PerformanceMetaSerializer()


class EndpointSerializer(serializers.Serializer):
    name = serializers.CharField()
    methods = serializers.ListField(
        child=serializers.ChoiceField(choices=["GET", "POST"]),
        help_text="The methods the endpoint takes (HEAD and OPTIONS too, for any).",
    )
    url = serializers.URLField()
    description = serializers.CharField()


class ApiRootSerializer(serializers.Serializer):
    endpoints = EndpointSerializer(many=True)


class RealtimeMinuteSerializer(serializers.Serializer):
    minute = serializers.DateTimeField(help_text="The UTC minute's first instant.")
    views = serializers.IntegerField()


class RealtimeBlogSerializer(serializers.Serializer):
    blog_id = serializers.IntegerField()
    title = serializers.CharField()
    username = serializers.CharField()
    views = serializers.IntegerField()


class RealtimeCountrySerializer(serializers.Serializer):
    country_code = serializers.CharField()
    country_name = serializers.CharField()
    views = serializers.IntegerField()


class RealtimeResultsSerializer(serializers.Serializer):
    views_last_5_minutes = serializers.IntegerField(
        help_text="The current minute (so far) and the 4 before it."
    )
    views_last_30_minutes = serializers.IntegerField(
        help_text="The current minute (so far) and the 29 before it."
    )
    per_minute = RealtimeMinuteSerializer(many=True, help_text="30 minutes, oldest first.")
    top_blogs = RealtimeBlogSerializer(many=True)
    top_countries = RealtimeCountrySerializer(many=True)


class RealtimeMetaSerializer(serializers.Serializer):
    filters = serializers.DictField(help_text="The normalized filters and options.")
    as_of = serializers.DateTimeField(help_text="The answer counts every view committed before.")
    window_start = serializers.DateTimeField(help_text="First instant of the 30 minutes.")
    window_end = serializers.DateTimeField(help_text="The end of the current minute (excluded).")
    cached = serializers.BooleanField(help_text="Whether the answer came from the cache.")


class RealtimeResponseSerializer(serializers.Serializer):
    results = RealtimeResultsSerializer()
    meta = RealtimeMetaSerializer()
