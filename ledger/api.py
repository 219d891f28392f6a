"""The ledger's HTTP contract (spec/ledger.md, "HTTP"): checkpoints, keys, entries and proofs.

Checkpoints, keys and proofs are public: they hold hashes, signatures and
public keys only. Entries are readable by the parties their appender named,
by anyone for public types, and by every caller that the
``LEDGER_READER_PARTIES`` function says may read everything (a regulator). An
entry the caller may not read is answered exactly like a missing one: 404.

The ledger knows no organisations: ``settings.LEDGER_READER_PARTIES`` is the
dotted path of a function ``(request) -> frozenset[str] | None`` that names
the parties the caller reads as (None: everything). It receives DRF's
``Request``, whose ``user`` is signed in by token or session.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger import events, merkle, note, selectors, services
from ledger.models import Checkpoint, Entry, SigningKey

MAX_INTEGER = 2**63 - 1  # the database's bigint; seq and tree sizes never exceed it


# Input ------------------------------------------------------------------------------


class QueryInteger(serializers.IntegerField):
    """A decimal integer as written in a URL: ASCII digits, optionally a minus sign, nothing else.

    DRF's IntegerField also takes ``1.0``, ``1_000``, `` 7`` and non-ASCII digits;
    a verifier's tooling should get one spelling per number.
    """

    _DECIMAL = re.compile(r"-?[0-9]+")

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_INTEGER)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and len(data) > self.MAX_STRING_LENGTH:
            self.fail("max_string_length")
        if not isinstance(data, str) or not self._DECIMAL.fullmatch(data):
            self.fail("invalid")
        return int(data)


class InclusionQuery(serializers.Serializer[Any]):
    seq = QueryInteger(help_text="the entry's seq, its leaf index")
    tree_size = QueryInteger(
        required=False, help_text="the tree to prove inclusion in; default: the newest checkpoint's"
    )


class ConsistencyQuery(serializers.Serializer[Any]):
    first = QueryInteger(help_text="the older tree's size, at least 1")
    second = QueryInteger(required=False, help_text="the newer tree's size; default: the newest checkpoint's")


class EntryQuery(serializers.Serializer[Any]):
    subject = serializers.CharField(required=False, max_length=200, help_text="only entries about this subject")
    type = serializers.ChoiceField(choices=sorted(events.EVENT_TYPES), required=False, help_text="only this type")
    limit = QueryInteger(required=False, min_value=1, max_value=500, help_text="page size, default 50")
    offset = QueryInteger(required=False, help_text="entries to skip")


def _query(serializer_class: type[serializers.Serializer[Any]], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    data: dict[str, Any] = serializer.validated_data
    return data


# Output -----------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.BYTE)
class Base64Field(serializers.Field):  # type: ignore[type-arg]
    """Bytes as standard base64 (RFC 4648 section 4), padded."""

    def to_representation(self, value: bytes | memoryview) -> str:
        return base64.b64encode(bytes(value)).decode()


@extend_schema_field({"type": "string", "pattern": "^([0-9a-f]{2})*$"})
class HexField(serializers.Field):  # type: ignore[type-arg]
    """Bytes as lowercase hex, as spec/ledger.md writes hashes and keys."""

    def to_representation(self, value: bytes | memoryview) -> str:
        return bytes(value).hex()


class LedgerErrorOut(serializers.Serializer[Any]):
    """A 400 names each wrong parameter with its reasons: ``{"tree_size": ["reason"]}``; others: ``{"detail": ...}``."""

    detail = serializers.CharField(required=False)


class LedgerKeyOut(serializers.Serializer[SigningKey]):
    name = serializers.CharField(help_text="the key name: the log's origin")
    key_id = serializers.CharField(help_text="C2SP signed-note key id, 8 lowercase hex digits")
    public_key = HexField(help_text="32-byte Ed25519 public key")
    vkey = serializers.SerializerMethodField(help_text="signed-note verifier key: <name>+<key id>+<base64>")
    active_from = serializers.DateTimeField()
    retired_at = serializers.DateTimeField(allow_null=True, help_text="null while the key is active")

    def get_vkey(self, key: SigningKey) -> str:
        return note.vkey(key.name, bytes(key.public_key))


class LedgerEntryOut(serializers.Serializer[Entry]):
    seq = serializers.IntegerField()
    leaf = Base64Field(help_text="the leaf data: the entry's RFC 8785 canonical JSON")
    hash = HexField(help_text="SHA-256(0x00 || leaf data)")
    signature = Base64Field(help_text="Ed25519 over the leaf data by the key key_id")
    key_id = serializers.CharField()


class LedgerEntrySummaryOut(LedgerEntryOut):
    type = serializers.CharField()
    subject = serializers.CharField()
    time = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_time(self, entry: Entry) -> str:
        return services.entry_time(entry.time)  # as the leaf writes it


class InclusionProofOut(serializers.Serializer[Any]):
    seq = serializers.IntegerField()
    tree_size = serializers.IntegerField()
    leaf_hash = serializers.CharField()
    path = serializers.ListField(child=serializers.CharField(), help_text="RFC 9162 PATH, lowercase hex")
    root = serializers.CharField()  # type: ignore[assignment]  # shadows Field.root only in the stubs: DRF pops fields


class ConsistencyProofOut(serializers.Serializer[Any]):
    first = serializers.IntegerField()
    second = serializers.IntegerField()
    first_root = serializers.CharField()
    second_root = serializers.CharField()
    path = serializers.ListField(child=serializers.CharField(), help_text="RFC 9162 PROOF, lowercase hex")


ERRORS = {
    400: OpenApiResponse(LedgerErrorOut, description="A parameter is malformed or outside the tree; it names why."),
    404: OpenApiResponse(LedgerErrorOut, description="No such entry, or not readable by you."),
}


# Reads -------------------------------------------------------------------------------


def _newest_checkpoint() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-size").first()


def _tree(requested: int | None, parameter: str) -> int:
    """The tree size a proof is about: as requested if the log has it, else the newest checkpoint's."""
    if requested is None:
        checkpoint = _newest_checkpoint()
        if checkpoint is None:
            reason = f"No checkpoint has been signed yet, so {parameter} has no default; give it."
            raise ValidationError({parameter: [reason]})
        return checkpoint.size
    size = services.tree_size()
    if requested > size:
        raise ValidationError({parameter: [f"The log has {size} entries; ask for a tree of at most {size}."]})
    return requested


# Views --------------------------------------------------------------------------------


class PlainTextRenderer(BaseRenderer):
    """Lets a client that accepts only text/plain fetch the checkpoint, and read an error as text."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        return f"{detail}\n".encode()


class CheckpointView(APIView):
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer, PlainTextRenderer]

    @extend_schema(
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="The newest signed checkpoint."),
            (404, "application/json"): OpenApiResponse(LedgerErrorOut, description="No checkpoint signed yet."),
        },
        auth=[],
    )
    def get(self, request: Request) -> HttpResponse:
        checkpoint = _newest_checkpoint()
        if checkpoint is None:
            raise NotFound("The ledger has no checkpoint yet: one is signed after the first entry. Try again later.")
        return HttpResponse(checkpoint.note, content_type="text/plain; charset=utf-8")


class KeyList(generics.ListAPIView[SigningKey]):
    """Every key that ever signed for the log, oldest first; not paginated, auditors want them all."""

    permission_classes = [AllowAny]
    queryset = SigningKey.objects.all()
    serializer_class = LedgerKeyOut
    pagination_class = None
    filter_backends: list[Any] = []

    @extend_schema(auth=[])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class EntryPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class EntryList(generics.ListAPIView[Entry]):
    """Entries the caller may read, oldest first, filtered by subject and type."""

    permission_classes = [AllowAny]
    serializer_class = LedgerEntrySummaryOut
    pagination_class = EntryPagination
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[Entry]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular inspects views without a request
            return Entry.objects.none()
        query = _query(EntryQuery, self.request)  # also checks limit and offset, which the paginator reads
        entries = selectors.readable_entries(self.request)
        if "subject" in query:
            entries = entries.filter(subject=query["subject"])
        if "type" in query:
            entries = entries.filter(type=query["type"])
        return entries.order_by("seq")

    @extend_schema(parameters=[EntryQuery], responses={200: LedgerEntrySummaryOut(many=True), 400: ERRORS[400]})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class EntryDetail(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: LedgerEntryOut, 404: ERRORS[404]})
    def get(self, request: Request, seq: int) -> Response:
        entry = selectors.readable_entries(request).filter(seq=seq).first() if seq <= MAX_INTEGER else None
        if entry is None:
            raise NotFound(f"No entry {seq} that you may read.")
        return Response(LedgerEntryOut(entry).data)


class InclusionProofView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(parameters=[InclusionQuery], responses={200: InclusionProofOut, 400: ERRORS[400]}, auth=[])
    def get(self, request: Request) -> Response:
        query = _query(InclusionQuery, request)
        seq, size = query["seq"], _tree(query.get("tree_size"), "tree_size")
        if seq >= size:
            raise ValidationError({"seq": [f"Entry {seq} is outside the tree of size {size}: seq must be below it."]})
        leaf_key = (0, seq)  # level 0 holds the leaf hashes
        found = services.nodes(merkle.inclusion_keys(seq, size) | merkle.root_keys(size) | {leaf_key})
        proof = {
            "seq": seq,
            "tree_size": size,
            "leaf_hash": found[leaf_key].hex(),
            "path": merkle.proof_to_hex(merkle.inclusion_proof(seq, size, found)),
            "root": merkle.root(size, found).hex(),
        }
        return Response(InclusionProofOut(proof).data)


class ConsistencyProofView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(parameters=[ConsistencyQuery], responses={200: ConsistencyProofOut, 400: ERRORS[400]}, auth=[])
    def get(self, request: Request) -> Response:
        query = _query(ConsistencyQuery, request)
        first, second = query["first"], _tree(query.get("second"), "second")
        if first == 0:
            raise ValidationError(
                {"first": ["There is no consistency proof from the empty tree; first must be 1 or more."]}
            )
        if first > second:
            raise ValidationError({"first": [f"The first tree must not be larger than the second ({second})."]})
        keys = merkle.consistency_keys(first, second) | merkle.root_keys(first) | merkle.root_keys(second)
        found = services.nodes(keys)
        proof = {
            "first": first,
            "second": second,
            "first_root": merkle.root(first, found).hex(),
            "second_root": merkle.root(second, found).hex(),
            "path": merkle.proof_to_hex(merkle.consistency_proof(first, second, found)),
        }
        return Response(ConsistencyProofOut(proof).data)
