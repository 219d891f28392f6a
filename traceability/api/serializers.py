"""Explicit input and output shapes. Inputs check form; services check rules."""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from traceability import coldchain
from traceability.models import (
    Alert,
    Batch,
    ContractRule,
    CustodyEvent,
    Excursion,
    Organisation,
    Product,
    SerialNumber,
    Shipment,
    ShipmentItem,
    Site,
    TemperatureContract,
)

MAX_QUANTITY = 2**31 - 1
NAIVE_TIME = "give the time's UTC offset (Z or +hh:mm): a time without one is ambiguous."


class AwareDateTimeField(serializers.DateTimeField):
    """A time given with its UTC offset (ISO 8601); one without is a 400, never silently taken as UTC."""

    default_error_messages = {"naive": NAIVE_TIME}

    def enforce_timezone(self, value: Any) -> Any:
        if isinstance(value, datetime.datetime) and timezone.is_naive(value):
            self.fail("naive")
        return super().enforce_timezone(value)


# Output ---------------------------------------------------------------------


class OrganisationOut(serializers.ModelSerializer[Organisation]):
    class Meta:
        model = Organisation
        fields = ["id", "name", "kind", "gln"]


class OrganisationRef(serializers.ModelSerializer[Organisation]):
    class Meta:
        model = Organisation
        fields = ["name", "kind", "gln"]


class SiteOut(serializers.ModelSerializer[Site]):
    organisation = OrganisationRef()

    class Meta:
        model = Site
        fields = ["id", "name", "gln", "street", "city", "postal_code", "country", "organisation"]


class SiteRef(serializers.ModelSerializer[Site]):
    class Meta:
        model = Site
        fields = ["name", "gln", "city", "country"]


class MeOut(serializers.Serializer[Any]):
    username = serializers.CharField()
    role = serializers.CharField(source="membership.role")
    organisation = OrganisationRef(source="membership.organisation")


class ProductOut(serializers.ModelSerializer[Product]):
    manufacturer = OrganisationRef()

    class Meta:
        model = Product
        fields = [
            "id",
            "gtin",
            "name",
            "dosage_form",
            "strength",
            "manufacturer",
            "storage_profile",
            "freeze_sensitive",
            "stability_budget_minutes",
            "created_at",
        ]


class BatchOut(serializers.ModelSerializer[Batch]):
    gtin = serializers.CharField(source="product.gtin")
    product_name = serializers.CharField(source="product.name")
    expiry = serializers.DateField(source="expires_on")
    digital_link = serializers.SerializerMethodField()
    serial_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Batch
        fields = [
            "id",
            "gtin",
            "product_name",
            "lot",
            "manufactured_on",
            "expiry",
            "quantity",
            "status",
            "serial_count",
            "digital_link",
            "created_at",
        ]

    def get_digital_link(self, batch: Batch) -> str:
        return batch.digital_link()


class SerialOut(serializers.ModelSerializer[SerialNumber]):
    digital_link = serializers.SerializerMethodField()

    class Meta:
        model = SerialNumber
        fields = ["serial", "status", "digital_link"]

    def get_digital_link(self, unit: SerialNumber) -> str:
        return unit.batch.digital_link(serial=unit.serial)


class ShipmentItemOut(serializers.ModelSerializer[ShipmentItem]):
    batch = serializers.IntegerField(source="batch_id")
    gtin = serializers.CharField(source="batch.product.gtin")
    lot = serializers.CharField(source="batch.lot")

    class Meta:
        model = ShipmentItem
        fields = ["batch", "gtin", "lot", "quantity"]


class ContractRuleOut(serializers.ModelSerializer[ContractRule]):
    class Meta:
        model = ContractRule
        fields = ["name", "band", "threshold_celsius", "duration_seconds", "mode", "severity"]


class ContractOut(serializers.ModelSerializer[TemperatureContract]):
    rules = ContractRuleOut(many=True)

    class Meta:
        model = TemperatureContract
        fields = [
            "storage_profile",
            "min_celsius",
            "max_celsius",
            "arming_seconds",
            "mkt_limit_celsius",
            "mkt_window_seconds",
            "freeze_thaw_limit",
            "logging_interval_seconds",
            "max_gap_seconds",
            "rules",
        ]


class CustodyEventOut(serializers.ModelSerializer[CustodyEvent]):
    from_organisation = OrganisationRef()
    to_organisation = OrganisationRef()
    site = SiteRef(allow_null=True)

    class Meta:
        model = CustodyEvent
        fields = ["kind", "from_organisation", "to_organisation", "site", "location", "occurred_at", "note"]


class ShipmentSummaryOut(serializers.ModelSerializer[Shipment]):
    """A shipment in a list: who, where, what, and its state."""

    shipper = OrganisationRef()
    carrier = OrganisationRef()
    consignee = OrganisationRef()
    custodian = OrganisationRef()
    origin = SiteRef()
    destination = SiteRef()
    items = ShipmentItemOut(many=True)

    class Meta:
        model = Shipment
        fields = [
            "id",
            "reference",
            "status",
            "shipper",
            "carrier",
            "consignee",
            "custodian",
            "origin",
            "destination",
            "items",
            "created_at",
            "dispatched_at",
            "closed_at",
            "rejection_reason",
        ]


class ShipmentOut(ShipmentSummaryOut):
    """A shipment in full: its summary, temperature contract and custody history."""

    contract = ContractOut()
    custody = CustodyEventOut(many=True, source="custody_events")

    class Meta(ShipmentSummaryOut.Meta):
        fields = [*ShipmentSummaryOut.Meta.fields, "contract", "custody"]


class ExcursionOut(serializers.ModelSerializer[Excursion]):
    class Meta:
        model = Excursion
        fields = ["id", "direction", "started_at", "ended_at", "peak_celsius", "duration_seconds", "rules"]


class AlertOut(serializers.ModelSerializer[Alert]):
    shipment = serializers.IntegerField(source="shipment_id")
    reference = serializers.CharField(source="shipment.reference")
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", allow_null=True, default=None)
    resolved_by = serializers.CharField(source="resolved_by.username", allow_null=True, default=None)

    class Meta:
        model = Alert
        fields = [
            "id",
            "shipment",
            "reference",
            "key",
            "severity",
            "status",
            "message",
            "triggered_at",
            "raised_at",
            "acknowledged_by",
            "acknowledged_at",
            "acknowledgement",
            "resolved_by",
            "resolved_at",
            "resolution",
        ]


# Input ----------------------------------------------------------------------


class TokenIn(serializers.Serializer[Any]):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False)


class TokenOut(serializers.Serializer[Any]):
    """A token just issued: its key is shown this once and cannot be shown again."""

    token = serializers.CharField(source="key", help_text="the key, for `Authorization: Token <key>`")
    prefix = serializers.CharField(source="token.prefix", help_text="the key's first 8 characters, to tell it apart")
    created_at = serializers.DateTimeField(source="token.created_at")
    expires_at = serializers.DateTimeField(
        source="token.expires_at", allow_null=True, help_text="when it stops working (API_TOKEN_DAYS); null: never"
    )


class SiteIn(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    gln = serializers.CharField(max_length=13)
    street = serializers.CharField(max_length=200, required=False, default="")
    city = serializers.CharField(max_length=100)
    postal_code = serializers.CharField(max_length=20, required=False, default="")
    country = serializers.RegexField(
        r"^[A-Za-z]{2}$", error_messages={"invalid": "an ISO 3166-1 alpha-2 code, e.g. DE."}
    )


class ProductIn(serializers.Serializer[Any]):
    gtin = serializers.CharField(max_length=14)
    name = serializers.CharField(max_length=200)
    dosage_form = serializers.CharField(max_length=100)
    strength = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    storage_profile = serializers.ChoiceField(choices=coldchain.StorageProfile.choices())
    freeze_sensitive = serializers.BooleanField(required=False, default=False)
    stability_budget_minutes = serializers.IntegerField(
        min_value=0, max_value=365 * 24 * 60, required=False, default=240
    )


class BatchIn(serializers.Serializer[Any]):
    gtin = serializers.CharField(max_length=14, help_text="GTIN of one of your products (8, 12, 13 or 14 digits).")
    lot = serializers.CharField(max_length=20)
    manufactured_on = serializers.DateField()
    expiry = serializers.DateField()
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)
    serial_count = serializers.IntegerField(min_value=0, max_value=100_000, required=False, default=0)


class ShipmentItemIn(serializers.Serializer[Any]):
    batch = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)


class ShipmentIn(serializers.Serializer[Any]):
    carrier = serializers.CharField(max_length=13, help_text="GLN of the carrier.")
    consignee = serializers.CharField(max_length=13, help_text="GLN of the consignee.")
    origin = serializers.CharField(max_length=13, help_text="GLN of the site the goods leave from.")
    destination = serializers.CharField(max_length=13, help_text="GLN of the consignee's receiving site.")
    items = serializers.ListField(child=ShipmentItemIn(), allow_empty=False, max_length=1000)
    logging_interval_seconds = serializers.IntegerField(
        min_value=10, max_value=24 * 3600, required=False, default=coldchain.DEFAULT_LOGGING_INTERVAL_SECONDS
    )


class DispatchIn(serializers.Serializer[Any]):
    occurred_at = AwareDateTimeField(required=False, default=None)


class HandoverIn(serializers.Serializer[Any]):
    to_organisation = serializers.CharField(max_length=13, help_text="GLN of the organisation taking the goods.")
    site = serializers.CharField(max_length=13, required=False, default=None, help_text="GLN of the site, if at one.")
    location = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    note = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)
    occurred_at = AwareDateTimeField(required=False, default=None)


class ReceiveIn(serializers.Serializer[Any]):
    accept = serializers.BooleanField()
    reason = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)
    occurred_at = AwareDateTimeField(required=False, default=None)


class AlertCommentIn(serializers.Serializer[Any]):
    comment = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)


class ErrorOut(serializers.Serializer[Any]):
    """A 400 names each wrong field with its reasons: ``{"field": ["reason"]}``; other errors: ``{"detail": ...}``."""

    detail = serializers.CharField(required=False)


def absolute(path: str) -> str:
    return f"{settings.BASE_URL}{path}"
