"""Recalls through the services: scope, issue, notices, acknowledgements, close; and the trace they stand on.

The world: the manufacturer made 1,000 units; the carrier delivered 100 to the
pharmacy, is carrying 50 more there, and 20 wait in a planned shipment.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from unittest import mock

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError

from ledger import services as ledger
from ledger.models import Entry
from tests import factories
from tests.conftest import Persona, make_persona
from tests.scenarios import register_batch, ship
from traceability import selectors, services, tasks, trace
from traceability.models import Batch, Organisation, Recall, RecallNotice, SerialNumber, Shipment
from traceability.services.recalls import RecallItemSpec, serial_order

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"  # the factories' password


@pytest.fixture
def batch(manufacturer: Persona) -> Batch:
    product = factories.ProductFactory(manufacturer=manufacturer.organisation)
    return register_batch(manufacturer, product, serials=12)


@pytest.fixture
def world(batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> dict[str, Shipment]:
    return {
        outcome: ship(batch, manufacturer, carrier, pharmacy, quantity=quantity, outcome=outcome)
        for outcome, quantity in (("delivered", 100), ("in_transit", 50), ("planned", 20))
    }


def issue(actor: Persona, batch: Batch, **changes: Any) -> Recall:
    arguments = {
        "actor": actor.user,
        "password": PASSWORD,
        "items": [RecallItemSpec(batch)],
        "classification": Recall.Class.I,
        "depth": Recall.Depth.CONSUMER,
        "reason": "Vials may contain particles.",
        "instructions": "Stop dispensing; quarantine every pack and return it to the manufacturer.",
    }
    return services.recall_issue(**(arguments | changes))


def entries(event_type: str) -> list[dict[str, Any]]:
    ledger.ledger_commit()
    found = Entry.objects.filter(type=event_type).order_by("seq")
    return [json.loads(bytes(entry.leaf)) | {"public": entry.public} for entry in found]


def test_the_preview_shows_every_holder_and_changes_nothing(
    batch: Batch, world: dict[str, Shipment], regulator: Persona, manufacturer: Persona, carrier: Persona
) -> None:
    scope = services.recall_preview(actor=regulator.user, items=[RecallItemSpec(batch)], depth=Recall.Depth.CONSUMER)

    units = {holder.organisation.name: (holder.on_hand, holder.in_care, holder.incoming) for holder in scope.holders}
    assert units == {"Manufacturer": (850, 0, 0), "Carrier": (0, 50, 0), "Pharmacy": (100, 0, 50)}
    assert scope.holders[0].organisation == manufacturer.organisation
    assert {shipment.pk: units for shipment, units in scope.shipments} == {
        world["in_transit"].pk: 50,
        world["planned"].pk: 20,
    }
    assert scope.units == 1000
    batch.refresh_from_db()
    assert batch.status == Batch.Status.ACTIVE
    assert not Recall.objects.exists()


def test_a_mandated_recall_marks_notifies_flags_and_is_public_in_the_ledger(
    batch: Batch,
    world: dict[str, Shipment],
    regulator: Persona,
    pharmacy: Persona,
    django_capture_on_commit_callbacks: Any,
) -> None:
    factories.UserFactory.create(email="qa@pharmacy.example")  # no organisation: never written to
    pharmacy.user.email = "orders@pharmacy.example"  # type: ignore[attr-defined]
    pharmacy.user.save()
    with django_capture_on_commit_callbacks(execute=True):
        recall = issue(regulator, batch)

    assert recall.kind == Recall.Kind.MANDATED
    assert recall.initiated_by == regulator.organisation
    batch.refresh_from_db()
    assert batch.status == Batch.Status.RECALLED
    assert set(batch.serials.values_list("status", flat=True)) == {SerialNumber.Status.RECALLED}
    notices = {notice.organisation.name: notice.units_expected for notice in recall.notices.all()}
    assert notices == {"Manufacturer": 850, "Carrier": 50, "Pharmacy": 150}
    assert set(recall.flagged.values_list("shipment", flat=True)) == {world["in_transit"].pk, world["planned"].pk}
    (entry,) = entries("recall.issued")
    assert entry["public"]
    assert entry["subject"] == f"recall:{recall.reference}"
    assert entry["data"]["items"] == [{"gtin": batch.product.gtin, "lot": batch.lot}]
    assert entry["data"]["classification"] == "I"
    assert "Pharmacy" not in json.dumps(entry)  # who holds what is not public
    (message,) = mail.outbox
    assert message.to == ["orders@pharmacy.example"]
    assert recall.reference in message.subject
    assert "150 units" in message.body
    assert f"/recalls/{recall.pk}/" in message.body


def test_a_broker_that_is_down_does_not_undo_or_break_a_committed_recall(
    batch: Batch, world: dict[str, Shipment], regulator: Persona, django_capture_on_commit_callbacks: Any
) -> None:
    with (
        mock.patch.object(tasks.recall_notice_mail, "delay", side_effect=OSError("connection refused")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        recall = issue(regulator, batch)
    assert Recall.objects.get() == recall
    assert recall.notices.count() == 3  # in the application, whatever became of the mail


def test_each_organisation_gets_its_own_mail(
    batch: Batch, world: dict[str, Shipment], regulator: Persona, manufacturer: Persona, pharmacy: Persona
) -> None:
    for persona, address in ((manufacturer, "qa@maker.example"), (pharmacy, "orders@pharmacy.example")):
        persona.user.email = address  # type: ignore[attr-defined]
        persona.user.save()
    batch.product.name = "Morbivax\nBcc: everyone@example.com"  # a header injection attempt, in the subject
    batch.product.save()
    recall = issue(regulator, batch)
    mail.outbox.clear()
    sent = [tasks.recall_notice_mail(notice.pk) for notice in recall.notices.order_by("organisation__name")]
    assert sent == [0, 1, 1]  # the carrier's members have no address
    assert sorted(message.to[0] for message in mail.outbox) == ["orders@pharmacy.example", "qa@maker.example"]
    assert all("\n" not in message.subject for message in mail.outbox)


def test_a_recalled_batch_is_not_dispatched(
    batch: Batch, world: dict[str, Shipment], regulator: Persona, manufacturer: Persona
) -> None:
    issue(regulator, batch)
    with pytest.raises(ValidationError, match="recalled"):
        services.shipment_dispatch(actor=manufacturer.user, shipment=world["planned"])


def test_the_wrong_password_changes_nothing(batch: Batch, world: dict[str, Shipment], regulator: Persona) -> None:
    with pytest.raises(ValidationError) as raised:
        issue(regulator, batch, password="guess")
    assert "password" in raised.value.message_dict
    batch.refresh_from_db()
    assert batch.status == Batch.Status.ACTIVE
    assert not Recall.objects.exists()
    assert not entries("recall.issued")


def test_a_manufacturer_recalls_its_own_batches_only(
    batch: Batch, manufacturer: Persona, competitor: Persona, carrier: Persona
) -> None:
    with pytest.raises(PermissionDenied):
        issue(competitor, batch)
    with pytest.raises(PermissionDenied):
        issue(carrier, batch)
    recall = issue(manufacturer, batch)
    assert recall.kind == Recall.Kind.VOLUNTARY
    assert [notice.organisation for notice in recall.notices.all()] == [manufacturer.organisation]


def test_a_wholesale_recall_stops_short_of_dispensers(
    batch: Batch, world: dict[str, Shipment], regulator: Persona
) -> None:
    scope = services.recall_preview(actor=regulator.user, items=[RecallItemSpec(batch)], depth=Recall.Depth.WHOLESALE)
    assert {holder.organisation.name: holder.notified for holder in scope.holders} == {
        "Manufacturer": True,
        "Carrier": True,
        "Pharmacy": False,
    }
    recall = issue(regulator, batch, depth=Recall.Depth.WHOLESALE)
    assert sorted(recall.notices.values_list("organisation__name", flat=True)) == ["Carrier", "Manufacturer"]


def test_a_serial_range_recalls_those_serials_dispensed_or_not_and_leaves_the_batch(
    manufacturer: Persona, regulator: Persona
) -> None:
    product = factories.ProductFactory(manufacturer=manufacturer.organisation)
    batch = factories.BatchFactory(product=product)
    for serial in ("08", "09", "10", "11", "12", "9", "100", "1A"):
        SerialNumber.objects.create(product=product, batch=batch, serial=serial)
    batch.serials.filter(serial="10").update(status=SerialNumber.Status.DISPENSED)  # a patient has it
    recall = issue(regulator, batch, items=[RecallItemSpec(batch, "09", "11")])
    recalled = set(batch.serials.filter(status=SerialNumber.Status.RECALLED).values_list("serial", flat=True))
    assert recalled == {"09", "10", "11"}  # the range's length only: neither "9", "100" nor "1A"
    batch.refresh_from_db()
    assert batch.status == Batch.Status.ACTIVE
    (entry,) = entries("recall.issued")
    (item,) = entry["data"]["items"]
    assert item["serial_count"] == 3
    assert item["serials_sha256"] == hashlib.sha256(b"09\n10\n11").hexdigest()
    assert set(item) == {"gtin", "lot", "serial_count", "serials_sha256"}  # the serials themselves stay private
    assert recall.items.get().serial_from == "09"
    assert sorted(["100", "9", "A2", "10", "A10"], key=serial_order) == ["9", "10", "A2", "100", "A10"]


@pytest.mark.parametrize(
    ("items", "field", "words"),
    [
        (lambda batch, other: [], "items", "at least one batch"),
        (lambda batch, other: [RecallItemSpec(batch), RecallItemSpec(batch)], "items", "named twice"),
        (lambda batch, other: [RecallItemSpec(batch), RecallItemSpec(other)], "items", "different manufacturers"),
        (lambda batch, other: [RecallItemSpec(batch, "5", "")], "items", "both its first and its last"),
        (lambda batch, other: [RecallItemSpec(batch, "Z9", "A1")], "items", "backwards"),
        (lambda batch, other: [RecallItemSpec(batch, "ZZZ1", "ZZZ2")], "items", "has no serial"),
        (lambda batch, other: [RecallItemSpec(batch, "9", "100")], "items", "the same length"),
    ],
)
def test_bad_items_are_refused_with_the_reason(
    batch: Batch, competitor: Persona, regulator: Persona, items: Any, field: str, words: str
) -> None:
    other = factories.BatchFactory(product__manufacturer=competitor.organisation)
    with pytest.raises(ValidationError) as raised:
        issue(regulator, batch, items=items(batch, other))
    assert words in " ".join(raised.value.message_dict[field])
    assert not Recall.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"classification": "IV"}, "classification"),
        ({"depth": "planet"}, "depth"),
        ({"reason": "  "}, "reason"),
        ({"instructions": ""}, "instructions"),
        ({"reason": "x" * 4001}, "reason"),
    ],
)
def test_bad_facts_are_refused_with_the_field(
    batch: Batch, regulator: Persona, changes: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        issue(regulator, batch, **changes)
    assert field in raised.value.message_dict


def test_a_batch_is_recalled_once(batch: Batch, regulator: Persona, manufacturer: Persona) -> None:
    issue(regulator, batch)
    with pytest.raises(ValidationError, match="recalled and cannot be recalled"):
        issue(manufacturer, batch)


def test_holders_acknowledge_once_and_the_regulator_closes(
    batch: Batch,
    world: dict[str, Shipment],
    regulator: Persona,
    manufacturer: Persona,
    pharmacy: Persona,
    carrier2: Persona,
) -> None:
    recall = issue(regulator, batch)
    with pytest.raises(PermissionDenied):
        services.recall_acknowledge(actor=carrier2.user, recall=recall, units_found=0)
    with pytest.raises(ValidationError) as raised:
        services.recall_acknowledge(actor=pharmacy.user, recall=recall, units_found=-1)
    assert "units_found" in raised.value.message_dict

    notice = services.recall_acknowledge(actor=pharmacy.user, recall=recall, units_found=98, note="2 dispensed.")
    assert (notice.units_found, notice.acknowledged_by) == (98, pharmacy.user)
    with pytest.raises(ValidationError, match="acknowledged this recall"):
        services.recall_acknowledge(actor=pharmacy.user, recall=recall, units_found=98)
    (entry,) = entries("recall.acknowledged")
    assert entry["public"]
    assert (entry["data"]["acknowledged"], entry["data"]["notices"]) == (1, 3)
    assert pharmacy.organisation.gln not in json.dumps(entry)  # who holds the batch is not public
    assert set(entry["data"]) == {"reference", "acknowledged_at", "acknowledged", "notices"}  # nor what it holds

    with pytest.raises(PermissionDenied):
        services.recall_close(actor=manufacturer.user, recall=recall, note="Done.")
    with pytest.raises(ValidationError) as raised:
        services.recall_close(actor=regulator.user, recall=recall, note="")
    assert "note" in raised.value.message_dict
    closed = services.recall_close(actor=regulator.user, recall=recall, note="All stock accounted for.")
    assert closed.status == Recall.Status.CLOSED
    (entry,) = entries("recall.closed")
    assert (entry["data"]["notices"], entry["data"]["acknowledged"]) == (3, 1)
    with pytest.raises(ValidationError, match="closed"):
        services.recall_acknowledge(actor=manufacturer.user, recall=recall, units_found=850)
    with pytest.raises(ValidationError, match="already closed"):
        services.recall_close(actor=regulator.user, recall=recall, note="Again.")
    assert RecallNotice.objects.filter(acknowledged_at__isnull=False).count() == 1


# The trace ---------------------------------------------------------------------------------


def test_a_batch_trace_tells_its_life_in_order(
    batch: Batch, world: dict[str, Shipment], regulator: Persona, manufacturer: Persona, pharmacy: Persona
) -> None:
    services.batch_quarantine(actor=manufacturer.user, batch=batch, reason="Excursion under review.")
    ledger.ledger_commit()
    recall = issue(regulator, batch)
    services.recall_acknowledge(actor=pharmacy.user, recall=recall, units_found=100)

    found = trace.batch_trace(batch)

    kinds = [step.kind for step in found.steps]
    assert kinds[0] == "batch.registered"
    assert kinds.count("shipment.created") == 3
    assert kinds.count("shipment.dispatched") == 2
    assert kinds.count("shipment.delivered") == 1
    assert kinds[-3:] == ["batch.quarantined", "recall.issued", "recall.acknowledged"]
    later = [step.time for step in found.steps[1:]]
    assert later == sorted(later)
    delivered = next(step for step in found.steps if step.kind == "shipment.delivered")
    assert (delivered.shipment, delivered.organisation) == (world["delivered"].reference, "Pharmacy")
    assert "Excursion under review." in next(step.text for step in found.steps if step.kind == "batch.quarantined")
    stock = {entry.organisation.name: entry.on_hand for entry in found.whereabouts.stock}
    assert stock == {"Manufacturer": 850, "Pharmacy": 100}
    assert [item.shipment for item in found.whereabouts.moving] == [world["in_transit"]]


def test_a_batch_trace_takes_the_same_queries_for_any_number_of_shipments(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona, django_assert_max_num_queries: Any
) -> None:
    for _ in range(6):
        ship(batch, manufacturer, carrier, pharmacy, quantity=5)
    with django_assert_max_num_queries(12):
        found = trace.batch_trace(batch)
    assert len([step for step in found.steps if step.kind == "shipment.delivered"]) == 6


def test_a_site_trace_lists_what_left_and_arrived(
    batch: Batch, world: dict[str, Shipment], manufacturer: Persona, pharmacy: Persona
) -> None:
    passages, more = trace.site_trace(pharmacy.site)
    assert not more
    assert [(passage.direction, passage.shipment) for passage in passages] == [("in", world["delivered"])]
    assert [(item.batch, item.quantity) for item in passages[0].items] == [(batch, 100)]
    out, _ = trace.site_trace(manufacturer.site)
    assert sorted(passage.shipment.pk for passage in out) == sorted([world["delivered"].pk, world["in_transit"].pk])
    assert {passage.direction for passage in out} == {"out"}


def test_the_scope_counts_each_unit_once_after_hand_overs_and_refusals(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona, regulator: Persona
) -> None:
    wholesaler = make_persona("wholesaler", Organisation.Kind.WHOLESALER)
    to_wholesaler = ship(batch, manufacturer, carrier, wholesaler, quantity=50, outcome="in_transit")
    # The consignee takes the goods over on the road: it holds them, and awaits nothing more.
    services.custody_transfer(actor=carrier.user, shipment=to_wholesaler, to_organisation=wholesaler.organisation)
    refused = ship(batch, manufacturer, carrier, pharmacy, quantity=30, outcome="rejected")

    scope = services.recall_preview(actor=regulator.user, items=[RecallItemSpec(batch)], depth=Recall.Depth.CONSUMER)

    units = {holder.organisation.name: (holder.on_hand, holder.in_care, holder.incoming) for holder in scope.holders}
    # 1,000 made; 50 with the wholesaler; 30 refused and on their way back to the manufacturer.
    assert units == {"Manufacturer": (920, 0, 30), "Wholesaler": (0, 50, 0)}
    assert scope.units == 1000
    assert [shipment for shipment, _ in scope.shipments] == [to_wholesaler]
    steps = trace.shipment_trace(refused)
    assert [step.kind for step in steps] == ["shipment.created", "shipment.dispatched", "shipment.rejected"]
    assert "Refused by Pharmacy: Too warm on arrival." in steps[-1].text


def test_a_shipment_trace_counts_every_batch_it_carries(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    other = register_batch(manufacturer, batch.product, lot="SECOND")
    shipment = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=30), services.ItemSpec(batch=other, quantity=20)],
    )
    (planned,) = trace.shipment_trace(shipment)
    assert "50 units" in planned.text


# Dispensing ----------------------------------------------------------------------------------


def test_a_pharmacy_dispenses_packs_it_holds_and_the_trace_and_stock_say_so(
    batch: Batch, world: dict[str, Shipment], pharmacy: Persona, manufacturer: Persona
) -> None:
    serials = list(batch.serials.order_by("serial").values_list("serial", flat=True)[:2])
    dispensed = services.units_dispense(actor=pharmacy.user, batch=batch, serials=serials, site=pharmacy.site)

    assert len(dispensed) == 2
    assert set(batch.serials.filter(serial__in=serials).values_list("status", flat=True)) == {"dispensed"}
    assert selectors.batch_available(organisation=pharmacy.organisation, batch=batch) == 98
    found = trace.batch_trace(batch)
    assert {entry.organisation.name: entry.on_hand for entry in found.whereabouts.stock}["Pharmacy"] == 98
    step = next(step for step in found.steps if step.kind == "unit.dispensed")
    assert (step.text, step.organisation, step.site) == ("2 units dispensed.", "Pharmacy", "Pharmacy site")
    (entry,) = entries("unit.dispensed")
    assert not entry["public"]
    assert entry["data"]["units"] == 2
    assert serials[0] not in json.dumps(entry["data"])
    readers = set(Entry.objects.get(type="unit.dispensed").readers.values_list("party", flat=True))
    assert readers == {
        selectors.ledger_party(pharmacy.organisation.pk),
        selectors.ledger_party(manufacturer.organisation.pk),
    }


@pytest.mark.parametrize(
    ("who", "serials", "field", "words"),
    [
        ("pharmacy", ["NOT-OURS"], "serials", "not serials of this batch: NOT-OURS"),
        ("pharmacy", [], "serials", "at least one"),
        ("pharmacy", ["{0}", "{0}"], "serials", "name each serial once"),
        ("pharmacy_elsewhere", ["{0}"], "site", "must be a site of your organisation"),
    ],
)
def test_dispensing_refuses_what_it_cannot_record(
    batch: Batch,
    world: dict[str, Shipment],
    pharmacy: Persona,
    manufacturer: Persona,
    who: str,
    serials: list[str],
    field: str,
    words: str,
) -> None:
    first = batch.serials.order_by("serial").values_list("serial", flat=True)[0]
    site = manufacturer.site if who == "pharmacy_elsewhere" else pharmacy.site
    with pytest.raises(ValidationError) as raised:
        services.units_dispense(actor=pharmacy.user, batch=batch, serials=[s.format(first) for s in serials], site=site)
    assert words in " ".join(raised.value.message_dict[field])
    assert not batch.serials.filter(status="dispensed").exists()


def test_dispensing_needs_a_dispenser_holding_the_units_of_an_active_batch(
    batch: Batch, world: dict[str, Shipment], pharmacy: Persona, manufacturer: Persona, regulator: Persona
) -> None:
    serials = list(batch.serials.values_list("serial", flat=True))
    with pytest.raises(PermissionDenied):
        services.units_dispense(actor=manufacturer.user, batch=batch, serials=serials[:1], site=manufacturer.site)
    services.units_dispense(actor=pharmacy.user, batch=batch, serials=serials[:1], site=pharmacy.site)
    with pytest.raises(ValidationError, match="no longer in circulation"):
        services.units_dispense(actor=pharmacy.user, batch=batch, serials=serials[:1], site=pharmacy.site)
    issue(regulator, batch)
    with pytest.raises(ValidationError, match="the batch is recalled: do not dispense it"):
        services.units_dispense(actor=pharmacy.user, batch=batch, serials=serials[1:2], site=pharmacy.site)


def test_a_pharmacy_dispenses_no_more_than_it_holds(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> None:
    product = factories.ProductFactory(manufacturer=manufacturer.organisation)
    batch = register_batch(manufacturer, product, serials=5)
    ship(batch, manufacturer, carrier, pharmacy, quantity=2)
    serials = list(batch.serials.values_list("serial", flat=True)[:3])
    with pytest.raises(ValidationError, match="holds 2 undispensed units of this batch, not 3"):
        services.units_dispense(actor=pharmacy.user, batch=batch, serials=serials, site=pharmacy.site)
