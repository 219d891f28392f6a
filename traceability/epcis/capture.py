"""A trading partner's EPCIS ObjectEvents taken in: kept, and custody recorded where they say it changed.

For each event of a schema-valid ``EPCISDocument``, in document order:

1. Its ID is its ``eventID``, or else our CBV 2.0 hash of it.
2. It must name a batch the capturing organisation may see: an ``epcList``
   serial (GS1 Digital Link on any domain, or SGTIN URN) or a ``quantityList``
   class (Digital Link with lot, or LGTIN URN). Anything else is *unknown*,
   whether it exists or not, and is not kept.
3. Its ``eventTime`` must lie within the years 1 to 9999 in UTC, to the
   millisecond; then it is kept (``CapturedEvent``, unique on its ID for the
   organisation capturing it: sent again, it is "already recorded"; another
   organisation's event under the same ID is neither seen nor blocking).
4. If it says a shipment the organisation is party to changed hands, the
   custody service records it, under its rules and with its ledger entry:

   - the shipment is the one its ``bizTransactionList`` names (our reference,
     as ``urn:epcglobal:cbv:bt:{gln}:{reference}`` or the bare reference);
     failing that, the one shipment in transit carrying the batch whose
     custodian is the source ``possessing_party`` (AI 417 Digital Link or
     PGLN URN) and, for a receipt, whose consignee is the destination's;
   - bizStep ``receiving`` (or ``arriving``): the consignee receives it;
     disposition ``non_conformant``, ``damaged`` or ``rejected``-like ones
     reject it instead;
   - bizStep ``accepting`` (or ``transporting``, ``departing``) with a
     destination ``possessing_party``: the custodian hands it over to that
     organisation, at the ``bizLocation`` (or ``readPoint``) site if it has one.

   The service's refusal (not the holder, not in transit, ...) is the event's
   outcome; the event is still kept, as evidence of what the partner said.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from traceability import gs1, selectors, services
from traceability.epcis import hashing
from traceability.epcis.events import context_beyond_ours, own_event_ids
from traceability.models import Batch, CapturedEvent, CustodyEvent, Organisation, SerialNumber, Shipment, Site

MAX_EVENTS = 500
# The last eventTime whose millisecond (the event hash rounds to one) is still in year 9999.
LAST_EVENT_TIME = datetime.datetime(9999, 12, 31, 23, 59, 59, 999_499, tzinfo=datetime.UTC)
EVENT_ID_MAX = CapturedEvent._meta.get_field("event_id").max_length or 200
RECEIVING = frozenset({"receiving", "arriving"})
HANDOVER = frozenset({"accepting", "transporting", "departing"})
REFUSED = frozenset({"non_conformant", "damaged", "no_pedigree_match", "mismatch_instance", "mismatch_class"})
_CBV = "https://ref.gs1.org/cbv/"
_GLN_URI = re.compile(r"https?://[^/?#]+(?:/[^?#]*)?/(?:41[47]|gln|party)/(\d{13})(?:[/?#].*)?")
_GLN_URN = re.compile(r"urn:epc:id:(?:pgln|sgln):(\d{6,12})\.(\d{0,6})(?:\.0)?")


@dataclass(frozen=True)
class Result:
    event_id: str
    status: str  # "recorded", "already_recorded", "not_recorded"
    detail: str
    shipment: str | None = None  # the shipment reference whose custody it recorded


def epcis_capture(
    *, actor: User, organisation: Organisation, events: list[dict[str, Any]], context: Any
) -> list[Result]:
    """Takes in a schema-valid document's events; each in its own transaction, so one refusal stops no other.

    Keeps each event naming a visible batch (``CapturedEvent``); records custody
    through ``custody_transfer`` / ``shipment_receive``, which append their
    ledger entries.
    """
    return [_capture_one(actor, organisation, event, context) for event in events]


def _capture_one(actor: User, organisation: Organisation, event: dict[str, Any], context: Any) -> Result:
    given = event.get("eventID")
    try:
        event_id = given if isinstance(given, str) and given else hashing.event_id(event, context=context)
    except hashing.EventHashError as error:
        return Result("", "not_recorded", f"cannot compute its event ID: {error}.")
    if len(event_id) > EVENT_ID_MAX:
        return Result(event_id[:EVENT_ID_MAX], "not_recorded", f"eventID is longer than {EVENT_ID_MAX} characters.")
    if event.get("type") != "ObjectEvent":
        return Result(event_id, "not_recorded", f"only ObjectEvents are captured, not {event.get('type')}.")
    occurred_at = _event_time(event["eventTime"])
    if occurred_at is None:
        detail = (
            f"eventTime {event['eventTime']} is not within the years 1 to 9999 in UTC, to the millisecond; "
            "send the time the event happened."
        )
        return Result(event_id, "not_recorded", detail)
    batch = _batch_named(organisation, event)
    if batch is None:
        return Result(event_id, "not_recorded", "names no batch known to the platform.")
    # Sent again by the same organisation; another's event under the same ID is theirs, and so is its outcome.
    mine = CapturedEvent.objects.filter(captured_by=organisation, event_id=event_id)
    earlier = mine.values_list("outcome", flat=True).first()
    if earlier is not None:
        return Result(event_id, "already_recorded", earlier)
    try:
        with transaction.atomic():
            return _record(actor, organisation, event, event_id, batch, occurred_at, context)
    except IntegrityError:  # the same event captured at the same moment by another of the organisation's requests
        return Result(event_id, "already_recorded", "captured by a concurrent request.")


def _event_time(text: str) -> datetime.datetime | None:
    """The schema-valid ``eventTime`` in UTC; None when it, or the millisecond event IDs round it to, is outside
    the years 1 to 9999 in UTC (0001-01-01T00:00:00+14:00 is in year 0): PostgreSQL would keep such a time,
    and Python could not read it back."""
    moment = datetime.datetime.fromisoformat(text.replace("z", "Z"))
    try:
        utc = moment.astimezone(datetime.UTC)
    except OverflowError:
        return None
    return utc if utc <= LAST_EVENT_TIME else None


def _record(
    actor: User,
    organisation: Organisation,
    event: dict[str, Any],
    event_id: str,
    batch: Batch,
    occurred_at: datetime.datetime,
    context: Any,
) -> Result:
    ours = event_id in own_event_ids(batch, occurred_at)  # before custody: a receipt would add one
    result, custody_event = _custody(actor, organisation, event, batch, occurred_at)
    CapturedEvent.objects.create(
        event_id=event_id,
        captured_by=organisation,
        event_time=occurred_at,
        batch=batch,
        custody_event=custody_event,
        event=event,
        context=context_beyond_ours(context),
        ours=ours,
        outcome=result.detail[:500],
    )
    return Result(event_id, result.status, result.detail, result.shipment)


def _custody(
    actor: User, organisation: Organisation, event: dict[str, Any], batch: Batch, occurred_at: datetime.datetime
) -> tuple[Result, CustodyEvent | None]:
    step = _term(event.get("bizStep"), "BizStep-")
    if step not in RECEIVING | HANDOVER:
        return Result("", "recorded", "kept; it records no custody change."), None
    shipment = _shipment_named(organisation, event, batch, receiving=step in RECEIVING)
    if isinstance(shipment, str):
        return Result("", "not_recorded", f"kept, but no custody recorded: {shipment}"), None
    try:
        with transaction.atomic():
            if step in RECEIVING:
                return _receive(actor, event, shipment, occurred_at)
            to = _party(event.get("destinationList"), "destination")
            if to is None:
                return Result(
                    "", "not_recorded", "kept, but no custody recorded: no destination possessing_party."
                ), None
            handed = services.custody_transfer(
                actor=actor, shipment=shipment, to_organisation=to, site=_site(event, to), occurred_at=occurred_at
            )
            done = f"custody of {shipment.reference} handed to {to.name}."
            return Result("", "recorded", done, shipment.reference), handed
    except ValidationError as error:
        reasons = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
        return Result("", "not_recorded", f"kept, but no custody recorded: {reasons}"), None
    except PermissionDenied as error:
        return Result("", "not_recorded", f"kept, but no custody recorded: {error}"), None


def _receive(
    actor: User, event: dict[str, Any], shipment: Shipment, occurred_at: datetime.datetime
) -> tuple[Result, CustodyEvent | None]:
    accept = _term(event.get("disposition"), "Disp-") not in REFUSED
    reason = "" if accept else f"rejected in an EPCIS event (disposition {event.get('disposition')})."
    shipment = services.shipment_receive(
        actor=actor, shipment=shipment, accept=accept, reason=reason, occurred_at=occurred_at
    )
    if not accept:
        return Result("", "recorded", f"rejected shipment {shipment.reference}.", shipment.reference), None
    receipt = shipment.custody_events.filter(kind=CustodyEvent.Kind.RECEIPT).order_by("-id").first()
    return Result("", "recorded", f"received shipment {shipment.reference}.", shipment.reference), receipt


def _term(value: object, web_prefix: str) -> str:
    """A CBV term in bare form, whichever of its forms the event used."""
    text = value if isinstance(value, str) else ""
    for prefix in (_CBV + web_prefix, "cbv:" + web_prefix):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text.rsplit(":", 1)[-1] if text.startswith("urn:epcglobal:cbv:") else text


# What the event names ------------------------------------------------------------------------


def _batch_named(organisation: Organisation, event: dict[str, Any]) -> Batch | None:
    """The first batch the event names that the organisation may see."""
    visible = selectors.visible_batches(organisation).select_related("product")
    for epc in event.get("epcList") or []:
        parsed = _product(epc)
        if parsed and parsed[2]:
            unit = SerialNumber.objects.filter(product__gtin=parsed[0], serial=parsed[2], batch__in=visible).first()
            if unit is not None:
                return visible.get(pk=unit.batch_id)
    for element in event.get("quantityList") or []:
        parsed = _product(element.get("epcClass", ""))
        if parsed and parsed[1]:
            batch = visible.filter(product__gtin=parsed[0], lot=parsed[1]).first()
            if batch is not None:
                return batch
    return None


def _product(uri: object) -> tuple[str, str | None, str | None] | None:
    """(GTIN, lot, serial) of a product identifier, in Digital Link (any domain) or EPC URN form."""
    if not isinstance(uri, str):
        return None
    canonical = hashing.canonical_identifier(uri)
    link = canonical if canonical.startswith("https://id.gs1.org/01/") else uri
    if "/01/" not in link:
        return None
    try:
        parsed = gs1.parse_digital_link(link, today=datetime.date.today()).link
    except gs1.GS1Error:
        return None
    return parsed.gtin, parsed.lot, parsed.serial


def _gln(uri: object) -> str | None:
    text = uri if isinstance(uri, str) else ""
    match = _GLN_URI.fullmatch(text)
    if match:
        return match.group(1)
    match = _GLN_URN.fullmatch(text)
    if match and len(match.group(1) + match.group(2)) == 12:
        digits = match.group(1) + match.group(2)
        return digits + gs1.check_digit(digits)
    return None


def _party(entries: object, key: str) -> Organisation | None:
    for entry in entries if isinstance(entries, list) else []:
        if _term(entry.get("type"), "SDT-") == "possessing_party":
            gln = _gln(entry.get(key))
            if gln is not None:
                return Organisation.objects.filter(gln=gln).first()
    return None


def _site(event: dict[str, Any], organisation: Organisation) -> Site | None:
    for field in ("bizLocation", "readPoint"):
        gln = _gln((event.get(field) or {}).get("id"))
        if gln is not None:
            return Site.objects.filter(gln=gln, organisation=organisation).first()
    return None


def _shipment_named(
    organisation: Organisation, event: dict[str, Any], batch: Batch, *, receiving: bool
) -> Shipment | str:
    """The shipment the event is about, among those the organisation is party to; or why there is none."""
    mine = selectors.visible_shipments(organisation)
    references = []
    for entry in event.get("bizTransactionList") or []:
        text = entry.get("bizTransaction", "")
        references.append(text.rsplit(":", 1)[-1].rsplit("/", 1)[-1])
    if references:
        named = mine.filter(reference__in=references).first()
        if named is not None:
            return named
    holder = _party(event.get("sourceList"), "source")
    if holder is None:
        return "it names none of your shipments in bizTransactionList, and no source possessing_party."
    candidates = mine.filter(status=Shipment.Status.IN_TRANSIT, items__batch=batch, custodian=holder)
    if receiving:
        consignee = _party(event.get("destinationList"), "destination")
        candidates = candidates.filter(consignee=consignee) if consignee else candidates.none()
    found = list(candidates.distinct()[:2])
    if len(found) != 1:
        many = "several shipments match" if found else "no shipment of yours in transit matches"
        return f"{many} its batch and parties; name the shipment reference in bizTransactionList."
    return found[0]
