"""The pharmacy's dispensing page: packs scanned at the counter are recorded as dispensed, all or none."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from tests import factories
from tests.conftest import Persona
from tests.scenarios import register_batch, ship
from traceability import gs1
from traceability.models import Batch, Dispensing, Membership, SerialNumber

pytestmark = pytest.mark.django_db
URL = reverse("logistics-dispense")


@pytest.fixture
def batch(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> Batch:
    """A batch of which the pharmacy holds 10 units."""
    product = factories.ProductFactory(manufacturer=manufacturer.organisation, name="Insulin pen")
    batch = register_batch(manufacturer, product, lot="INS-07", serials=6)
    ship(batch, manufacturer, carrier, pharmacy, quantity=10)
    return batch


def signed_in(persona: Persona) -> Client:
    client = Client()
    client.force_login(persona.user)
    return client


def codes(batch: Batch) -> list[str]:
    """The packs' QR codes as a scanner types them: the Digital Link, expiry included."""
    return [batch.digital_link(serial=serial) for serial in serials(batch)]


def serials(batch: Batch) -> list[str]:
    return list(batch.serials.order_by("serial").values_list("serial", flat=True))


def text_of(markup: bytes) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup.decode())).strip()


def test_a_pharmacist_records_the_packs_scanned_at_the_counter(batch: Batch, pharmacy: Persona) -> None:
    client = signed_in(pharmacy)
    form = client.get(URL)
    assert form.status_code == 200
    assert f'<option value="{pharmacy.site.pk}" selected>' in form.content.decode()  # its only site
    bare_path = "/" + codes(batch)[1].split("/", 3)[3]
    packs = f"{codes(batch)[0]}\n\n{bare_path}\n"

    response = client.post(URL, {"site": pharmacy.site.pk, "packs": packs}, follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert "2 packs recorded as dispensed." in text_of(response.content)
    dispensed = SerialNumber.objects.filter(batch=batch, status=SerialNumber.Status.DISPENSED)
    assert sorted(dispensed.values_list("serial", flat=True)) == serials(batch)[:2]
    assert Dispensing.objects.filter(site=pharmacy.site).count() == 2


def test_one_refused_pack_records_none_and_the_page_says_which_and_why(batch: Batch, pharmacy: Persona) -> None:
    client = signed_in(pharmacy)
    first, second, *_ = codes(batch)
    never_issued = gs1.build_digital_link(
        "https://id.example.com", gtin=batch.product.gtin, lot=batch.lot, serial="NOPE1"
    )
    cases = {
        f"{first}\nnot a code at all": "Line 2:",
        f"{first}\n/01/{batch.product.gtin}/10/{batch.lot}": "Line 2: the code names no lot and serial number",
        f"{first}\n{never_issued}": "Lot INS-07:",
        f"{first}\n{first}": "Lot INS-07:",
        "\n \n": "Scan at least one pack.",
    }
    for packs, reason in cases.items():
        response = client.post(URL, {"site": pharmacy.site.pk, "packs": packs})
        assert response.status_code == 400, packs
        assert reason in text_of(response.content), (packs, text_of(response.content))
    assert not Dispensing.objects.exists()
    assert not batch.serials.filter(status=SerialNumber.Status.DISPENSED).exists()

    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.RECALLED)
    refused = client.post(URL, {"site": pharmacy.site.pk, "packs": second})
    assert refused.status_code == 400
    assert "Lot INS-07: the batch is recalled: do not dispense it." in text_of(refused.content)


def test_a_lot_never_delivered_to_the_pharmacy_is_refused(
    batch: Batch, manufacturer: Persona, pharmacy: Persona
) -> None:
    elsewhere = register_batch(manufacturer, batch.product, lot="INS-08", serials=1)

    response = signed_in(pharmacy).post(URL, {"site": pharmacy.site.pk, "packs": codes(elsewhere)[0]})

    assert response.status_code == 400
    assert f"Lot INS-08 of GTIN {batch.product.gtin} was never delivered to you." in text_of(response.content)
    assert not Dispensing.objects.exists()


def test_only_a_pharmacy_has_the_page_and_only_its_writers_record(
    batch: Batch, pharmacy: Persona, carrier: Persona, manufacturer: Persona
) -> None:
    assert signed_in(carrier).get(URL).status_code == 404
    assert signed_in(manufacturer).get(URL).status_code == 404
    assert f'href="{URL}"' in signed_in(pharmacy).get(reverse("logistics-board")).content.decode()
    assert f'href="{URL}"' not in signed_in(carrier).get(reverse("logistics-board")).content.decode()
    trainee = factories.MembershipFactory(
        organisation=pharmacy.organisation, role=Membership.Role.VIEWER, user__username="trainee"
    ).user
    viewer = Client()
    viewer.force_login(trainee)

    refused = viewer.post(URL, {"site": pharmacy.site.pk, "packs": codes(batch)[0]})

    assert refused.status_code == 400
    assert "Your role may read but not record." in text_of(refused.content)
    assert not Dispensing.objects.exists()
