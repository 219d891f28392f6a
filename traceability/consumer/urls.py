"""GS1 Digital Link paths (spec/interfaces.md, "HTTP"). One view parses every link as it was sent; the
named routes are the three shapes ColdTrace prints, and the last catches every other path under /01/ so
that a malformed link gets a 400 saying what is wrong rather than a bare 404."""

from __future__ import annotations

from django.urls import path, re_path

from traceability.consumer import views

urlpatterns = [
    path("01/<str:gtin>", views.digital_link, name="digital-link-gtin"),
    path("01/<str:gtin>/10/<str:lot>", views.digital_link, name="digital-link-lot"),
    path("01/<str:gtin>/10/<str:lot>/21/<str:serial>", views.digital_link, name="digital-link-serial"),
    re_path(r"^01/", views.digital_link, name="digital-link-other"),
]
