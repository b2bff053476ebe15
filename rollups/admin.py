from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from rollups.models import AbsorbState, RebuildJob
from rollups.services import rebuild_job_create


@admin.register(RebuildJob)
class RebuildJobAdmin(admin.ModelAdmin):
    """Rebuilds from the admin: "Add rebuild job" picks a date range and queues the job."""

    list_display = ["created_at", "start_date", "end_date", "state", "progress", "views_rebuilt"]
    list_filter = ["state"]
    fields = ["start_date", "end_date"]
    readonly_fields = [
        "state",
        "progress",
        "views_rebuilt",
        "error",
        "requested_by",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
    ]

    def get_fields(self, request: HttpRequest, obj: RebuildJob | None = None) -> Any:
        return self.fields if obj is None else ["start_date", "end_date", *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: RebuildJob | None = None) -> Any:
        return [] if obj is None else ["start_date", "end_date", *self.readonly_fields]

    def has_change_permission(self, request: HttpRequest, obj: RebuildJob | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: RebuildJob, form: Any, change: bool) -> None:
        job = rebuild_job_create(
            start_date=obj.start_date, end_date=obj.end_date, requested_by=request.user
        )
        obj.pk = job.pk
        messages.info(request, f"Rebuild job {job.pk} queued; this page shows its progress.")

    @admin.action(description="Rebuild the same range again")
    def rebuild_again(self, request: HttpRequest, queryset: Any) -> None:
        for job in queryset:
            rebuild_job_create(
                start_date=job.start_date, end_date=job.end_date, requested_by=request.user
            )
        messages.info(request, f"{queryset.count()} rebuild job(s) queued.")

    actions = ["rebuild_again"]


@admin.register(AbsorbState)
class AbsorbStateAdmin(admin.ModelAdmin):
    list_display = ["name", "absorbed_through_id", "last_run_at", "last_run_duration_ms"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
