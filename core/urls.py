from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from core import views
from core.auth import TokenObtainView, TokenRefreshView

urlpatterns = [
    # Before admin.site.urls, whose own login/ it answers (the throttled sign-in's 429).
    path("", include("dashboard.urls")),
    path("admin/login/", views.admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("healthz", views.HealthView.as_view(), name="healthz"),
    path("readyz", views.ReadyView.as_view(), name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("api/token/", TokenObtainView.as_view(), name="token-obtain"),
    path("api/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("api/ingest/", include("ingest.urls")),
    path("api/rollups/", include("rollups.urls")),
    path("api/analytics/", include("api.urls")),
    # One version: a ?version= from the query string would only reach the Content-Disposition
    # header (a control character there made the server answer 500).
    path(
        "api/schema/",
        SpectacularAPIView.as_view(api_version=settings.SPECTACULAR_SETTINGS["VERSION"]),
        name="schema",
    ),
    path("swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="core/redoc.html"),
        name="redoc",
    ),
]

handler400 = "core.views.bad_request"
handler403 = "core.views.permission_denied"
handler404 = "core.views.page_not_found"
handler500 = "core.views.server_error"
