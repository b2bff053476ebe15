from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.LoginView.as_view(), name="dashboard-login"),
    path("logout/", views.LogoutView.as_view(), name="dashboard-logout"),
]
