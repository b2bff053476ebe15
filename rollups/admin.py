from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from core.exceptions import ApplicationError
from rollups.audit import audit_repair
from rollups.jobs import RebuildJobConflict, RebuildJobNotQueued, rebuild_job_create
from rollups.models import AbsorbState, RebuildJob, RecentState, RollupAudit
from rollups.rebuild import rebuild_range_errors


class RebuildJobForm(forms.ModelForm):
    class Meta:
        model = RebuildJob
        fields = ["start_date", "end_date"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        errors = rebuild_range_errors(
            start_date=cleaned.get("start_date"), end_date=cleaned.get("end_date")
        )
        for field, reason in errors.items():
            self.add_error(field, reason)
        return cleaned


def _job_page(job_id: object) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:rollups_rebuildjob_change", args=[job_id]))


def _error_text(error: ApplicationError) -> str:
    reasons = "; ".join(str(detail["reason"]) for detail in error.details)
    return f"{error.message} ({reasons})" if reasons else error.message


@admin.register(RebuildJob)
class RebuildJobAdmin(admin.ModelAdmin):
    """Rebuilds from the admin: "Add rebuild job" picks a date range and queues the job."""

    form = RebuildJobForm
    list_display = [
        "created_at",
        "start_date",
        "end_date",
        "state",
        "progress_bar",
        "views_rebuilt",
    ]
    list_filter = ["state"]
    fields = ["start_date", "end_date"]
    readonly_fields = [
        "state",
        "progress_bar",
        "views_rebuilt",
        "error",
        "requested_by",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
    ]

    class Media:
        # Moves the bar of a queued or running job on its own page (the job API, with the
        # admin's session), and reloads the page once the job has ended.
        js = ["rollups/job_progress.js"]

    @admin.display(description="progress")
    def progress_bar(self, obj: RebuildJob) -> str:
        percent = round(obj.progress * 100)
        return format_html(
            '<progress class="rebuild-progress" max="100" value="{}" data-job-url="{}" '
            'data-state="{}">{} %</progress> <span class="rebuild-progress-text">{} %</span>',
            percent,
            reverse("rollups-job", args=[obj.pk]),
            obj.state,
            percent,
            percent,
        )

    def get_fields(self, request: HttpRequest, obj: RebuildJob | None = None) -> Any:
        return self.fields if obj is None else ["start_date", "end_date", *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: RebuildJob | None = None) -> Any:
        return [] if obj is None else ["start_date", "end_date", *self.readonly_fields]

    def has_change_permission(self, request: HttpRequest, obj: RebuildJob | None = None) -> bool:
        return False

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # A range overlapping another job's is refused from save_model; a broker that does not
        # take the new job's task is found when the admin's transaction commits. Either way the
        # job that the page can show is named.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except RebuildJobConflict as conflict:
            messages.error(request, conflict.message)
            return _job_page(conflict.job.pk)
        except RebuildJobNotQueued as not_queued:
            messages.error(request, _error_text(not_queued))
            return _job_page(not_queued.job_id)

    def save_model(self, request: HttpRequest, obj: RebuildJob, form: Any, change: bool) -> None:
        answer = rebuild_job_create(
            start_date=obj.start_date, end_date=obj.end_date, requested_by=request.user
        )
        job = answer.job
        obj.pk = job.pk
        if answer.created:
            # Said once the job is committed and its task sent; if the send fails, the error
            # that changeform_view reports is said instead.
            transaction.on_commit(
                lambda: messages.info(
                    request, f"Rebuild job {job.pk} queued; this page shows its progress."
                )
            )
        else:
            messages.info(
                request,
                f"A rebuild of this range is already {job.state}: job {job.pk}, shown here. "
                "No new job was queued.",
            )

    def response_add(
        self, request: HttpRequest, obj: RebuildJob, post_url_continue: str | None = None
    ) -> HttpResponse:
        # The job's page, which shows its progress (Django's "added successfully" would be wrong
        # when a job already running the range answered).
        return _job_page(obj.pk)

    @admin.action(description="Rebuild the same range again")
    def rebuild_again(self, request: HttpRequest, queryset: Any) -> None:
        queued = 0
        for job in queryset:
            try:
                answer = rebuild_job_create(
                    start_date=job.start_date, end_date=job.end_date, requested_by=request.user
                )
            except ApplicationError as error:
                messages.error(request, f"{job}: {_error_text(error)}")
                continue
            if answer.created:
                queued += 1
            else:
                messages.info(
                    request, f"{job}: job {answer.job.pk} is already {answer.job.state} for it."
                )
        if queued:
            messages.info(request, f"{queued} rebuild job(s) queued.")

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


@admin.register(RecentState)
class RecentStateAdmin(AbsorbStateAdmin):
    """The per-minute levels' watermark (realtime), absorbed beside the summaries'."""

    list_display = [*AbsorbStateAdmin.list_display, "recent_from"]


@admin.register(RollupAudit)
class RollupAuditAdmin(admin.ModelAdmin):
    """Drift audits (``manage.py verify_rollups`` and the periodic task): what each recounted,
    what differed; "Rebuild the drifting days" queues their repair."""

    list_display = ["finished_at", "day_count", "views_recounted", "drift_groups", "repair_jobs"]
    readonly_fields = [
        "started_at",
        "finished_at",
        "days",
        "absorbed_through_id",
        "views_recounted",
        "drift_groups",
        "drift_days",
        "drifts",
        "repair_jobs",
    ]
    actions = ["rebuild_drifting_days"]

    @admin.display(description="days")
    def day_count(self, obj: RollupAudit) -> int:
        return len(obj.days)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Rebuild the drifting days")
    def rebuild_drifting_days(self, request: HttpRequest, queryset: Any) -> None:
        for audit in queryset:
            if not audit.drift_days:
                messages.info(request, f"{audit}: nothing to repair.")
                continue
            try:
                job_ids = audit_repair(audit=audit, requested_by=request.user)
            except ApplicationError as error:
                messages.error(request, f"{audit}: {_error_text(error)}")
                continue
            messages.info(request, f"{audit}: rebuild job(s) {', '.join(job_ids)} queued.")
