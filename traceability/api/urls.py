from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.urls import path, register_converter
from django.utils.csp import CSP
from django.views.decorators.csp import csp_override
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from traceability.api import views


class ImageFormat:
    regex = "svg|png"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class Serial(ImageFormat):
    """A GS1 serial (AI 21): CSET 82, at most 20 characters; anything else is a 404.

    A '/' arrives decoded (``%2F`` is ``/`` by the time URLs are matched): the
    routes put a fixed suffix after the serial, so it is still unambiguous.
    """

    regex = "[-!\"%&'()*+,./0-9:;<=>?A-Z_a-z]{1,20}"


register_converter(ImageFormat, "image")
register_converter(Serial, "serial")

# Swagger UI (installed from the lock file, served from our static files) sets
# inline styles; only its page allows them. Scripts stay 'self' only.
api_docs = csp_override({**cast(dict[str, Any], settings.SECURE_CSP), "style-src": [CSP.SELF, CSP.UNSAFE_INLINE]})(
    SpectacularSwaggerSplitView.as_view(url_name="api-schema")
)

urlpatterns = [
    path("auth/token", views.TokenView.as_view(), name="api-token"),
    path("me", views.MeView.as_view(), name="api-me"),
    path("organisations/", views.OrganisationList.as_view(), name="api-organisation-list"),
    path("organisations/<int:pk>/", views.OrganisationDetail.as_view(), name="api-organisation-detail"),
    path("sites/", views.SiteList.as_view(), name="api-site-list"),
    path("sites/<int:pk>/", views.SiteDetail.as_view(), name="api-site-detail"),
    path("products/", views.ProductList.as_view(), name="api-product-list"),
    path("products/<int:pk>/", views.ProductDetail.as_view(), name="api-product-detail"),
    path("batches/", views.BatchList.as_view(), name="api-batch-list"),
    path("batches/<int:pk>/", views.BatchDetail.as_view(), name="api-batch-detail"),
    path("batches/<int:pk>/serials/", views.BatchSerialList.as_view(), name="api-batch-serials"),
    path("batches/<int:pk>/qr.<image:image_format>", views.BatchQR.as_view(), name="api-batch-qr"),
    path(
        "batches/<int:pk>/serials/<serial:serial>/qr.<image:image_format>",
        views.SerialQR.as_view(),
        name="api-serial-qr",
    ),
    path("shipments/", views.ShipmentList.as_view(), name="api-shipment-list"),
    path("shipments/<int:pk>/", views.ShipmentDetail.as_view(), name="api-shipment-detail"),
    path("shipments/<int:pk>/dispatch", views.ShipmentDispatch.as_view(), name="api-shipment-dispatch"),
    path("shipments/<int:pk>/handover", views.ShipmentHandover.as_view(), name="api-shipment-handover"),
    path("shipments/<int:pk>/receive", views.ShipmentReceive.as_view(), name="api-shipment-receive"),
    path("shipments/<int:pk>/excursions/", views.ShipmentExcursions.as_view(), name="api-shipment-excursions"),
    path("alerts/", views.AlertList.as_view(), name="api-alert-list"),
    path("alerts/<int:pk>/", views.AlertDetail.as_view(), name="api-alert-detail"),
    path("alerts/<int:pk>/acknowledge", views.AlertAcknowledge.as_view(), name="api-alert-acknowledge"),
    path("alerts/<int:pk>/resolve", views.AlertResolve.as_view(), name="api-alert-resolve"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", api_docs, name="api-docs"),
]
