"""Schemas of the analytics endpoints, for the OpenAPI document.

The endpoints validate with ``api.spec.spec_parse`` (strict: unknown fields, wrong types and
unknown codes are 400s); these serializers describe the same contract.
"""

from rest_framework import serializers

from api.spec import MAX_COUNTRY_CODES, MAX_OFFSET, MAX_USERNAME_LENGTH, PERIODS
from core.dates import RANGE_TEXT


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
        min_value=1900,
        max_value=2100,
        help_text="Jan 1 to Dec 31 of that year; not together with start_date/end_date.",
    )
    country_codes = serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z]{2}$"),
        required=False,
        allow_null=True,
        min_length=1,
        max_length=MAX_COUNTRY_CODES,
        help_text="Only views from these countries (case-insensitive ISO 3166-1 alpha-2; ZZ).",
    )
    exclude_country_codes = serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z]{2}$"),
        required=False,
        allow_null=True,
        min_length=1,
        max_length=MAX_COUNTRY_CODES,
        help_text="Drop views from these countries.",
    )
    author_username = serializers.CharField(
        required=False,
        allow_null=True,
        min_length=1,
        max_length=MAX_USERNAME_LENGTH,
        help_text="Only views of this author's blogs; an unknown author gives empty results.",
    )


class GroupedRequestSerializer(FiltersSerializer):
    limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=1000, default=100
    )
    offset = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_OFFSET, default=0
    )


class TopRequestSerializer(FiltersSerializer):
    limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=100, default=10
    )


class PerformanceRequestSerializer(FiltersSerializer):
    compare_period = serializers.ChoiceField(
        choices=PERIODS,
        required=False,
        allow_null=True,
        help_text=(
            "Bucket size; omitted = automatic (<= 31 days: day, <= 180: week, else month, or "
            "year where month would give more than 1,000 buckets). More than 1,000 buckets of "
            "an explicit size is a 400."
        ),
    )


class MetaSerializer(serializers.Serializer):
    filters = serializers.DictField(help_text="The normalized filters and options.")
    total = serializers.IntegerField(help_text="Rows before limit/offset.")
    as_of = serializers.DateTimeField(help_text="The answer counts every view committed before.")
    cached = serializers.BooleanField(help_text="Whether the answer came from the cache.")


class PerformanceMetaSerializer(MetaSerializer):
    granularity = serializers.ChoiceField(choices=PERIODS, allow_null=True)
    granularity_auto = serializers.BooleanField()


class CountryRowSerializer(serializers.Serializer):
    country_code = serializers.CharField()
    country_name = serializers.CharField()
    blogs = serializers.IntegerField(help_text="Distinct blogs with a matching view.")
    views = serializers.IntegerField()


class AuthorRowSerializer(serializers.Serializer):
    username = serializers.CharField()
    blogs = serializers.IntegerField(help_text="Distinct blogs with a matching view.")
    views = serializers.IntegerField()


class BlogRowSerializer(serializers.Serializer):
    blog_id = serializers.IntegerField()
    title = serializers.CharField()
    username = serializers.CharField()
    views = serializers.IntegerField()


class PerformanceRowSerializer(serializers.Serializer):
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
    method = serializers.CharField()
    url = serializers.URLField()
    description = serializers.CharField()


class ApiRootSerializer(serializers.Serializer):
    endpoints = EndpointSerializer(many=True)
