"""Query-string filters for the list endpoints; a bad value is a 400 naming the parameter."""

from __future__ import annotations

from django_filters import rest_framework as f

from traceability.models import Batch, Organisation, Product, SerialNumber, Shipment, Site


class OrganisationFilter(f.FilterSet):
    class Meta:
        model = Organisation
        fields = ["kind", "gln"]


class SiteFilter(f.FilterSet):
    organisation = f.CharFilter(field_name="organisation__gln", help_text="GLN of the organisation")

    class Meta:
        model = Site
        fields = ["gln", "country", "organisation"]


class ProductFilter(f.FilterSet):
    manufacturer = f.CharFilter(field_name="manufacturer__gln", help_text="GLN of the manufacturer")
    name = f.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Product
        fields = ["gtin", "storage_profile", "freeze_sensitive", "manufacturer", "name"]


class BatchFilter(f.FilterSet):
    gtin = f.CharFilter(field_name="product__gtin")
    expires_before = f.DateFilter(field_name="expires_on", lookup_expr="lt")
    expires_after = f.DateFilter(field_name="expires_on", lookup_expr="gte")

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
    batch = f.NumberFilter(field_name="items__batch", distinct=True)
    created_after = f.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = f.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Shipment
        fields = ["reference", "status", "shipper", "carrier", "consignee", "custodian", "batch"]
