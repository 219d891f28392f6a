"""REST API of recalls, traces and dispensing: one view per operation, each one call into a service or ``trace``.

A recall is visible to the regulators, its manufacturer, its initiator and
every organisation sent a notice; a holder sees its own notice only. A batch's
trace is for its manufacturer and regulators, a site's for its organisation
and regulators, a shipment's for anyone who sees the shipment. Anything else
is a 404.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.views import APIView

from traceability import selectors, services, trace
from traceability.api import serializers as s
from traceability.api.views import ERRORS, READ_ERRORS, _actor, _organisation, _schema_only, _valid
from traceability.models import Batch, Organisation, Recall, RecallNotice, Shipment, Site
from traceability.services.dispensing import MAX_UNITS as MAX_DISPENSED
from traceability.services.recalls import MAX_ITEMS, MAX_TEXT_LENGTH

# Output ------------------------------------------------------------------------------------


class RecallItemOut(serializers.Serializer[Any]):
    batch = serializers.IntegerField(source="batch_id")
    gtin = serializers.CharField(source="batch.product.gtin")
    lot = serializers.CharField(source="batch.lot")
    serial_from = serializers.CharField()
    serial_to = serializers.CharField()


class NoticeOut(serializers.ModelSerializer[RecallNotice]):
    organisation = s.OrganisationRef()
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", default=None)

    class Meta:
        model = RecallNotice
        fields = ["organisation", "units_expected", "notified_at", "acknowledged_at", "acknowledged_by", "units_found"]
        fields += ["note"]


class RecallOut(serializers.ModelSerializer[Recall]):
    manufacturer = s.OrganisationRef()
    initiated_by = s.OrganisationRef()
    items = RecallItemOut(many=True)
    notices = serializers.SerializerMethodField()
    flagged_shipments = serializers.SerializerMethodField()

    class Meta:
        model = Recall
        fields = ["id", "reference", "kind", "classification", "depth", "reason", "instructions", "manufacturer"]
        fields += ["initiated_by", "status", "issued_at", "closed_at", "closing_note", "items", "notices"]
        fields += ["flagged_shipments"]

    def _everyone(self, recall: Recall) -> bool:
        return selectors.sees_progress(self.context["organisation"], recall)

    def get_notices(self, recall: Recall) -> list[dict[str, Any]]:
        """Every holder's notice for regulators, the manufacturer and the initiator; a holder's own otherwise."""
        notices = [
            n for n in recall.notices.all() if self._everyone(recall) or n.organisation == self.context["organisation"]
        ]
        return NoticeOut(notices, many=True).data  # type: ignore[return-value]

    def get_flagged_shipments(self, recall: Recall) -> list[dict[str, Any]]:
        if not self._everyone(recall):
            return []
        return [{"reference": flag.shipment.reference, "units": flag.units} for flag in recall.flagged.all()]


class OnHandOut(serializers.Serializer[Any]):
    """Units on hand at one site (``site`` null: where the manufacturer made them, at no recorded site)."""

    site = s.SiteRef(allow_null=True)
    units = serializers.IntegerField()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        site, units = instance
        return {"site": s.SiteRef(site).data if site else None, "units": units}


class HolderOut(serializers.Serializer[Any]):
    organisation = s.OrganisationRef()
    on_hand = OnHandOut(many=True, source="sites")
    in_care = serializers.IntegerField()
    incoming = serializers.IntegerField()
    notified = serializers.BooleanField()


class SerialRangeOut(serializers.Serializer[Any]):
    batch = serializers.IntegerField(source="batch.pk")
    lot = serializers.CharField(source="batch.lot")
    serial_from = serializers.CharField(source="first")
    serial_to = serializers.CharField(source="last")
    serials = serializers.IntegerField(help_text="serial numbers of the batch the range covers")


class ScopeOut(serializers.Serializer[Any]):
    units = serializers.IntegerField()
    holders = HolderOut(many=True)
    shipments = serializers.SerializerMethodField()
    ranges = SerialRangeOut(many=True, help_text="the serial ranges recalled; holders and units are of whole batches")

    def get_shipments(self, scope: trace.Scope) -> list[dict[str, Any]]:
        return [
            {"id": shipment.pk, "reference": shipment.reference, "status": shipment.status, "units": units}
            for shipment, units in scope.shipments
        ]


class StepOut(serializers.Serializer[Any]):
    time = serializers.DateTimeField()
    kind = serializers.CharField()
    text = serializers.CharField()
    shipment = serializers.CharField()
    organisation = serializers.CharField()
    site = serializers.CharField()


class StockOut(serializers.Serializer[Any]):
    organisation = s.OrganisationRef()
    on_hand = OnHandOut(many=True, source="sites")
    free = serializers.IntegerField()


class BatchTraceOut(serializers.Serializer[Any]):
    steps = StepOut(many=True)
    stock = StockOut(many=True, source="whereabouts.stock")
    moving = serializers.SerializerMethodField()

    def get_moving(self, found: trace.BatchTrace) -> list[dict[str, Any]]:
        return [
            {
                "shipment": item.shipment.reference,
                "status": item.shipment.status,
                "units": item.quantity,
                "custodian": s.OrganisationRef(item.shipment.custodian).data,
            }
            for item in found.whereabouts.moving
        ]


class PassageOut(serializers.Serializer[Any]):
    time = serializers.DateTimeField()
    direction = serializers.CharField()
    shipment = serializers.CharField(source="shipment.reference")
    items = serializers.SerializerMethodField()

    def get_items(self, passage: trace.Passage) -> list[dict[str, Any]]:
        return [{"gtin": i.batch.product.gtin, "lot": i.batch.lot, "units": i.quantity} for i in passage.items]


# Input ------------------------------------------------------------------------------------


class RecallItemIn(serializers.Serializer[Any]):
    batch = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    serial_from = serializers.CharField(max_length=20, required=False, default="", allow_blank=True)
    serial_to = serializers.CharField(max_length=20, required=False, default="", allow_blank=True)


class PreviewIn(serializers.Serializer[Any]):
    items: serializers.ListSerializer[Any] = serializers.ListSerializer(child=RecallItemIn(), max_length=MAX_ITEMS)
    depth = serializers.CharField(max_length=20)


class RecallIn(PreviewIn):
    classification = serializers.CharField(max_length=3)
    reason = serializers.CharField(max_length=MAX_TEXT_LENGTH, allow_blank=True)
    instructions = serializers.CharField(max_length=MAX_TEXT_LENGTH, allow_blank=True)
    password = serializers.CharField(max_length=4096, allow_blank=True, trim_whitespace=False, write_only=True)


class AcknowledgeIn(serializers.Serializer[Any]):
    units_found = serializers.IntegerField(min_value=0, max_value=2**31 - 1)
    note = serializers.CharField(max_length=MAX_TEXT_LENGTH, required=False, default="", allow_blank=True)


class CloseIn(serializers.Serializer[Any]):
    note = serializers.CharField(max_length=MAX_TEXT_LENGTH, allow_blank=True)


class DispenseIn(serializers.Serializer[Any]):
    serials = serializers.ListField(child=serializers.CharField(max_length=20), min_length=1, max_length=MAX_DISPENSED)
    site = serializers.CharField(max_length=13, help_text="the GLN of your site where the packs were dispensed")
    occurred_at = s.AwareDateTimeField(required=False, default=None)


class SiteTraceIn(serializers.Serializer[Any]):
    since = s.AwareDateTimeField(required=False, default=None)
    until = s.AwareDateTimeField(required=False, default=None)


def _items(organisation: Organisation, data: list[dict[str, Any]]) -> list[services.RecallItemSpec]:
    """The named batches among those the organisation sees; an unseen one is as unknown as a missing one."""
    wanted = {item["batch"] for item in data}
    found = selectors.visible_batches(organisation).select_related("product__manufacturer").in_bulk(wanted)
    missing = sorted(wanted - found.keys())
    if missing:
        raise ValidationError({"items": [f"no batch {pk} is visible to you." for pk in missing]})
    return [services.RecallItemSpec(found[item["batch"]], item["serial_from"], item["serial_to"]) for item in data]


# Views --------------------------------------------------------------------------------------


def _recalls(request: Request) -> QuerySet[Recall]:
    return selectors.visible_recalls(_organisation(request)).prefetch_related(
        "items__batch__product", "notices__organisation", "notices__acknowledged_by", "flagged__shipment"
    )


def _recall_out(request: Request, recall: Recall, code: int = status.HTTP_200_OK) -> Response:
    fresh = _recalls(request).get(pk=recall.pk)
    return Response(RecallOut(fresh, context={"organisation": _organisation(request)}).data, status=code)


def _context(view: generics.GenericAPIView[Recall]) -> dict[str, Any]:
    """The serializer's context with the caller's organisation, which decides which notices it shows."""
    context = dict(generics.GenericAPIView.get_serializer_context(view))
    if not _schema_only(view):
        context["organisation"] = _organisation(view.request)
    return context


class RecallList(generics.ListAPIView[Recall]):
    """Recalls your organisation issued, made the goods of, or was sent a notice of; newest first."""

    serializer_class = RecallOut
    throttle_scope = "password"  # issuing checks a password: as few guesses as signing in gets

    def get_throttles(self) -> list[BaseThrottle]:
        throttles = super().get_throttles()
        return [*throttles, ScopedRateThrottle()] if self.request.method == "POST" else throttles

    def get_queryset(self) -> QuerySet[Recall]:
        if _schema_only(self):
            return Recall.objects.none()
        return _recalls(self.request)

    def get_serializer_context(self) -> dict[str, Any]:
        return _context(self)

    @extend_schema(request=RecallIn, responses={201: RecallOut, **ERRORS})
    def post(self, request: Request) -> Response:
        """Issues a recall; the password re-entered confirms it (see ``services.recall_issue``)."""
        data = _valid(RecallIn, request)
        recall = services.recall_issue(
            actor=_actor(request),
            items=_items(_organisation(request), data.pop("items")),
            **data,
        )
        return _recall_out(request, recall, status.HTTP_201_CREATED)


class RecallPreview(APIView):
    @extend_schema(request=PreviewIn, responses={200: ScopeOut, **ERRORS})
    def post(self, request: Request) -> Response:
        """Who a recall of these batches would reach, at this depth; changes nothing."""
        data = _valid(PreviewIn, request)
        items = _items(_organisation(request), data["items"])
        scope = services.recall_preview(actor=_actor(request), items=items, depth=data["depth"])
        return Response(ScopeOut(scope).data)


class RecallDetail(generics.RetrieveAPIView[Recall]):
    serializer_class = RecallOut

    def get_queryset(self) -> QuerySet[Recall]:
        if _schema_only(self):
            return Recall.objects.none()
        return _recalls(self.request)

    def get_serializer_context(self) -> dict[str, Any]:
        return _context(self)


class RecallAcknowledge(APIView):
    @extend_schema(request=AcknowledgeIn, responses={200: RecallOut, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        recall = get_object_or_404(_recalls(request), pk=pk)
        data = _valid(AcknowledgeIn, request)
        services.recall_acknowledge(actor=_actor(request), recall=recall, **data)
        return _recall_out(request, recall)


class RecallClose(APIView):
    @extend_schema(request=CloseIn, responses={200: RecallOut, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        recall = get_object_or_404(_recalls(request), pk=pk)
        data = _valid(CloseIn, request)
        services.recall_close(actor=_actor(request), recall=recall, note=data["note"])
        return _recall_out(request, recall)


class BatchTrace(APIView):
    @extend_schema(responses={200: BatchTraceOut, **READ_ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """The batch's life in order and where its units are: for its manufacturer and regulators."""
        organisation = _organisation(request)
        batches = selectors.visible_batches(organisation)
        if not organisation.is_regulator:
            batches = batches.filter(product__manufacturer=organisation)
        batch: Batch = get_object_or_404(batches, pk=pk)
        return Response(BatchTraceOut(trace.batch_trace(batch)).data)


class ShipmentTrace(APIView):
    @extend_schema(responses={200: StepOut(many=True), **READ_ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """The shipment's life: planned, dispatched, hand-overs, excursions and alerts, delivery."""
        shipment: Shipment = get_object_or_404(selectors.visible_shipments(_organisation(request)), pk=pk)
        return Response(StepOut(trace.shipment_trace(shipment), many=True).data)


class BatchDispense(APIView):
    @extend_schema(request=DispenseIn, responses={201: None, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        """A pharmacy records packs of the batch as dispensed to patients (see ``services.units_dispense``)."""
        batch: Batch = get_object_or_404(selectors.visible_batches(_organisation(request)), pk=pk)
        data = _valid(DispenseIn, request)
        site = Site.objects.filter(gln=data["site"]).first()
        if site is None:
            raise ValidationError({"site": [f"no site has GLN {data['site']!r}."]})
        dispensed = services.units_dispense(
            actor=_actor(request), batch=batch, serials=data["serials"], site=site, occurred_at=data["occurred_at"]
        )
        return Response({"dispensed": len(dispensed)}, status=status.HTTP_201_CREATED)


class SiteTrace(APIView):
    @extend_schema(parameters=[SiteTraceIn], responses={200: PassageOut(many=True), **READ_ERRORS, 400: ERRORS[400]})
    def get(self, request: Request, pk: int) -> Response:
        """What left, reached or changed hands at the site, newest first (``since``/``until`` narrow it).

        For the site's organisation and regulators. At most 1,000 passages;
        ``truncated`` says when more were left out.
        """
        organisation = _organisation(request)
        sites = Site.objects.all() if organisation.is_regulator else Site.objects.filter(organisation=organisation)
        site = get_object_or_404(sites, pk=pk)
        window = SiteTraceIn(data=request.query_params)
        window.is_valid(raise_exception=True)
        passages, more = trace.site_trace(site, **window.validated_data)
        return Response({"truncated": more, "passages": PassageOut(passages, many=True).data})
