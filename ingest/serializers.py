"""Schemas of the ingest endpoint, for the OpenAPI document.

The endpoint itself validates with ``ingest.services.views_parse`` (one pass over the batch, no
per-item serializer in the hot loop); these serializers describe the same contract.
"""

from rest_framework import serializers

from ingest.services import MAX_BATCH, MAX_BLOG_ID


class IngestViewItemSerializer(serializers.Serializer):
    blog_id = serializers.IntegerField(
        min_value=1, max_value=MAX_BLOG_ID, help_text="Id of an existing blog."
    )
    country_code = serializers.RegexField(
        r"^[A-Za-z]{2}$",
        help_text="ISO 3166-1 alpha-2 code, case-insensitive; `ZZ` = unknown.",
    )
    viewed_at = serializers.DateTimeField(
        required=False,
        help_text=(
            "ISO 8601 with an offset or `Z`; omitted = server time now; at most 5 minutes in "
            "the future."
        ),
    )


class IngestViewsRequestSerializer(serializers.Serializer):
    views = serializers.ListField(
        child=IngestViewItemSerializer(), min_length=1, max_length=MAX_BATCH
    )


class IngestViewsResponseSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(
        help_text="Views stored; committed when this answer is sent."
    )
