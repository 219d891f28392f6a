"""Admin for staff: loggers, and the inbox with its rejected and dead-letter messages."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from iot_ingest.models import Device, DeviceAssignment, InboxMessage


class AssignmentInline(admin.TabularInline[DeviceAssignment, Device]):
    model = DeviceAssignment
    extra = 0
    can_delete = False
    readonly_fields = ["shipment", "starts_at", "ends_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin[Device]):
    list_display = ["device_id", "organisation", "status", "last_seen_at"]
    list_filter = ["status"]
    search_fields = ["device_id", "organisation__name"]
    list_select_related = ["organisation"]
    readonly_fields = ["device_id", "organisation", "public_key", "created_at", "last_seen_at"]
    inlines = [AssignmentInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # `manage.py device_register` or the API: keys are generated there


@admin.register(InboxMessage)
class InboxMessageAdmin(admin.ModelAdmin[InboxMessage]):
    """Every message as received. Filter on 'Failed repeatedly' for the dead letters and their errors."""

    list_display = ["id", "received_at", "transport", "device", "seq", "urgent", "outcome", "reason", "attempts"]
    list_filter = ["outcome", "urgent", "reason", "transport"]
    search_fields = ["device__device_id", "detail"]
    list_select_related = ["device"]
    date_hierarchy = "received_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
