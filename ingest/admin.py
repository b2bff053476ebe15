from django.contrib import admin
from django.http import HttpRequest

from ingest.models import BlogView, IdempotencyKey


@admin.register(BlogView)
class BlogViewAdmin(admin.ModelAdmin):
    """Read-only: raw views are append-only and arrive through the ingest write path."""

    list_display = ["id", "blog", "country", "viewed_at"]
    list_select_related = ["blog", "country"]
    ordering = ["-id"]
    # The raw table grows to tens of millions of rows: skip the unfiltered COUNT(*).
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BlogView | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BlogView | None = None) -> bool:
        return False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    """Read-only: keys are written by ingest and deleted by the periodic expiry task."""

    list_display = ["key", "user", "status", "created_at"]
    list_select_related = ["user"]
    search_fields = ["key"]
    ordering = ["-created_at"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: IdempotencyKey | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: IdempotencyKey | None = None
    ) -> bool:
        return False
