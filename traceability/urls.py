from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from traceability import views
from traceability.signin import ThrottledLoginView, admin_login

# The admin site's URLs, its sign-in page replaced by one behind the sign-in lock-out (signin.admin_login).
admin_patterns, admin_app, admin_namespace = admin.site.urls

urlpatterns = [
    path("", views.home, name="home"),
    path("health/", views.health, name="health"),
    path("metrics", views.metrics, name="metrics"),
    path("", include("traceability.consumer.urls")),
    path("logistics/", include("traceability.pages.logistics_urls")),
    path("manufacturer/", include("traceability.pages.manufacturer_urls")),
    path("regulator/", include("traceability.pages.regulator_urls")),
    path("recalls/", include("traceability.pages.recall_urls")),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/ledger/", include("ledger.urls")),
    path("api/v1/", include("iot_ingest.urls")),
    path("api/v1/epcis/", include("traceability.epcis.urls")),
    path("api/v1/", include("traceability.api.recall_urls")),
    path("api/v1/", include("traceability.api.urls")),
    path("admin/status/", views.ops_status, name="ops-status"),  # before the admin's catch-all
    path("admin/", ([path("login/", admin_login, name="login"), *admin_patterns], admin_app, admin_namespace)),
]
