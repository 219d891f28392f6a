"""Admin for staff. Organisations and memberships are managed here; the cold-chain
records (products, batches, shipments, custody) are read-only, because they
change only through their services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from traceability import services, signin
from traceability.models import (
    Alert,
    ApiToken,
    AuditEvent,
    Batch,
    CustodyEvent,
    Excursion,
    Membership,
    Organisation,
    Product,
    SerialNumber,
    Shipment,
    ShipmentItem,
    Site,
)

# Staff sign in behind the sign-in page's lock-out (signin.py); urls.py gives the admin's sign-in URL to
# signin.admin_login, which answers 429 while locked.
admin.site.login_form = signin.AdminSignInForm


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin[Organisation]):
    list_display = ["name", "kind", "gln"]
    list_filter = ["kind"]
    search_fields = ["name", "gln"]


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin[Site]):
    list_display = ["name", "organisation", "gln", "city", "country"]
    search_fields = ["name", "gln", "organisation__name"]
    list_select_related = ["organisation"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin[Membership]):
    list_display = ["user", "organisation", "role"]
    list_filter = ["role", "organisation__kind"]
    list_select_related = ["user", "organisation"]


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Product)
class ProductAdmin(ReadOnlyAdmin):
    list_display = ["name", "strength", "gtin", "manufacturer", "storage_profile"]
    search_fields = ["name", "gtin"]
    list_select_related = ["manufacturer"]


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = ["product", "lot", "expires_on", "quantity", "status"]
    list_filter = ["status"]
    search_fields = ["lot", "product__gtin"]
    list_select_related = ["product"]


@admin.register(SerialNumber)
class SerialNumberAdmin(ReadOnlyAdmin):
    list_display = ["serial", "batch", "status"]
    search_fields = ["serial"]
    list_select_related = ["batch__product"]


class ShipmentItemInline(admin.TabularInline[ShipmentItem, Shipment]):
    model = ShipmentItem
    extra = 0
    can_delete = False


class CustodyEventInline(admin.TabularInline[CustodyEvent, Shipment]):
    model = CustodyEvent
    extra = 0
    can_delete = False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["raised_at", "shipment", "severity", "status", "message"]
    list_filter = ["status", "severity"]
    list_select_related = ["shipment"]


@admin.register(Excursion)
class ExcursionAdmin(ReadOnlyAdmin):
    list_display = ["shipment", "direction", "started_at", "ended_at", "peak_celsius"]
    list_select_related = ["shipment"]


@admin.register(Shipment)
class ShipmentAdmin(ReadOnlyAdmin):
    list_display = ["reference", "status", "shipper", "carrier", "consignee", "created_at"]
    list_filter = ["status"]
    search_fields = ["reference"]
    list_select_related = ["shipper", "carrier", "consignee"]
    inlines = [ShipmentItemInline, CustodyEventInline]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit log, to read; the database refuses to change it anyway (traceability/audit.py)."""

    list_display = ["at", "kind", "username", "organisation", "remote_addr", "request_id"]
    list_filter = ["kind"]
    search_fields = ["username", "remote_addr", "request_id"]
    date_hierarchy = "at"
    list_select_related = ["organisation"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    """Who holds which API tokens, to revoke one: tokens are issued at sign-in, and only their digests are kept."""

    list_display = ["prefix", "user", "created_at", "last_used_at", "expires_at"]
    search_fields = ["prefix", "user__username"]
    list_select_related = ["user"]
    fields = ["prefix", "user", "created_at", "last_used_at", "expires_at"]  # never the digest

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        services.api_token_revoke(actor=request.user, token=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset.select_related("user"):
            services.api_token_revoke(actor=request.user, token=token)
