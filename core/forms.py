import math
from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from core.throttling import LOGIN_THROTTLED_MESSAGE, login_throttle_wait


class LoginThrottledMixin(AuthenticationForm):
    """A sign-in form refusing before the password is checked (and hashed) while the username
    or the client's address is throttled (``core.throttling``). ``throttle_wait`` then holds the
    seconds left, for the view's 429 and ``Retry-After``."""

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


class LoginThrottledForm(LoginThrottledMixin):
    """The dashboard's sign-in form: any active user."""


class LoginThrottledAdminForm(LoginThrottledMixin, AdminAuthenticationForm):
    """The admin's sign-in form: active staff only."""
