"""EPCIS 2.0 export: what each persona gets from /api/v1/epcis/events, valid against GS1's schema."""

from __future__ import annotations

import copy
import datetime
import json
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.conf import settings
from django.utils import timezone
from jsonschema import Draft7Validator
from rest_framework.test import APIClient

from iot_ingest.models import Device, InboxMessage, Reading
from ledger import services as ledger
from tests import factories
from tests.conftest import Persona
from tests.scenarios import log_temperatures, register_batch
from traceability import services
from traceability.epcis import schema
from traceability.models import Batch, Product, Recall, RecallItem, Shipment

HOUR = datetime.timedelta(hours=1)
URL = "/api/v1/epcis/events"


# Worlds ------------------------------------------------------------------------------------


def made(batch: Batch, hours_ago: float = 30) -> Batch:
    """Registered a while ago, before the legs the tests back-date."""
    Batch.objects.filter(pk=batch.pk).update(created_at=timezone.now() - datetime.timedelta(hours=hours_ago))
    batch.refresh_from_db()
    return batch


def make_product(persona: Persona) -> Product:
    return services.product_register(
        actor=persona.user,
        gtin=factories.gtin(),
        name="Morbivax",
        dosage_form="suspension for injection",
        storage_profile="2-8C",
        freeze_sensitive=True,
    )


def ship(shipper: Persona, carrier: Persona, consignee: Persona, batch: Batch, *, hours_ago: float = 20) -> Shipment:
    shipment = services.shipment_create(
        actor=shipper.user,
        carrier=carrier.organisation,
        consignee=consignee.organisation,
        origin=shipper.site,
        destination=consignee.site,
        items=[services.ItemSpec(batch=batch, quantity=10)],
    )
    return services.shipment_dispatch(
        actor=shipper.user, shipment=shipment, occurred_at=timezone.now() - datetime.timedelta(hours=hours_ago)
    )


def ride(shipment: Shipment, temperature: Callable[[float], float]) -> list[float]:
    """A logger's readings on the leg every 5 minutes (stored), and the excursions they cause (evaluated)."""
    shipment.refresh_from_db()
    assert shipment.dispatched_at is not None
    device = Device.objects.create(device_id=f"LOG-{shipment.pk}", organisation=shipment.shipper, public_key=bytes(32))
    message = InboxMessage.objects.create(transport="http", raw=b"{}", device=device, seq=1, outcome="accepted")
    end = shipment.closed_at or timezone.now()
    at, values, rows = shipment.dispatched_at + datetime.timedelta(minutes=11), [], []
    while at <= end:
        value = temperature((at - shipment.dispatched_at).total_seconds() / 3600)
        rows.append(
            Reading(
                device=device,
                shipment=shipment,
                message=message,
                index=len(rows),
                kind="temperature",
                value=value,
                measured_at=at,
                received_at=at,
            )
        )
        values.append(value)
        at += datetime.timedelta(minutes=5)
    # A reading after arrival is not the leg's.
    rows.append(
        Reading(
            device=device,
            shipment=shipment,
            message=message,
            index=len(rows),
            kind="temperature",
            value=40.0,
            measured_at=end + HOUR,
            received_at=end + HOUR,
        )
    )
    Reading.objects.bulk_create(rows)
    log_temperatures(shipment, temperature)
    return values


def recall(batch: Batch, issuer: Persona, *, serials: tuple[str, str] | None = None) -> Recall:
    issued = Recall.objects.create(
        reference=f"RCL-{batch.pk}",
        kind=Recall.Kind.VOLUNTARY,
        classification=Recall.Class.II,
        depth=Recall.Depth.RETAIL,
        reason="potency",
        instructions="return",
        manufacturer=batch.product.manufacturer,
        initiated_by=issuer.organisation,
        issued_by=issuer.user,
    )
    low, high = serials or ("", "")
    RecallItem.objects.create(recall=issued, batch=batch, serial_from=low, serial_to=high)
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.RECALLED)
    return issued


def journey(personas: dict[str, Persona], *, serials: int = 3, excursion: bool = True) -> dict[str, Any]:
    """Made, dispatched, handed from carrier to carrier2, received by the pharmacy, with readings."""
    manufacturer, carrier, carrier2, pharmacy = (
        personas[n] for n in ("manufacturer", "carrier", "carrier2", "pharmacy")
    )
    batch = made(register_batch(manufacturer, make_product(manufacturer), serials=serials))
    shipment = ship(manufacturer, carrier, pharmacy, batch)
    services.custody_transfer(
        actor=carrier.user,
        shipment=shipment,
        to_organisation=carrier2.organisation,
        site=carrier2.site,
        occurred_at=timezone.now() - 10 * HOUR,
    )
    services.shipment_receive(
        actor=pharmacy.user, shipment=shipment, accept=True, occurred_at=timezone.now() - 2 * HOUR
    )
    values = ride(shipment, (lambda h: 12.0 if 3 <= h < 5 else 5.0) if excursion else (lambda h: 4.0 + h / 10))
    return {"batch": batch, "shipment": shipment, "values": values}


def events(client: APIClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    body = json.loads(response.content)
    assert not schema.errors(body)
    return list(body["epcisBody"]["queryResults"]["resultsBody"]["eventList"])


def steps(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["bizStep"], e["disposition"]) for e in found]


# The events --------------------------------------------------------------------------------


def test_a_batch_is_commissioned_with_its_serials_lot_and_expiry(manufacturer: Persona, settings: Any) -> None:
    settings.BASE_URL = "https://id.example-pharma.com"
    batch = register_batch(manufacturer, make_product(manufacturer), lot="MV2405", serials=2, quantity=50)
    (event,) = events(manufacturer.client())
    gtin = batch.product.gtin
    assert event["type"] == "ObjectEvent"
    assert (event["action"], event["bizStep"], event["disposition"]) == ("ADD", "commissioning", "active")
    serials = sorted(batch.serials.values_list("serial", flat=True))
    assert event["epcList"] == [f"https://id.example-pharma.com/01/{gtin}/21/{s}" for s in serials]
    assert event["quantityList"] == [{"epcClass": f"https://id.example-pharma.com/01/{gtin}/10/MV2405", "quantity": 48}]
    assert event["ilmd"] == {"cbvmda:lotNumber": "MV2405", "cbvmda:itemExpirationDate": batch.expires_on.isoformat()}
    assert event["eventID"].startswith("ni:///sha-256;")
    assert event["eventID"].endswith("?ver=CBV2.0")


def test_a_journey_reads_as_shipping_hand_over_and_receiving_with_the_legs_temperatures(
    personas: dict[str, Persona],
) -> None:
    world = journey(personas)
    shipment, values = world["shipment"], world["values"]
    found = events(personas["pharmacy"].client())
    assert steps(found) == [
        ("commissioning", "active"),
        ("shipping", "in_transit"),
        ("accepting", "in_transit"),
        ("receiving", "in_progress"),
    ]
    shipping, handover, receiving = found[1:]
    transaction = {
        "bizTransaction": f"urn:epcglobal:cbv:bt:{shipment.shipper.gln}:{shipment.reference}",
        "type": "desadv",
    }
    assert shipping["bizTransactionList"] == [transaction] == receiving["bizTransactionList"]
    gln = {name: p.organisation.gln for name, p in personas.items()}
    assert shipping["sourceList"] == [
        {"source": f"https://id.gs1.org/417/{gln['manufacturer']}", "type": "owning_party"},
        {"source": f"https://id.gs1.org/417/{gln['manufacturer']}", "type": "possessing_party"},
        {"source": f"https://id.gs1.org/414/{personas['manufacturer'].site.gln}", "type": "location"},
    ]
    assert shipping["readPoint"] == {"id": f"https://id.gs1.org/414/{personas['manufacturer'].site.gln}"}
    assert handover["sourceList"] == [
        {"source": f"https://id.gs1.org/417/{gln['carrier']}", "type": "possessing_party"}
    ]
    assert handover["destinationList"] == [
        {"destination": f"https://id.gs1.org/417/{gln['carrier2']}", "type": "possessing_party"}
    ]
    assert "sensorElementList" not in shipping  # nothing was measured at dispatch
    summary, alarm = receiving["sensorElementList"]
    (report,) = summary["sensorReport"]
    assert report == {
        "type": "Temperature",
        "minValue": min(values),
        "maxValue": max(values),  # the 40 °C after arrival is not the leg's
        "meanValue": pytest.approx(math.fsum(values) / len(values), abs=0.001),
        "uom": "CEL",
    }
    (excursion,) = alarm["sensorReport"]
    assert excursion == {"type": "Temperature", "exception": "ALARM_CONDITION", "maxValue": 12, "uom": "CEL"}
    started = datetime.datetime.fromisoformat(alarm["sensorMetadata"]["startTime"])
    assert started - shipment.dispatched_at == pytest.approx(
        datetime.timedelta(hours=3), abs=datetime.timedelta(minutes=6)
    )


def test_rejections_quarantines_releases_and_recalls(personas: dict[str, Persona]) -> None:
    manufacturer, carrier, pharmacy = personas["manufacturer"], personas["carrier"], personas["pharmacy"]
    product = make_product(manufacturer)
    batch = made(register_batch(manufacturer, product, lot="A1", serials=5))
    shipment = ship(manufacturer, carrier, pharmacy, batch)
    services.shipment_receive(actor=pharmacy.user, shipment=shipment, accept=False, reason="warm on arrival")
    services.batch_quarantine(actor=manufacturer.user, batch=batch, reason="excursion")
    services.batch_release(actor=manufacturer.user, batch=batch, reason="stability data")
    ledger.ledger_commit()  # one entry sequenced, the next still pending: both are read
    services.batch_quarantine(actor=manufacturer.user, batch=batch, reason="complaint")
    serials = sorted(batch.serials.values_list("serial", flat=True))
    recall(batch, manufacturer, serials=(serials[1], serials[2]))
    found = events(manufacturer.client())
    assert steps(found) == [
        ("commissioning", "active"),
        ("shipping", "in_transit"),
        ("receiving", "non_conformant"),
        ("holding", "non_sellable_other"),
        ("inspecting", "sellable_not_accessible"),
        ("holding", "non_sellable_other"),
        ("holding", "recalled"),
    ]
    gtin = product.gtin
    assert found[-1]["epcList"] == [events_base(gtin, s) for s in serials[1:3]]
    # The pharmacy sees the shipment, the batch and its recall; the quarantines are the manufacturer's.
    assert [step for step, _ in steps(events(pharmacy.client()))].count("inspecting") == 0
    assert ("holding", "recalled") in steps(events(pharmacy.client()))


def events_base(gtin: str, serial: str) -> str:
    from django.conf import settings

    return f"{settings.BASE_URL}/01/{gtin}/21/{serial}"


def test_each_organisation_sees_the_events_of_what_it_may_see(personas: dict[str, Persona]) -> None:
    world = journey(personas)
    register_batch(personas["competitor"], make_product(personas["competitor"]), lot="C1")
    ids = {name: [e["eventID"] for e in events(p.client())] for name, p in personas.items()}
    assert len(ids["manufacturer"]) == 4
    assert ids["pharmacy"] == ids["carrier"] == ids["carrier2"] == ids["manufacturer"]
    assert len(ids["competitor"]) == 1
    assert not set(ids["competitor"]) & set(ids["manufacturer"])
    assert set(ids["regulator"]) == set(ids["manufacturer"]) | set(ids["competitor"])
    assert world["shipment"].reference not in json.dumps(events(personas["competitor"].client()))


@pytest.mark.django_db  # a refusal is written to the audit log
def test_anonymous_callers_get_nothing(anonymous: APIClient) -> None:
    assert anonymous.get(URL).status_code == 401


# Filters and pages --------------------------------------------------------------------------


def test_filters_by_batch_gtin_class_time_and_type(personas: dict[str, Persona]) -> None:
    manufacturer = personas["manufacturer"]
    world = journey(personas)
    other = register_batch(manufacturer, make_product(manufacturer), lot="B2", serials=0)
    client = manufacturer.client()
    assert len(events(client)) == 5
    assert len(events(client, batch=world["batch"].pk)) == 4
    assert len(events(client, batch=other.pk)) == 1
    assert len(events(client, gtin=other.product.gtin)) == 1
    assert len(events(client, gtin=other.product.gtin, lot="nope")) == 0
    link = f"https://any.example/01/{other.product.gtin}/10/B2"
    assert len(events(client, MATCH_anyEPCClass=link)) == 1
    assert len(events(client, MATCH_anyEPCClass=f"https://id.gs1.org/01/{world['batch'].product.gtin}")) == 4
    shipment = world["shipment"]
    since = (shipment.dispatched_at + datetime.timedelta(seconds=1)).isoformat()
    assert steps(events(client, GE_eventTime=since, batch=world["batch"].pk)) == [
        ("accepting", "in_transit"),
        ("receiving", "in_progress"),
    ]
    assert len(events(client, LT_eventTime=shipment.dispatched_at.isoformat(), batch=world["batch"].pk)) == 1
    assert events(client, eventType="AggregationEvent") == []
    assert len(events(client, eventType="ObjectEvent,AggregationEvent")) == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"GE_eventTime": "yesterday"}, "GE_eventTime"),
        ({"LT_eventTime": "2026-13-01T00:00:00Z"}, "LT_eventTime"),
        ({"LT_eventTime": "2026-01-01T00:00:00"}, "LT_eventTime"),  # no offset
        ({"eventType": "Object"}, "eventType"),
        ({"perPage": "0"}, "perPage"),
        ({"perPage": "501"}, "perPage"),
        ({"perPage": "ten"}, "perPage"),
        ({"nextPageToken": "garbage!"}, "nextPageToken"),
        ({"nextPageToken": "WzEsMiwzXQ"}, "nextPageToken"),  # [1,2,3]
        ({"batch": "-1"}, "batch"),
        ({"batch": "99999999999999999999999"}, "batch"),
        ({"gtin": "12345"}, "gtin"),
        ({"gtin": "04000000000018"}, "gtin"),  # wrong check digit
        ({"lot": "x" * 21}, "lot"),
        ({"MATCH_anyEPCClass": "urn:epc:id:sgtin:4000000.000001.S1"}, "MATCH_anyEPCClass"),  # one unit
        ({"MATCH_epcClass": "not a uri"}, "MATCH_epcClass"),
        ({"GE_eventtime": "2026-01-01T00:00:00Z"}, "GE_eventtime"),  # a typo is not silently ignored
    ],
)
def test_a_bad_filter_is_a_400_naming_it(manufacturer: Persona, params: dict[str, str], field: str) -> None:
    response = manufacturer.client().get(URL, params)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert response.json()[field][0]


def test_pages_follow_the_link_header_and_cover_every_event_once(personas: dict[str, Persona]) -> None:
    journey(personas)
    journey(personas, serials=0, excursion=False)
    client = personas["regulator"].client()
    everything = events(client)
    assert len(everything) == 8
    seen: list[dict[str, Any]] = []
    response = client.get(URL, {"perPage": 3})
    pages = 0
    while True:
        pages += 1
        body = json.loads(response.content)
        assert not schema.errors(body)
        seen += body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        assert response["GS1-EPCIS-Version"] == "2.0.0"
        if "Link" not in response:
            break
        url = response["Link"].split(">")[0].lstrip("<")
        assert response["Link"].endswith('rel="next"')
        assert parse_qs(urlparse(url).query)["perPage"] == ["3"]
        response = client.get(url)
    assert pages == 3
    assert [e["eventID"] for e in seen] == [e["eventID"] for e in everything]


def test_an_event_keeps_its_id_from_one_query_to_the_next(personas: dict[str, Persona]) -> None:
    journey(personas)
    first = events(personas["manufacturer"].client())
    again = events(personas["regulator"].client())
    assert [e["eventID"] for e in first] == [e["eventID"] for e in again]
    assert len({e["eventID"] for e in first}) == len(first)


# GS1's schema and the reference hash, over many worlds ------------------------------------------------


def world_documents(personas: dict[str, Persona]) -> list[dict[str, Any]]:
    """Documents from worlds with and without serials, excursions, recalls, hand-overs and rejections, paged."""
    manufacturer, carrier, pharmacy = personas["manufacturer"], personas["carrier"], personas["pharmacy"]
    travelled = journey(personas, serials=4, excursion=True)["batch"]
    dispensed = travelled.serials.values_list("serial", flat=True)[:1]
    services.units_dispense(actor=pharmacy.user, batch=travelled, serials=list(dispensed), site=pharmacy.site)
    journey(personas, serials=0, excursion=False)
    rejected_batch = made(register_batch(manufacturer, make_product(manufacturer), lot="R/1", serials=0))
    rejected = ship(manufacturer, carrier, pharmacy, rejected_batch, hours_ago=5)
    services.shipment_receive(actor=pharmacy.user, shipment=rejected, accept=False, reason="broken seal")
    ride(rejected, lambda h: 1.0 if h < 1 else 9.5)
    recall(rejected_batch, personas["regulator"])
    services.batch_quarantine(
        actor=manufacturer.user, batch=register_batch(manufacturer, make_product(manufacturer), lot="Q1"), reason="x"
    )
    on_road = made(register_batch(manufacturer, make_product(manufacturer), lot="T1"))
    in_transit = ship(manufacturer, carrier, pharmacy, on_road)
    ride(in_transit, lambda h: 5.0)
    documents = []
    for persona in personas.values():
        client = persona.client()
        documents.append(json.loads(client.get(URL).content))
        response = client.get(URL, {"perPage": 2})
        while True:
            documents.append(json.loads(response.content))
            if "Link" not in response:
                break
            response = client.get(response["Link"].split(">")[0].lstrip("<"))
    return documents


def test_every_document_validates_against_gs1s_schema(personas: dict[str, Persona]) -> None:
    validator = Draft7Validator(json.loads(schema.SCHEMA_PATH.read_text()))
    documents = world_documents(personas)
    assert len(documents) > 20
    for document in documents:
        assert list(validator.iter_errors(document)) == []
        assert schema.errors(document) == []  # with our format checks too (URIs, RFC 3339 times)
    kinds = {
        (e["bizStep"], e["disposition"])
        for d in documents
        for e in d["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    }
    assert kinds == {
        ("commissioning", "active"),
        ("shipping", "in_transit"),
        ("accepting", "in_transit"),
        ("receiving", "in_progress"),
        ("receiving", "non_conformant"),
        ("holding", "non_sellable_other"),
        ("holding", "recalled"),
        ("dispensing", "dispensed"),
    }


def reference_ids(document: dict[str, Any]) -> list[str]:
    """GS1's reference implementation, on the same events, offline: it loads the EPCIS context it bundles."""
    from epcis_event_hash_generator import hash_generator, json_to_py

    event_list = document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    wrapped = {
        **copy.deepcopy(document),
        "type": "EPCISDocument",
        "epcisBody": {"eventList": copy.deepcopy(event_list)},
    }
    parsed = json_to_py.event_list_from_epcis_document_json(wrapped)
    return list(hash_generator.epcis_hashes_from_events(parsed))


def test_event_ids_equal_the_reference_implementations(personas: dict[str, Persona], settings: Any) -> None:
    settings.BASE_URL = "https://id.example-pharma.com"
    document = json.loads(personas["regulator"].client().get(URL, {"perPage": 500}).content)
    assert not document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    world_documents(personas)
    document = json.loads(personas["regulator"].client().get(URL, {"perPage": 500}).content)
    event_list = document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert len(event_list) >= 15
    assert [e["eventID"] for e in event_list] == reference_ids(document)


def test_who_dispensed_a_pack_is_for_the_dispenser_the_manufacturer_and_regulators(
    personas: dict[str, Persona],
) -> None:
    batch = journey(personas, serials=2, excursion=False)["batch"]
    serial = batch.serials.values_list("serial", flat=True)[0]
    pharmacy = personas["pharmacy"]
    services.units_dispense(actor=pharmacy.user, batch=batch, serials=[serial], site=pharmacy.site)
    seen = {
        name: [e for e in events(personas[name].client()) if e["bizStep"] == "dispensing"]
        for name in ("pharmacy", "manufacturer", "regulator", "carrier", "carrier2")
    }
    for name in ("pharmacy", "manufacturer", "regulator"):
        (event,) = seen[name]
        assert event["epcList"] == [f"{settings.BASE_URL}/01/{batch.product.gtin}/21/{serial}"]
        assert event["bizLocation"]["id"].endswith(pharmacy.site.gln)
    assert seen["carrier"] == [] == seen["carrier2"]  # carried the batch, but whoever dispensed it is not theirs
