"""Every step of a shipment's life is a ledger entry that its parties, and only they, may read."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from ledger import services as ledger
from ledger.models import Entry, PendingEvent
from tests.conftest import Persona
from traceability import selectors, services
from traceability.models import Batch, SerialNumber, Shipment

pytestmark = pytest.mark.django_db


def facts() -> list[dict[str, Any]]:
    ledger.entries_sequence()
    return [json.loads(bytes(entry.leaf)) for entry in Entry.objects.order_by("seq")]


def readers(seq: int) -> set[str]:
    return set(Entry.objects.get(seq=seq).readers.values_list("party", flat=True))


def party(persona: Persona) -> str:
    return selectors.ledger_party(persona.organisation.pk)


def dispatched(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> tuple[Batch, Shipment]:
    """A registered product and batch (ten serials), and 40 units of it on the road to the pharmacy."""
    product = services.product_register(
        actor=manufacturer.user, gtin="09506000134352", name="Vax", dosage_form="injection", storage_profile="2-8C"
    )
    today = datetime.date.today()
    batch = services.batch_register(
        actor=manufacturer.user,
        product=product,
        lot="L1",
        manufactured_on=today,
        expires_on=today + datetime.timedelta(days=300),
        quantity=100,
        serial_count=10,
    )
    shipment = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=40)],
    )
    return batch, services.shipment_dispatch(actor=manufacturer.user, shipment=shipment)


def test_a_shipment_life_is_recorded_step_by_step(
    manufacturer: Persona, carrier: Persona, carrier2: Persona, pharmacy: Persona, competitor: Persona
) -> None:
    batch, shipment = dispatched(manufacturer, carrier, pharmacy)
    services.custody_transfer(actor=carrier.user, shipment=shipment, to_organisation=carrier2.organisation)
    services.shipment_receive(actor=pharmacy.user, shipment=shipment, accept=True)

    entries = facts()
    assert [entry["type"] for entry in entries] == [
        "product.registered",
        "batch.registered",
        "shipment.created",
        "shipment.dispatched",
        "custody.transferred",
        "shipment.delivered",
    ]
    registered = entries[1]
    assert registered["subject"] == "batch:09506000134352:L1"
    serials = sorted(SerialNumber.objects.filter(batch=batch).values_list("serial", flat=True))
    assert registered["data"]["serials_sha256"] == hashlib.sha256("\n".join(serials).encode()).hexdigest()
    assert not any(serial in json.dumps(registered) for serial in serials)  # public entry, serials stay secret
    assert Entry.objects.get(seq=1).public
    assert entries[4]["data"]["from"] == carrier.organisation.gln
    assert entries[4]["data"]["to"] == carrier2.organisation.gln
    assert {party(p) for p in (manufacturer, carrier, carrier2, pharmacy)} <= readers(5)
    assert party(competitor) not in set().union(*(readers(seq) for seq in range(6)))
    assert not Entry.objects.get(seq=5).public


def test_a_refused_step_leaves_no_event_behind(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> None:
    product = services.product_register(
        actor=manufacturer.user, gtin="09506000134352", name="Vax", dosage_form="injection", storage_profile="2-8C"
    )
    before = PendingEvent.objects.count()
    with pytest.raises(ValidationError, match="already registered"):
        services.product_register(
            actor=manufacturer.user, gtin=product.gtin, name="Again", dosage_form="x", storage_profile="2-8C"
        )
    assert PendingEvent.objects.count() == before


def test_a_carrier_that_takes_over_on_the_way_reads_the_shipment_whole_history(
    manufacturer: Persona, carrier: Persona, carrier2: Persona, pharmacy: Persona, competitor: Persona
) -> None:
    _, shipment = dispatched(manufacturer, carrier, pharmacy)
    ledger.entries_sequence()
    created = Entry.objects.get(type="shipment.created").seq
    assert carrier2.client().get(f"/api/v1/ledger/entries/{created}").status_code == 404
    services.custody_transfer(actor=carrier.user, shipment=shipment, to_organisation=carrier2.organisation)
    ledger.entries_sequence()
    assert carrier2.client().get(f"/api/v1/ledger/entries/{created}").status_code == 200
    assert competitor.client().get(f"/api/v1/ledger/entries/{created}").status_code == 404
    listed = carrier2.client().get("/api/v1/ledger/entries/", {"subject": f"shipment:{shipment.reference}"}).json()
    assert [entry["type"] for entry in listed["results"]] == [
        "shipment.created",
        "shipment.dispatched",
        "custody.transferred",
    ]
