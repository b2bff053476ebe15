from rest_framework import serializers

from rollups.models import RebuildJob
from rollups.rebuild import REBUILD_FIRST_DAY, REBUILD_LAST_DAY, rebuild_range_errors


class RebuildRequestSerializer(serializers.Serializer):
    start_date = serializers.DateField(
        required=False,
        allow_null=True,
        help_text=f"First UTC day, in {REBUILD_FIRST_DAY}..{REBUILD_LAST_DAY}; omitted = the "
        "earliest data.",
    )
    end_date = serializers.DateField(
        required=False,
        allow_null=True,
        help_text=f"Last UTC day, in {REBUILD_FIRST_DAY}..{REBUILD_LAST_DAY}; omitted = the "
        "latest data.",
    )

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: "unknown field" for name in unknown})
        errors = rebuild_range_errors(
            start_date=attrs.get("start_date"), end_date=attrs.get("end_date")
        )
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class RebuildAcceptedSerializer(serializers.Serializer):
    job_id = serializers.UUIDField()
    created = serializers.BooleanField(
        help_text="True: a new job (202). False: a job of exactly this range was already queued "
        "or running, and this is it (200)."
    )
    state = serializers.ChoiceField(choices=RebuildJob.State.choices)


class RebuildJobSerializer(serializers.ModelSerializer):
    job_id = serializers.UUIDField(source="id")
    duration_ms = serializers.SerializerMethodField()

    class Meta:
        model = RebuildJob
        fields = [
            "job_id",
            "state",
            "start_date",
            "end_date",
            "progress",
            "views_rebuilt",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
        ]
        # An answer, never a request: every field is always present (null where it has no
        # value yet), and read-only fields are required in the schema's response component.
        read_only_fields = fields

    def get_duration_ms(self, job: RebuildJob) -> int | None:
        if job.started_at is None or job.finished_at is None:
            return None
        return int((job.finished_at - job.started_at).total_seconds() * 1000)


class AuditSummarySerializer(serializers.Serializer):
    finished_at = serializers.DateTimeField()
    days = serializers.ListField(child=serializers.DateField(), help_text="The days recounted.")
    drift_groups = serializers.IntegerField(
        help_text="Daily summary groups that differed from the raw views (0: none)."
    )
    drift_days = serializers.ListField(child=serializers.DateField())
    drifts = serializers.ListField(
        child=serializers.DictField(),
        help_text="Each differing group (the first 1,000): day, table, blog_id, country_id, "
        "expected, found.",
    )
    repair_jobs = serializers.ListField(child=serializers.UUIDField())


class RollupStatusSerializer(serializers.Serializer):
    pending_views = serializers.IntegerField(help_text="Raw views not yet absorbed.")
    absorbed_through_id = serializers.IntegerField(
        help_text="Every raw view with an id up to this one is in the summaries."
    )
    last_run_at = serializers.DateTimeField(allow_null=True)
    last_run_duration_ms = serializers.IntegerField(allow_null=True)
    lag_seconds = serializers.FloatField(
        help_text="0 when nothing is pending, else seconds since the last absorb run."
    )
    absorb_alive = serializers.BooleanField(
        help_text="False when no absorb run finished within three ROLLUP_INTERVAL_SECONDS: "
        "beat, or every worker, is gone (reads slow down as the raw tail grows)."
    )
    last_audit = AuditSummarySerializer(
        allow_null=True, help_text="The last drift audit (manage.py verify_rollups, daily task)."
    )
