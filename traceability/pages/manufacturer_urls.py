"""URLs of the manufacturer pages."""

from __future__ import annotations

from django.urls import URLPattern, path

from traceability.pages import manufacturer

urlpatterns: list[URLPattern] = [
    path("products/", manufacturer.products, name="manufacturer-products"),
    path("batches/", manufacturer.batches, name="manufacturer-batches"),
    path("batches/new", manufacturer.batch_new, name="manufacturer-batch-new"),
    path("batches/<int:pk>/", manufacturer.batch_detail, name="manufacturer-batch"),
    path("batches/<int:pk>/quarantine", manufacturer.batch_quarantine_view, name="manufacturer-batch-quarantine"),
    path("batches/<int:pk>/release", manufacturer.batch_release_view, name="manufacturer-batch-release"),
    path("batches/<int:pk>/labels", manufacturer.batch_labels, name="manufacturer-batch-labels"),
]
