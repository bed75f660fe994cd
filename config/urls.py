from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from board.api import api

handler400 = "config.errors.bad_request"
handler404 = "config.errors.page_not_found"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("runbooks/", include("checklists.urls")),
    path("", include("board.urls")),
]
