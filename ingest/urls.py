from django.urls import path

from ingest.views import ViewsIngestView

urlpatterns = [
    path("views/", ViewsIngestView.as_view(), name="ingest-views"),
]
