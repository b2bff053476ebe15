"""The dashboard (``/``) and its sign-in pages: server-rendered, the numbers fetched by the
page from the read API with the session (``dashboard/static/dashboard/dashboard.js``)."""

from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import ensure_csrf_cookie

from core.forms import LoginThrottledForm
from core.views import login_throttled_status
from dashboard.selectors import author_choices, country_choices, country_numeric_codes


@ensure_csrf_cookie
def dashboard(request: HttpRequest) -> HttpResponse:
    """The dashboard; without ``ANALYTICS_PUBLIC_READ`` only for signed-in users (others are
    sent to the sign-in page, and come back here after it)."""
    if not (settings.ANALYTICS_PUBLIC_READ or request.user.is_authenticated):
        return redirect_to_login(request.get_full_path(), reverse("dashboard-login"))
    context: dict[str, Any] = {
        "countries": country_choices(),
        "authors": author_choices(),
        "config": {
            "today": timezone.now().date().isoformat(),
            "staff": bool(request.user.is_staff),
            "numeric": country_numeric_codes(),
            "urls": {
                "analytics": reverse("analytics-root"),
                "rollupsStatus": reverse("rollups-status"),
                "rollupsRebuild": reverse("rollups-rebuild"),
                "map": static("vendor/world-atlas-2.0.2/countries-110m.json"),
            },
        },
    }
    return render(request, "dashboard/index.html", context)


class LoginView(auth_views.LoginView):
    """Django's sign-in page, styled like the dashboard, throttled like every sign-in (429 with
    ``Retry-After``)."""

    template_name = "dashboard/login.html"
    form_class = LoginThrottledForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return login_throttled_status(super().post(request, *args, **kwargs))


class LogoutView(auth_views.LogoutView):
    """Sign out (POST only, as Django requires), then the sign-in page."""

    next_page = "dashboard-login"
