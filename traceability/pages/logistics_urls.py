"""URLs of the logistics pages."""

from __future__ import annotations

from django.urls import URLPattern, path

from traceability.pages import dispensing, logistics

urlpatterns: list[URLPattern] = [
    path("", logistics.board, name="logistics-board"),
    path("board.json", logistics.board_json, name="logistics-board-json"),
    path("alerts/", logistics.alert_inbox, name="logistics-alerts"),
    path("alerts/<int:pk>/acknowledge", logistics.alert_acknowledge, name="logistics-alert-acknowledge"),
    path("alerts/<int:pk>/resolve", logistics.alert_resolve, name="logistics-alert-resolve"),
    path("shipments/<int:pk>/", logistics.shipment_page, name="logistics-shipment"),
    path("dispense/", dispensing.dispense, name="logistics-dispense"),
]
