import math
from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from core.models import Blog, Country
from core.throttling import LOGIN_THROTTLED_MESSAGE, login_throttle_wait


class LoginThrottledAdminForm(AdminAuthenticationForm):
    """The admin's login form, refusing before the password is checked (and hashed) while the
    username or the client's address is throttled (``core.throttling``)."""

    throttle_wait: float | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if self.request is not None:
            self.throttle_wait = login_throttle_wait(
                request=self.request, username=username if isinstance(username, str) else None
            )
        if self.throttle_wait is not None:
            raise ValidationError(
                f"{LOGIN_THROTTLED_MESSAGE} Try again in {math.ceil(self.throttle_wait)} seconds.",
                code="throttled",
            )
        return super().clean()


admin.site.login_form = LoginThrottledAdminForm


class DateHierarchyChangeList(ChangeList):
    """Django's change list, with a date-hierarchy link past the calendar (``?created_at__year=
    9999&created_at__month=12``: the next month overflows) an invalid lookup, not a 500."""

    def get_filters(self, request: HttpRequest) -> Any:
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from exc


@admin.register(Country)
class CountryAdmin(admin.ModelAdmin):
    list_display = ["code", "name"]
    search_fields = ["code", "name"]


@admin.register(Blog)
class BlogAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "author", "created_at"]
    list_select_related = ["author"]
    search_fields = ["title", "author__username"]
    autocomplete_fields = ["author"]
    date_hierarchy = "created_at"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DateHierarchyChangeList
