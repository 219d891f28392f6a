"""EPCIS 2.0 capture: partners' events kept once, custody recorded through the services' rules."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from ledger.models import PendingEvent
from tests.conftest import Persona, make_persona, unavailable
from tests.scenarios import register_batch
from tests.traceability.test_epcis import events, journey, made, make_product, reference_ids, ship
from traceability.epcis import hashing
from traceability.models import Batch, CapturedEvent, CustodyEvent, Membership, Organisation, Shipment

URL = "/api/v1/epcis/capture"
CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]


def document(*events: dict[str, Any]) -> dict[str, Any]:
    return {
        "@context": CONTEXT,
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-01-01T00:00:00Z",
        "epcisBody": {"eventList": list(events)},
    }


def event(batch: Batch, *, biz_step: str, when: datetime.datetime, **fields: Any) -> dict[str, Any]:
    return {
        "type": "ObjectEvent",
        "eventTime": when.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z"),
        "eventTimeZoneOffset": "+00:00",
        "quantityList": [{"epcClass": f"https://id.gs1.org/01/{batch.product.gtin}/10/{batch.lot}", "quantity": 10}],
        "action": "OBSERVE",
        "bizStep": biz_step,
        **fields,
    }


def receipt(shipment: Shipment, **fields: Any) -> dict[str, Any]:
    """The consignee's receiving event an hour ago, naming the shipment by reference in ``bizTransactionList``."""
    return event(
        shipment.items.get().batch,
        biz_step="receiving",
        when=timezone.now() - datetime.timedelta(hours=1),
        bizTransactionList=[
            {"type": "desadv", "bizTransaction": f"urn:epcglobal:cbv:bt:0000000000000:{shipment.reference}"}
        ],
        **fields,
    )


def party(persona: Persona) -> str:
    return f"https://id.gs1.org/417/{persona.organisation.gln}"


def capture(persona: Persona, body: Any) -> Any:
    return persona.client().post(URL, body, format="json")


@pytest.fixture
def in_transit(personas: dict[str, Persona]) -> Shipment:
    manufacturer = personas["manufacturer"]
    batch = made(register_batch(manufacturer, make_product(manufacturer), lot="CAP1"))
    return ship(manufacturer, personas["carrier"], personas["pharmacy"], batch, hours_ago=5)


def test_a_receipt_naming_our_shipment_is_recorded_once_with_its_ledger_entry(
    personas: dict[str, Persona], in_transit: Shipment
) -> None:
    received = receipt(in_transit, disposition="in_progress")
    response = capture(personas["pharmacy"], document(received))
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert result["status"] == "recorded"
    assert result["shipment"] == in_transit.reference
    in_transit.refresh_from_db()
    assert in_transit.status == Shipment.Status.DELIVERED
    assert PendingEvent.objects.filter(type="shipment.delivered").exists()
    kept = CapturedEvent.objects.get()
    assert kept.event_id == result["eventID"] == hashing.event_id(received, context=CONTEXT)
    assert kept.batch == in_transit.items.get().batch
    assert kept.custody_event is not None
    assert kept.custody_event.kind == CustodyEvent.Kind.RECEIPT
    # Sent again: nothing changes.
    again = capture(personas["pharmacy"], document(received)).json()["results"]
    assert again[0]["status"] == "already_recorded"
    assert CapturedEvent.objects.count() == 1


def test_a_hand_over_by_the_carrier_found_by_its_parties(personas: dict[str, Persona], in_transit: Shipment) -> None:
    carrier, carrier2 = personas["carrier"], personas["carrier2"]
    handed = event(
        in_transit.items.get().batch,
        biz_step="accepting",
        when=timezone.now() - datetime.timedelta(hours=2),
        eventID="urn:uuid:6f1b9c5e-1d2a-4a7b-9a55-0b0f3c2d1e00",
        readPoint={"id": f"urn:epc:id:sgln:{carrier2.site.gln[:7]}.{carrier2.site.gln[7:12]}.0"},
        sourceList=[{"type": "possessing_party", "source": party(carrier)}],
        destinationList=[{"type": "possessing_party", "destination": party(carrier2)}],
    )
    (result,) = capture(carrier, document(handed)).json()["results"]
    assert result == {
        "eventID": "urn:uuid:6f1b9c5e-1d2a-4a7b-9a55-0b0f3c2d1e00",
        "status": "recorded",
        "detail": f"custody of {in_transit.reference} handed to {carrier2.organisation.name}.",
        "shipment": in_transit.reference,
    }
    in_transit.refresh_from_db()
    assert in_transit.custodian == carrier2.organisation
    assert in_transit.custody_events.get(kind="handover").site == carrier2.site


def test_the_custody_rules_still_apply_and_the_event_is_kept(
    personas: dict[str, Persona], in_transit: Shipment
) -> None:
    """carrier2 says it took the goods over: only the holder hands them over, so no custody changes."""
    carrier, carrier2 = personas["carrier"], personas["carrier2"]
    in_transit_batch = in_transit.items.get().batch
    claim = event(
        in_transit_batch,
        biz_step="accepting",
        when=timezone.now() - datetime.timedelta(hours=2),
        bizTransactionList=[{"bizTransaction": f"urn:epcglobal:cbv:bt:1:{in_transit.reference}"}],
        sourceList=[{"type": "possessing_party", "source": party(carrier)}],
        destinationList=[{"type": "possessing_party", "destination": party(carrier2)}],
    )
    # carrier2 is no party to the shipment: the batch is unknown to it.
    (unknown,) = capture(carrier2, document(claim)).json()["results"]
    assert unknown["status"] == "not_recorded"
    assert "no batch known" in unknown["detail"]
    # The pharmacy sees it, but does not hold the goods.
    (refused,) = capture(personas["pharmacy"], document(claim)).json()["results"]
    assert refused["status"] == "not_recorded"
    assert "Only the organisation holding the goods" in refused["detail"]
    assert CapturedEvent.objects.get().outcome.startswith("kept, but no custody recorded")
    in_transit.refresh_from_db()
    assert in_transit.custodian == carrier.organisation


def test_a_rejection_and_events_without_custody(personas: dict[str, Persona], in_transit: Shipment) -> None:
    batch = in_transit.items.get().batch
    serial = batch.serials.values_list("serial", flat=True)[0]
    gtin = batch.product.gtin
    rejected = event(
        batch,
        biz_step="receiving",
        disposition="non_conformant",
        when=timezone.now() - datetime.timedelta(minutes=30),
        sourceList=[{"type": "possessing_party", "source": party(personas["carrier"])}],
        destinationList=[{"type": "possessing_party", "destination": party(personas["pharmacy"])}],
    )
    inspected = {
        "type": "ObjectEvent",
        "eventTime": "2026-01-01T10:00:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "epcList": [f"urn:epc:id:sgtin:{gtin[1:8]}.{gtin[0]}{gtin[8:13]}.{serial}"],
        "action": "OBSERVE",
        "bizStep": "inspecting",
    }
    foreign = event(Batch(product=batch.product, lot="NOPE"), biz_step="receiving", when=timezone.now())
    results = capture(personas["pharmacy"], document(rejected, inspected, foreign)).json()["results"]
    assert [r["status"] for r in results] == ["recorded", "recorded", "not_recorded"]
    in_transit.refresh_from_db()
    assert in_transit.status == Shipment.Status.REJECTED
    assert "EPCIS" in in_transit.rejection_reason
    assert CapturedEvent.objects.filter(batch=batch).count() == 2
    assert results[1]["eventID"] == hashing.event_id(inspected, context=CONTEXT)
    assert (
        results[1]["eventID"]
        == reference_ids(
            {**document(inspected), "epcisBody": {"queryResults": {"resultsBody": {"eventList": [inspected]}}}}
        )[0]
    )


def test_a_document_that_is_not_valid_epcis_is_a_400_with_each_error_and_its_path(manufacturer: Persona) -> None:
    bad = document({"type": "ObjectEvent", "eventTime": "noon", "eventTimeZoneOffset": "+00:00", "action": "ADD"})
    response = capture(manufacturer, bad)
    assert response.status_code == 400
    paths = {error["path"] for error in response.json()["errors"]}
    assert "$.epcisBody.eventList[0].eventTime" in paths
    assert capture(manufacturer, {"type": "EPCISQueryDocument"}).status_code == 400
    assert capture(manufacturer, [1, 2]).status_code == 400
    assert not CapturedEvent.objects.exists()


def test_huge_documents_are_refused(manufacturer: Persona) -> None:
    batch = register_batch(manufacturer, make_product(manufacturer))
    many = [event(batch, biz_step="inspecting", when=timezone.now()) for _ in range(501)]
    response = capture(manufacturer, document(*many))
    assert response.status_code == 413
    assert "at most 500" in response.json()["detail"]
    raw = json.dumps(document(event(batch, biz_step="inspecting", when=timezone.now(), padding="x" * 1_100_000)))
    response = manufacturer.client().post(URL, raw, content_type="application/ld+json")
    assert response.status_code == 413
    assert not CapturedEvent.objects.exists()


def test_capture_needs_a_member_who_may_write(personas: dict[str, Persona], anonymous: Any) -> None:
    viewer = make_persona("viewer", Organisation.Kind.DISPENSER, role=Membership.Role.VIEWER)
    assert capture(viewer, document()).status_code == 403
    assert anonymous.post(URL, document(), format="json").status_code == 401


def test_a_whole_journey_captured_back_is_already_known(personas: dict[str, Persona]) -> None:
    """Our own export, fed back by the manufacturer: every event is kept once, none changes custody twice."""
    journey(personas)
    exported = json.loads(personas["manufacturer"].client().get("/api/v1/epcis/events").content)
    event_list = exported["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    body = {**document(*event_list), "@context": exported["@context"]}
    first = capture(personas["manufacturer"], body).json()["results"]
    assert [r["eventID"] for r in first] == [e["eventID"] for e in event_list]
    assert all(r["status"] in ("recorded", "not_recorded") for r in first)
    assert CapturedEvent.objects.count() == CapturedEvent.objects.filter(ours=True).count() == len(event_list)
    for persona in ("manufacturer", "regulator"):  # each of our events once, as ours
        assert events(personas[persona].client()) == event_list
    second = capture(personas["manufacturer"], body).json()["results"]
    assert {r["status"] for r in second} == {"already_recorded"}


def test_a_partners_event_is_returned_by_queries_as_it_was_captured(
    personas: dict[str, Persona], in_transit: Shipment
) -> None:
    batch = in_transit.items.get().batch
    when = timezone.now() - datetime.timedelta(minutes=20)
    inspected = event(batch, biz_step="inspecting", when=when, **{"example:note": "seal intact"})
    inspected["recordTime"] = "2020-01-01T00:00:00Z"  # the sender's; the record time is the capture's
    extended = {**document(inspected), "@context": [*CONTEXT, {"example": "https://example.com/epcis/"}]}
    (result,) = capture(personas["pharmacy"], extended).json()["results"]
    assert result["status"] == "recorded"
    kept = CapturedEvent.objects.get()
    assert not kept.ours

    (found,) = [e for e in events(personas["pharmacy"].client()) if e["eventID"] == result["eventID"]]
    assert found["eventID"] == hashing.event_id(inspected, context=extended["@context"])
    assert found["@context"] == [{"example": "https://example.com/epcis/"}]
    assert found["recordTime"] == kept.captured_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sent = {key: value for key, value in inspected.items() if key != "recordTime"}
    assert {key: found[key] for key in sent} == sent

    def sees(persona: str, **params: Any) -> bool:
        return result["eventID"] in {e["eventID"] for e in events(personas[persona].client(), **params)}

    # who captured it, the batch's manufacturer and regulators; not the carrier, who sees the batch
    assert [sees(p) for p in ("pharmacy", "manufacturer", "regulator", "carrier")] == [True, True, True, False]
    assert sees("pharmacy", batch=batch.pk, GE_eventTime=(when - datetime.timedelta(seconds=1)).isoformat())
    assert not sees("pharmacy", GE_eventTime=(when + datetime.timedelta(seconds=1)).isoformat())
    assert not sees("pharmacy", lot="OTHER")


# What the feed could not read back, or the database could not store --------------------------------


@pytest.mark.parametrize(
    ("when", "event_id"),
    [
        pytest.param("0001-01-01T00:00:00+14:00", "urn:uuid:11111111-2222-4333-8444-555555555555", id="year 0 in UTC"),
        pytest.param("9999-12-31T23:59:59.9999Z", "urn:uuid:11111111-2222-4333-8444-555555555556", id="year 10000"),
        pytest.param("0001-01-01T00:00:00+14:00", None, id="year 0 without an eventID"),
    ],
)
def test_an_event_time_outside_the_years_1_to_9999_in_utc_is_refused_and_every_feed_still_answers(
    personas: dict[str, Persona], in_transit: Shipment, when: str, event_id: str | None
) -> None:
    """A partner's event PostgreSQL would keep (in year 0) but Python could not read back: refused alone."""
    batch = in_transit.items.get().batch
    timeless = event(batch, biz_step="inspecting", when=timezone.now()) | {"eventTime": when}
    if event_id is not None:
        timeless["eventID"] = event_id
    fine = event(batch, biz_step="inspecting", when=timezone.now() - datetime.timedelta(minutes=5))

    refused, recorded = capture(personas["pharmacy"], document(timeless, fine)).json()["results"]

    assert refused["status"] == "not_recorded"
    assert when in refused["detail"]
    assert "years 1 to 9999 in UTC" in refused["detail"]
    assert recorded["status"] == "recorded"
    assert list(CapturedEvent.objects.values_list("event_id", flat=True)) == [recorded["eventID"]]
    for persona in ("pharmacy", "manufacturer", "regulator"):
        assert recorded["eventID"] in {e["eventID"] for e in events(personas[persona].client(), batch=batch.pk)}


def test_an_event_in_the_last_millisecond_of_year_9999_is_kept_and_read_back(
    personas: dict[str, Persona], in_transit: Shipment
) -> None:
    """Our own events are looked up in the event's millisecond: there is no millisecond after this one."""
    batch = in_transit.items.get().batch
    last = event(batch, biz_step="inspecting", when=timezone.now()) | {
        "eventTime": "9999-12-31T23:59:59.999Z",
        "eventID": "urn:uuid:11111111-2222-4333-8444-555555555557",
    }

    (result,) = capture(personas["pharmacy"], document(last)).json()["results"]

    assert result["status"] == "recorded"
    assert events(personas["manufacturer"].client())[-1]["eventTime"] == "9999-12-31T23:59:59.999Z"


def test_an_event_stored_in_year_0_before_capture_checked_never_breaks_the_feed(
    personas: dict[str, Persona], in_transit: Shipment
) -> None:
    """PostgreSQL keeps 0001-01-01T00:00:00+14:00 as 31 December of 1 BC: such a row is left out, not a 500."""
    if connection.vendor != "postgresql":
        unavailable("only PostgreSQL stores a time before the year 1 (SQLite's adapter refuses it)")
    batch = in_transit.items.get().batch
    sent = event(batch, biz_step="inspecting", when=timezone.now()) | {"eventTime": "0001-01-01T00:00:00+14:00"}
    CapturedEvent.objects.create(
        event_id="urn:uuid:11111111-2222-4333-8444-555555555558",
        captured_by=personas["pharmacy"].organisation,
        event_time=datetime.datetime.fromisoformat(sent["eventTime"]),
        batch=batch,
        event=sent,
        outcome="kept; it records no custody change.",
    )
    for persona in ("pharmacy", "manufacturer", "regulator"):
        found = events(personas[persona].client())
        assert found
        assert "urn:uuid:11111111-2222-4333-8444-555555555558" not in {e["eventID"] for e in found}


EXTENDED = [*CONTEXT, {"example": "https://example.com/"}]


@pytest.mark.parametrize(
    ("context", "bad", "field", "path"),
    [
        pytest.param(
            EXTENDED, '"example:note": "a\\u0000b"', "epcisBody", "$.epcisBody.eventList[1].example:note", id="NUL"
        ),
        pytest.param(
            EXTENDED, '"example:reading": 1e400', "epcisBody", "$.epcisBody.eventList[1].example:reading", id="1e400"
        ),
        pytest.param(
            [*CONTEXT, {"ex\u0000": "https://example.com/"}],
            '"example:note": "x"',
            "@context",
            '$.@context[1]["ex\\u0000"]',
            id="NUL in a context key",
        ),
    ],
)
def test_a_document_with_a_nul_or_a_number_too_large_is_refused_whole_naming_where(
    personas: dict[str, Persona], in_transit: Shipment, context: list[Any], bad: str, field: str, path: str
) -> None:
    """The receipt first in the document is not applied: nothing of a refused document is."""
    # json.dumps cannot write 1e400 (it writes Infinity): the member goes into the text as it is given.
    slot = '"spliced": "here"'
    inspected = event(in_transit.items.get().batch, biz_step="inspecting", when=timezone.now(), spliced="here")
    body = json.dumps({**document(receipt(in_transit), inspected), "@context": context}).replace(slot, bad)
    assert slot not in body

    response = personas["pharmacy"].client().post(URL, body, content_type="application/ld+json")

    assert response.status_code == 400, response.content
    (reason,) = response.json()[field]
    assert reason.startswith(f"{path}: ")
    in_transit.refresh_from_db()
    assert in_transit.status == Shipment.Status.IN_TRANSIT
    assert not CapturedEvent.objects.exists()
    assert not PendingEvent.objects.filter(type="shipment.delivered").exists()


def test_an_event_id_another_organisation_used_first_neither_blocks_nor_reveals_its_outcome(
    personas: dict[str, Persona], in_transit: Shipment
) -> None:
    """carrier2 captures an inspection of its own goods under the ID the pharmacy then gives its receipt."""
    manufacturer, carrier2, pharmacy = personas["manufacturer"], personas["carrier2"], personas["pharmacy"]
    theirs = made(register_batch(manufacturer, make_product(manufacturer), lot="CAP2"))
    ship(manufacturer, carrier2, pharmacy, theirs, hours_ago=4)
    shared = "urn:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    squat = event(theirs, biz_step="inspecting", when=timezone.now() - datetime.timedelta(hours=2), eventID=shared)
    (first,) = capture(carrier2, document(squat)).json()["results"]
    assert first["status"] == "recorded"
    received = receipt(in_transit, eventID=shared)

    (result,) = capture(pharmacy, document(received)).json()["results"]

    assert result == {
        "eventID": shared,
        "status": "recorded",
        "detail": f"received shipment {in_transit.reference}.",
        "shipment": in_transit.reference,
    }
    in_transit.refresh_from_db()
    assert in_transit.status == Shipment.Status.DELIVERED
    # Each organisation's event is its own: sent again, each gets its own outcome back.
    (again,) = capture(pharmacy, document(received)).json()["results"]
    assert (again["status"], again["detail"]) == ("already_recorded", f"received shipment {in_transit.reference}.")
    (theirs_again,) = capture(carrier2, document(squat)).json()["results"]
    assert (theirs_again["status"], theirs_again["detail"]) == ("already_recorded", first["detail"])
    assert CapturedEvent.objects.filter(event_id=shared).count() == 2

    def steps_under_the_id(persona: Persona) -> list[str]:
        return sorted(e["bizStep"] for e in events(persona.client()) if e["eventID"] == shared)

    assert steps_under_the_id(pharmacy) == ["receiving"]
    assert steps_under_the_id(carrier2) == ["inspecting"]
    assert steps_under_the_id(manufacturer) == ["inspecting", "receiving"]  # each is what a partner said
