"""Query-string filters for the list endpoints; a bad value is a 400 naming the parameter."""

from __future__ import annotations

import datetime
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_filters import rest_framework as f
from django_filters.fields import IsoDateTimeField

from traceability.api.serializers import NAIVE_TIME
from traceability.models import Alert, Batch, Organisation, Product, SerialNumber, Shipment, Site

MAX_ID = 2**63 - 1


class IdFilter(f.NumberFilter):
    """An object id: an integer the database can hold, or a 400."""

    field_class = forms.IntegerField

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)


class InRangeIsoDateTimeField(IsoDateTimeField):
    def to_python(self, value: Any) -> datetime.datetime | None:
        if isinstance(value, str) and (parsed := _parsed(value)) is not None and timezone.is_naive(parsed):
            raise forms.ValidationError(NAIVE_TIME, code="naive")  # Django would take it as UTC, without a word
        moment: datetime.datetime | None = super().to_python(value)
        try:
            return None if moment is None else moment.astimezone(datetime.UTC)
        except OverflowError:
            raise forms.ValidationError("lies outside the years 1 to 9999 in UTC.", code="invalid") from None


def _parsed(text: str) -> datetime.datetime | None:
    try:
        return parse_datetime(text.strip())
    except ValueError:
        return None  # Django's own parsing names the problem


class DateTimeFilter(f.IsoDateTimeFilter):
    field_class = InRangeIsoDateTimeField


class OrganisationFilter(f.FilterSet):
    class Meta:
        model = Organisation
        fields = ["kind", "gln"]


class SiteFilter(f.FilterSet):
    organisation = f.CharFilter(field_name="organisation__gln", help_text="GLN of the organisation")

    class Meta:
        model = Site
        fields = ["gln", "country", "organisation"]


class StrictNullBooleanField(forms.Field):
    """``true``/``false`` (or ``1``/``0``), absent for either; anything else is a 400, not silently no filter
    (django-filter's own boolean turns any other word into "absent")."""

    def to_python(self, value: Any) -> bool | None:
        text = str(value).strip().lower() if value is not None else ""
        if text == "":
            return None
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise forms.ValidationError("is true or false.", code="invalid")


class BooleanFilter(f.BooleanFilter):
    field_class = StrictNullBooleanField

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs, widget=forms.TextInput)  # the word as sent, not django-filter's reading of it


class ProductFilter(f.FilterSet):
    freeze_sensitive = BooleanFilter()
    manufacturer = f.CharFilter(field_name="manufacturer__gln", help_text="GLN of the manufacturer")
    name = f.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Product
        fields = ["gtin", "storage_profile", "freeze_sensitive", "manufacturer", "name"]


class BatchFilter(f.FilterSet):
    gtin = f.CharFilter(field_name="product__gtin")
    expires_before = f.DateFilter(field_name="expires_on", lookup_expr="lt")
    expires_after = f.DateFilter(field_name="expires_on", lookup_expr="gte")
    product = IdFilter(field_name="product")

    class Meta:
        model = Batch
        fields = ["gtin", "lot", "status", "product", "expires_before", "expires_after"]


class SerialFilter(f.FilterSet):
    class Meta:
        model = SerialNumber
        fields = ["serial", "status"]


class ShipmentFilter(f.FilterSet):
    shipper = f.CharFilter(field_name="shipper__gln", help_text="GLN")
    carrier = f.CharFilter(field_name="carrier__gln", help_text="GLN")
    consignee = f.CharFilter(field_name="consignee__gln", help_text="GLN")
    custodian = f.CharFilter(field_name="custodian__gln", help_text="GLN")
    batch = IdFilter(field_name="items__batch", distinct=True)
    created_after = DateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = DateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Shipment
        fields = ["reference", "status", "shipper", "carrier", "consignee", "custodian", "batch"]


class AlertFilter(f.FilterSet):
    shipment = IdFilter(field_name="shipment")
    raised_after = DateTimeFilter(field_name="raised_at", lookup_expr="gte")

    class Meta:
        model = Alert
        fields = ["status", "severity", "key", "shipment", "raised_after"]
