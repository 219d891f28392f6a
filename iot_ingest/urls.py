from __future__ import annotations

from django.urls import path

from iot_ingest import api

urlpatterns = [
    path("ingest/readings", api.IngestReadings.as_view(), name="ingest-readings"),
    path("devices/", api.DeviceList.as_view(), name="api-device-list"),
    path("devices/<str:device_id>/", api.DeviceDetail.as_view(), name="api-device-detail"),
    path("shipments/<int:pk>/devices", api.ShipmentDevices.as_view(), name="api-shipment-devices"),
    path("shipments/<int:pk>/readings/", api.ShipmentReadings.as_view(), name="api-shipment-readings"),
    path(
        "shipments/<int:pk>/readings/<int:reading>/proof",
        api.ReadingProof.as_view(),
        name="api-reading-proof",
    ),
]
