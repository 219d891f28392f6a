"""HTTP ingest (the device protocol over HTTPS), devices, and a shipment's readings."""

from __future__ import annotations

import base64
import datetime
import json
import logging
from typing import Any, cast

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Avg, Count, FloatField, Func, Max, Min, QuerySet, Value
from django.db.models.functions import Floor, Greatest
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from iot_ingest import protocol, services
from iot_ingest.models import Device, InboxMessage, Reading
from traceability import selectors
from traceability.api.serializers import AwareDateTimeField
from traceability.api.views import ERRORS, READ_ERRORS
from traceability.models import Organisation

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_BATCH_BYTES = 16 * 2**20  # far above 1000 ordinary messages, far below 1000 of 64 KiB


def _actor(request: Request) -> User:
    return cast(User, request.user)


def _organisation(request: Request) -> Organisation:
    return _actor(request).membership.organisation


# Ingest -------------------------------------------------------------------------


class RawParser(BaseParser):
    """Keeps the body's bytes: a JWS is its own credential, checked byte for byte."""

    media_type = "application/jose"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> bytes:  # type: ignore[override]
        data: bytes = stream.read(protocol.MAX_MESSAGE_BYTES + 1) if stream is not None else b""
        return data


class BatchParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> bytes:  # type: ignore[override]
        data: bytes = stream.read(MAX_BATCH_BYTES + 1) if stream is not None else b""
        if len(data) > MAX_BATCH_BYTES:
            raise ParseError(f"an upload is at most {MAX_BATCH_BYTES // 2**20} MiB; send the buffer in parts")
        return data


def _batch(body: bytes) -> list[bytes]:
    """The messages of a ``{"messages": [...]}`` upload (a docked logger's buffer)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise ValidationError({"messages": [f"the body is not JSON: {error}"]}) from error
    messages = document.get("messages") if isinstance(document, dict) else None
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
        raise ValidationError({"messages": [f"a list of 1 to {MAX_BATCH} compact JWS strings"]})
    return [_message_bytes(message) for message in messages]


def _message_bytes(message: Any) -> bytes:
    """A batch element as the bytes the inbox keeps: a string's UTF-8, anything else as its JSON. Either way it
    is stored and judged like any message, so one that is not a compact JWS is rejected (malformed) on its own,
    never dropped, and it holds back none of the others."""
    if isinstance(message, str):
        return message.encode("utf-8", "surrogatepass")  # a JWS is ASCII: the protocol rejects anything else
    return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")


RESULT_FIELDS: dict[str, serializers.Field[Any, Any, Any, Any]] = {
    "seq": serializers.IntegerField(allow_null=True),
    "outcome": serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"]),
    "reason": serializers.CharField(required=False),
}


class IngestReadings(APIView):
    """``POST /api/v1/ingest/readings``: the same bytes as over MQTT; the signature is the credential."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    parser_classes = [RawParser, BatchParser]

    @extend_schema(
        request={"application/jose": str, "application/json": {"type": "object"}},
        responses={
            202: inline_serializer(
                "IngestResults", {"results": inline_serializer("IngestResult", RESULT_FIELDS, many=True)}
            ),
            400: OpenApiResponse(description="The body, or the single message, could not be parsed at all."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        single = request.content_type.split(";")[0].strip() == RawParser.media_type
        body = request.data if isinstance(request.data, bytes) else b""  # an empty body is parsed by no parser
        raws = [body] if single else _batch(body)
        rows = services.inbox_receive([services.RawMessage(raw, "http") for raw in raws], enqueue=False)
        ids = [row.pk for row in rows]
        try:
            services.messages_process(ids, adopt=False)  # these messages only: a request does no worker's work
        except Exception:
            services.enqueue_processing(ids)  # stored all the same: the workers take them now, not the sweeper
            raise
        rows = _settled(ids)
        results = [_result(row) for row in rows]
        if single and rows[0].reason in ("too_large", "malformed", "bad_header"):
            return Response(results[0], status=status.HTTP_400_BAD_REQUEST)
        return Response({"results": results}, status=status.HTTP_202_ACCEPTED)


def _settled(ids: list[int]) -> list[InboxMessage]:
    """The rows' outcomes once final: a worker that took some of them (adopting the oldest pending rows) is
    waited for, so the answer never calls a message accepted that the worker then rejects. A row still
    pending after that (that worker's transaction failed) is queued for the workers."""
    with transaction.atomic():
        rows = list(InboxMessage.objects.select_for_update().filter(pk__in=ids).order_by("id"))
    pending = [row.pk for row in rows if row.outcome == InboxMessage.Outcome.PENDING]
    if pending:
        services.enqueue_processing(pending)
    return rows


def _result(row: InboxMessage) -> dict[str, Any]:
    outcome = row.outcome if row.outcome != InboxMessage.Outcome.PENDING else "accepted"
    result: dict[str, Any] = {"seq": row.seq, "outcome": outcome}
    if row.reason:
        result["reason"] = row.reason
    return result


# Devices ------------------------------------------------------------------------


class DeviceOut(serializers.ModelSerializer[Device]):
    public_key = serializers.SerializerMethodField()
    organisation = serializers.CharField(source="organisation.gln")
    shipment = serializers.SerializerMethodField()

    class Meta:
        model = Device
        fields = ["device_id", "organisation", "public_key", "status", "created_at", "last_seen_at", "shipment"]

    def get_public_key(self, device: Device) -> str:
        return bytes(device.public_key).hex()

    def get_shipment(self, device: Device) -> str | None:
        """The reference of the shipment the logger rides with now."""
        rides = [a for a in device.assignments.all() if a.ends_at is None]
        return rides[0].shipment.reference if rides else None


class TextRegexField(serializers.RegexField):
    """A JSON string matching the pattern: DRF would take the number 1e400 as the text "inf"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class DeviceIn(serializers.Serializer[Any]):
    device_id = TextRegexField(r"\A[A-Za-z0-9._-]{1,64}\Z")
    public_key = TextRegexField(r"\A[0-9a-fA-F]{64}\Z", help_text="Ed25519 public key, 64 hex digits")


class DeviceList(generics.ListAPIView[Device]):
    """The loggers of your organisation (a regulator sees all)."""

    serializer_class = DeviceOut

    def get_queryset(self) -> QuerySet[Device]:
        if getattr(self, "swagger_fake_view", False):
            return Device.objects.none()
        return _devices(self.request)

    @extend_schema(request=DeviceIn, responses={201: DeviceOut, **ERRORS})
    def post(self, request: Request) -> Response:
        data = DeviceIn(data=request.data)
        data.is_valid(raise_exception=True)
        device = services.device_add(
            actor=_actor(request),
            device_id=data.validated_data["device_id"],
            public_key=bytes.fromhex(data.validated_data["public_key"]),
        )
        return Response(DeviceOut(_devices(request).get(pk=device.pk)).data, status=status.HTTP_201_CREATED)


def _devices(request: Request) -> QuerySet[Device]:
    organisation = _organisation(request)
    devices = Device.objects.select_related("organisation").prefetch_related("assignments__shipment")
    return devices if organisation.is_regulator else devices.filter(organisation=organisation)


class DeviceDetail(generics.RetrieveAPIView[Device]):
    serializer_class = DeviceOut
    lookup_field = "device_id"

    def get_queryset(self) -> QuerySet[Device]:
        if getattr(self, "swagger_fake_view", False):
            return Device.objects.none()
        return _devices(self.request)


class AssignIn(serializers.Serializer[Any]):
    device_id = TextRegexField(r"\A[A-Za-z0-9._-]{1,64}\Z")
    starts_at = AwareDateTimeField(required=False, default=None)


class ShipmentDevices(APIView):
    """``POST``: put one of your loggers on the shipment, from now (or ``starts_at``)."""

    @extend_schema(request=AssignIn, responses={201: DeviceOut, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        shipment = get_object_or_404(selectors.visible_shipments(_organisation(request)), pk=pk)
        data = AssignIn(data=request.data)
        data.is_valid(raise_exception=True)
        device = Device.objects.filter(device_id=data.validated_data["device_id"]).first()
        if device is None or device.organisation_id != _organisation(request).pk:
            raise ValidationError({"device_id": ["none of your loggers has this id"]})
        services.device_assign(
            actor=_actor(request), device=device, shipment=shipment, starts_at=data.validated_data["starts_at"]
        )
        return Response(DeviceOut(_devices(request).get(pk=device.pk)).data, status=status.HTTP_201_CREATED)


# Readings -----------------------------------------------------------------------


class ReadingsQuery(serializers.Serializer[Any]):
    start = AwareDateTimeField(required=False, default=None, source="from")
    end = AwareDateTimeField(required=False, default=None)
    points = serializers.IntegerField(min_value=1, max_value=5000, required=False, default=500)
    kind = serializers.ChoiceField(choices=Reading.Kind.choices, required=False, default=Reading.Kind.TEMPERATURE)


POINT_FIELDS: dict[str, serializers.Field[Any, Any, Any, Any]] = {
    "at": serializers.DateTimeField(),
    "min": serializers.FloatField(),
    "max": serializers.FloatField(),
    "mean": serializers.FloatField(),
    "count": serializers.IntegerField(),
}


class ShipmentReadings(APIView):
    """A shipment's readings for charts: at most ``points`` buckets of min/max/mean over [start, end)."""

    @extend_schema(
        parameters=[ReadingsQuery],
        responses={
            200: inline_serializer("Readings", {"points": inline_serializer("ReadingPoint", POINT_FIELDS, many=True)}),
            **READ_ERRORS,
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        shipment = get_object_or_404(selectors.visible_shipments(_organisation(request)), pk=pk)
        query = ReadingsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        readings = Reading.objects.filter(shipment=shipment, kind=params["kind"])
        start = params["from"] or readings.aggregate(first=Min("measured_at"))["first"]
        end = params["end"] or timezone.now()
        if start is None:
            return Response({"points": []})
        if start >= end:
            raise ValidationError({"end": ["must be after start"]})
        return Response({"points": _downsample(readings, start, end, params["points"])})


def _downsample(
    readings: QuerySet[Reading], start: datetime.datetime, end: datetime.datetime, points: int
) -> list[dict[str, Any]]:
    """Buckets of equal length, aggregated in the database (a shipment can have a million readings)."""
    width = max((end - start).total_seconds() / points, 1.0)
    epoch = start.timestamp()
    rows = (
        readings.filter(measured_at__gte=start, measured_at__lt=end)
        # At least 0: SQLite's julianday rounds to the millisecond, which can put the first reading before start.
        .annotate(bucket=Greatest(Floor((EpochSeconds("measured_at") - epoch) / width), Value(0.0)))
        .values("bucket")
        .annotate(low=Min("value"), high=Max("value"), mean=Avg("value"), count=Count("id"))
        .order_by("bucket")
    )
    return [
        {
            "at": start + datetime.timedelta(seconds=row["bucket"] * width),
            "min": row["low"],
            "max": row["high"],
            "mean": row["mean"],
            "count": row["count"],
        }
        for row in rows
    ]


class EpochSeconds(Func):
    """Seconds since the Unix epoch of a timestamp column, in SQL."""

    output_field = FloatField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="EXTRACT(EPOCH FROM %(expressions)s)", **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Julian days, not strftime('%s'): the backend reads a %s in the SQL as a parameter (0.0 for every row).
        template = "((julianday(%(expressions)s) - 2440587.5) * 86400.0)"
        return self.as_sql(compiler, connection, template=template, **extra)


class ReadingProof(APIView):
    """A reading's inclusion proof against the Merkle root its ``readings.committed`` ledger entry carries."""

    @extend_schema(
        responses={
            200: inline_serializer(
                "ReadingProof",
                {
                    "reading": serializers.IntegerField(),
                    "leaf": serializers.CharField(help_text="base64 of the reading's RFC 8785 leaf data"),
                    "index": serializers.IntegerField(),
                    "tree_size": serializers.IntegerField(),
                    "path": serializers.ListField(child=serializers.CharField()),
                    "root": serializers.CharField(),
                    "ledger_subject": serializers.CharField(),
                    "commit": serializers.IntegerField(),
                },
            ),
            **READ_ERRORS,
            500: OpenApiResponse(
                description="The readings in the reading's commit no longer make its root: no proof can hold."
            ),
        }
    )
    def get(self, request: Request, pk: int, reading: int) -> Response:
        shipment = get_object_or_404(selectors.visible_shipments(_organisation(request)), pk=pk)
        row = get_object_or_404(
            Reading.objects.select_related("device", "message", "commit"), pk=reading, shipment=shipment
        )
        try:
            proof = services.reading_proof(row)
        except services.CommitMismatch as mismatch:
            logger.error("no proof of reading %s: %s", row.pk, mismatch)
            detail = "The readings stored for this reading's ledger commit no longer make its root: no proof."
            return Response({"detail": detail}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
        if proof is None:
            return Response(
                {"detail": "This reading is not committed to the ledger yet; commits happen every few minutes."},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(
            {
                "reading": row.pk,
                "leaf": base64.b64encode(proof.leaf).decode(),
                "index": proof.index,
                "tree_size": proof.commit.count,
                "path": [node.hex() for node in proof.path],
                "root": bytes(proof.commit.root).hex(),
                "ledger_subject": f"shipment:{shipment.reference}",
                "commit": proof.commit.pk,
            }
        )
