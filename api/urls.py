from django.urls import path

from api import views

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="analytics-root"),
    path("blog-views/country/", views.CountryBreakdownView.as_view(), name="analytics-country"),
    path("blog-views/user/", views.AuthorBreakdownView.as_view(), name="analytics-user"),
    path("blog-views/<str:object_type>/", views.UnknownTypeView.as_view()),
    path("top/blog/", views.TopBlogsView.as_view(), name="analytics-top-blog"),
    path("top/user/", views.TopAuthorsView.as_view(), name="analytics-top-user"),
    path("top/country/", views.TopCountriesView.as_view(), name="analytics-top-country"),
    path("top/<str:top_type>/", views.UnknownTypeView.as_view()),
    path("performance/", views.PerformanceView.as_view(), name="analytics-performance"),
    path("realtime/", views.RealtimeView.as_view(), name="analytics-realtime"),
]
