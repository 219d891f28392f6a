from __future__ import annotations

from django.urls import URLPattern, path

from traceability.epcis import views

urlpatterns: list[URLPattern] = [
    path("events", views.EventsView.as_view(), name="api-epcis-events"),
    path("capture", views.CaptureView.as_view(), name="api-epcis-capture"),
]
