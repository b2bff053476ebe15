from django.urls import path

from rollups.views import RebuildJobView, RebuildView, RollupStatusView

urlpatterns = [
    path("rebuild/", RebuildView.as_view(), name="rollups-rebuild"),
    path("jobs/<uuid:job_id>/", RebuildJobView.as_view(), name="rollups-job"),
    path("status/", RollupStatusView.as_view(), name="rollups-status"),
]
