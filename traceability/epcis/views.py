"""EPCIS 2.0 over HTTP: the events query and the capture endpoint. Thin: parse, call, answer."""

from __future__ import annotations

import datetime
from typing import Any, cast
from urllib.parse import urlencode

from django.contrib.auth.models import User
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from traceability import audit, gs1
from traceability.api.parsers import MAX_BODY_BYTES, StrictJSONParser
from traceability.epcis import capture, events, hashing, schema
from traceability.services import actor_organisation

EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent")
PER_PAGE_DEFAULT, PER_PAGE_MAX = 50, 500
PARAMETERS = frozenset(
    {
        "GE_eventTime",
        "LT_eventTime",
        "eventType",
        "perPage",
        "nextPageToken",
        "MATCH_epcClass",
        "MATCH_anyEPCClass",
        "batch",
        "gtin",
        "lot",
        "format",
    }
)
EPCIS_HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
LD_JSON = "application/ld+json"


class LDJSONParser(StrictJSONParser):
    media_type = LD_JSON


def _parameters() -> list[OpenApiParameter]:
    def query(name: str, kind: Any, text: str) -> OpenApiParameter:
        return OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=text)

    return [
        query("GE_eventTime", OpenApiTypes.DATETIME, "events at or after this time (RFC 3339)"),
        query("LT_eventTime", OpenApiTypes.DATETIME, "events before this time (RFC 3339)"),
        query("eventType", OpenApiTypes.STR, "comma-separated EPCIS event types; ColdTrace writes ObjectEvents"),
        query("MATCH_anyEPCClass", OpenApiTypes.STR, "comma-separated Digital Link URIs of a GTIN or GTIN and lot"),
        query("MATCH_epcClass", OpenApiTypes.STR, "as MATCH_anyEPCClass"),
        query("batch", OpenApiTypes.INT, "a batch id"),
        query("gtin", OpenApiTypes.STR, "a GTIN (8, 12, 13 or 14 digits)"),
        query("lot", OpenApiTypes.STR, "a lot number (with gtin, or alone)"),
        query("perPage", OpenApiTypes.INT, f"events per page, 1 to {PER_PAGE_MAX} (default {PER_PAGE_DEFAULT})"),
        query("nextPageToken", OpenApiTypes.STR, "from the previous page's Link header (rel=next)"),
    ]


DOCUMENT = OpenApiResponse(OpenApiTypes.OBJECT, description="An EPCISQueryDocument (EPCIS 2.0 JSON-LD).")
ERROR = OpenApiResponse(OpenApiTypes.OBJECT, description="Each wrong parameter or field with its reason.")


class EventsView(APIView):
    """The events of the batches and shipments you may see, as an EPCIS 2.0 query document, oldest first."""

    @extend_schema(
        parameters=_parameters(),
        responses={200: DOCUMENT, 400: ERROR, 401: ERROR},
        operation_id="epcis_events",
    )
    def get(self, request: Request) -> Response:
        query = _query(request)
        page = events.events_page(query)
        audit.record("epcis.queried", request=request, query=request.GET.dict(), events=len(page.events))
        headers = dict(EPCIS_HEADERS)
        if page.next is not None:
            params = {k: v for k, v in request.query_params.items() if k != "nextPageToken"}
            params["nextPageToken"] = page.next.token()
            url = request.build_absolute_uri(request.path) + "?" + urlencode(params)
            headers["Link"] = f'<{url}>; rel="next"'
        return Response(events.document(page.events), headers=headers, content_type=LD_JSON)


def _query(request: Request) -> events.Query:
    params = request.query_params
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(params) - PARAMETERS)
    for name in unknown:
        errors[name] = [f"is not a parameter of this query; use {', '.join(sorted(PARAMETERS - {'format'}))}."]
    for name in PARAMETERS:
        if len(params.getlist(name)) > 1:
            errors[name] = ["give it once."]

    def check(name: str, parse: Any) -> Any:
        raw = params.get(name)
        if raw is None or name in errors:
            return None
        try:
            return parse(raw)
        except (ValueError, gs1.GS1Error, events.TokenError) as error:
            errors[name] = [str(error)]
            return None

    since = check("GE_eventTime", _moment)
    until = check("LT_eventTime", _moment)
    types = check("eventType", _event_types)
    per_page = check("perPage", _per_page)
    after = check("nextPageToken", events.Key.from_token)
    batch = check("batch", _batch_id)
    gtin = check("gtin", gs1.normalize_gtin)
    lot = check("lot", gs1.validate_lot)
    classes = tuple(check("MATCH_anyEPCClass", _classes) or ()) + tuple(check("MATCH_epcClass", _classes) or ())
    if errors:
        raise ValidationError(errors)
    return events.Query(
        organisation=cast(User, request.user).membership.organisation,
        per_page=per_page or PER_PAGE_DEFAULT,
        batch=batch,
        gtin=gtin,
        lot=lot,
        classes=classes,
        since=since,
        until=until,
        object_events=types is None or "ObjectEvent" in types,
        after=after,
    )


def _moment(raw: str) -> datetime.datetime:
    if not schema._is_date_time(raw):
        raise ValueError("must be an RFC 3339 date-time with its offset, e.g. 2026-11-28T12:00:00Z.")
    try:
        return datetime.datetime.fromisoformat(raw.upper().replace("Z", "+00:00")).astimezone(datetime.UTC)
    except OverflowError:
        raise ValueError("lies outside the years 1 to 9999 in UTC.") from None


def _event_types(raw: str) -> set[str]:
    given = {part.strip() for part in raw.split(",")}
    wrong = sorted(given - set(EVENT_TYPES))
    if wrong:
        raise ValueError(f"{', '.join(wrong)} is not an EPCIS event type; use {', '.join(EVENT_TYPES)}.")
    return given


def _per_page(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= PER_PAGE_MAX:
        raise ValueError(f"must be a whole number from 1 to {PER_PAGE_MAX}.")
    return int(raw)


def _batch_id(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) < 2**63:
        raise ValueError("must be a batch id, a positive whole number.")
    return int(raw)


def _classes(raw: str) -> list[tuple[str, str | None]]:
    found = []
    for uri in (part.strip() for part in raw.split(",")):
        canonical = hashing.canonical_identifier(uri)
        link = canonical if canonical.startswith("https://id.gs1.org/01/") else uri
        if "/01/" not in link:
            raise ValueError(f"{uri!r} is not a GS1 Digital Link of a GTIN (…/01/{{gtin}}[/10/{{lot}}]).")
        parsed = gs1.parse_digital_link(link, today=datetime.date.today()).link
        if parsed.serial is not None:
            raise ValueError(f"{uri!r} names one unit (/21/); a class is a GTIN, or a GTIN and lot.")
        found.append((parsed.gtin, parsed.lot))
    return found


class CaptureView(APIView):
    """Takes in a partner's EPCISDocument of ObjectEvents: each event's outcome, in document order."""

    parser_classes = [StrictJSONParser, LDJSONParser]

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT, 400: ERROR, 401: ERROR, 403: ERROR, 413: ERROR},
        operation_id="epcis_capture",
    )
    def post(self, request: Request) -> Response:
        actor = cast(User, request.user)
        organisation = actor_organisation(actor)
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _too_large(f"the document has {length} bytes; send at most {MAX_BODY_BYTES} per request.")
        document = request.data
        if not isinstance(document, dict) or document.get("type") != "EPCISDocument":
            raise ValidationError({"type": ["send an EPCISDocument (EPCIS 2.0 JSON-LD)."]})
        found = schema.errors(document)
        if found:
            return Response(
                {
                    "detail": "The document does not validate against GS1's EPCIS 2.0 JSON Schema.",
                    "errors": [{"path": e.path, "message": e.message} for e in found],
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        event_list = document["epcisBody"]["eventList"]
        if len(event_list) > capture.MAX_EVENTS:
            return _too_large(f"the document holds {len(event_list)} events; send at most {capture.MAX_EVENTS}.")
        results = capture.epcis_capture(
            actor=actor, organisation=organisation, events=event_list, context=document.get("@context")
        )
        body = {
            "results": [
                {"eventID": r.event_id, "status": r.status, "detail": r.detail, "shipment": r.shipment} for r in results
            ]
        }
        return Response(body, headers=EPCIS_HEADERS)


def _too_large(detail: str) -> Response:
    return Response({"detail": detail}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
