"""URLs of the regulator pages."""

from __future__ import annotations

from django.urls import URLPattern, path

from traceability.pages import regulator

urlpatterns: list[URLPattern] = [
    path("", regulator.overview, name="regulator-overview"),
    path("ledger/", regulator.ledger, name="regulator-ledger"),
]
