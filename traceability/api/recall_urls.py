"""API URLs of recalls and traces (under ``api/v1/``)."""

from __future__ import annotations

from django.urls import URLPattern, path

from traceability.api import recalls

urlpatterns: list[URLPattern] = [
    path("recalls/", recalls.RecallList.as_view(), name="api-recall-list"),
    path("recalls/preview", recalls.RecallPreview.as_view(), name="api-recall-preview"),
    path("recalls/<int:pk>/", recalls.RecallDetail.as_view(), name="api-recall-detail"),
    path("recalls/<int:pk>/acknowledge", recalls.RecallAcknowledge.as_view(), name="api-recall-acknowledge"),
    path("recalls/<int:pk>/close", recalls.RecallClose.as_view(), name="api-recall-close"),
    path("batches/<int:pk>/trace", recalls.BatchTrace.as_view(), name="api-batch-trace"),
    path("batches/<int:pk>/dispense", recalls.BatchDispense.as_view(), name="api-batch-dispense"),
    path("shipments/<int:pk>/trace", recalls.ShipmentTrace.as_view(), name="api-shipment-trace"),
    path("sites/<int:pk>/trace", recalls.SiteTrace.as_view(), name="api-site-trace"),
]
