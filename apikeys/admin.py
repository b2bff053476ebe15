from typing import Any, cast

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from apikeys.models import ApiKey
from apikeys.services import api_keys_revoke

# The library's own concrete model (its app must be installed for the abstract one): unused here.
admin.site.unregister(APIKey)


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """Create a key (its secret is shown once, in the message after saving), revoke it (the
    checkbox, or the action), edit its name, scope, author restriction and expiry."""

    model = ApiKey
    # The library's admin types these as tuples of its own lengths.
    list_display = cast(
        Any,
        (
            "prefix",
            "name",
            "user",
            "scope",
            "author",
            "created",
            "expiry_date",
            "_has_expired",
            "last_used_at",
            "revoked",
        ),
    )
    list_filter = cast(Any, ("scope", "revoked", "created"))
    list_select_related = ("user", "author")
    search_fields = cast(Any, ("name", "prefix", "user__username", "author__username"))
    raw_id_fields = ("user", "author")
    fields = (
        "name",
        "user",
        "scope",
        "author",
        "expiry_date",
        "revoked",
        "prefix",
        "created",
        "last_used_at",
    )
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = (*super().get_readonly_fields(request, obj), "created", "last_used_at")
        if obj is not None and obj.revoked:
            fields = (*fields, "user", "scope", "author")
        return fields

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # A key acts for a user: by default the admin creating it.
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    @admin.action(description="Revoke the selected API keys (cannot be undone)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = api_keys_revoke(prefixes=list(queryset.values_list("prefix", flat=True)))
        self.message_user(request, f"{count} API key(s) revoked.", messages.SUCCESS)
