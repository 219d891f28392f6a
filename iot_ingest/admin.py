"""Admin for staff: loggers, and the inbox with its rejected and dead-letter messages."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from iot_ingest import services
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
    """Every message as received. Filter on 'Failed repeatedly' for the dead letters and their errors; once
    their cause is fixed, the action "Process the selected dead letters again" queues them anew."""

    list_display = ["id", "received_at", "transport", "device", "seq", "urgent", "outcome", "reason", "attempts"]
    list_filter = ["outcome", "urgent", "reason", "transport"]
    search_fields = ["device__device_id", "detail"]
    list_select_related = ["device"]
    date_hierarchy = "received_at"
    actions = ["process_again"]

    @admin.action(description="Process the selected dead letters again")
    def process_again(self, request: HttpRequest, queryset: QuerySet[InboxMessage]) -> None:
        """Once what failed them is fixed: they are pending again, with no attempts counted, and queued."""
        retried = services.inbox_retry(list(queryset.values_list("pk", flat=True)))
        for message in InboxMessage.objects.filter(pk__in=retried):
            self.log_change(request, message, "Queued to be processed again")
        skipped = queryset.count() - len(retried)
        note = f"; {skipped} not dead letters, left as they were" if skipped else ""
        self.message_user(request, f"{len(retried)} dead letter(s) queued to be processed again{note}.")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
