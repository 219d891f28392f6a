"""Recalls and traces through the pages and the API: preview, issue, notices, acknowledgement, close."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from ledger import services as ledger
from ledger.models import Entry
from tests import factories
from tests.conftest import Persona
from tests.scenarios import register_batch, ship
from traceability.models import Batch, Recall, RecallNotice, Shipment

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"  # the factories' password


@pytest.fixture
def batch(manufacturer: Persona) -> Batch:
    product = factories.ProductFactory(manufacturer=manufacturer.organisation, name="Flu vaccine")
    return register_batch(manufacturer, product, lot="FLU24", serials=4)


@pytest.fixture
def shipments(batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> dict[str, Shipment]:
    return {
        outcome: ship(batch, manufacturer, carrier, pharmacy, quantity=quantity, outcome=outcome)
        for outcome, quantity in (("delivered", 100), ("in_transit", 50))
    }


def signed_in(persona: Persona) -> Client:
    client = Client()
    client.force_login(persona.user)
    return client


def text_of(markup: bytes) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup.decode())).strip()


def form(batch: Batch, **changes: str) -> dict[str, str]:
    return {
        "batches": f"{batch.product.gtin} {batch.lot}",
        "classification": "I",
        "depth": "consumer",
        "reason": "Particles seen in vials of this lot.",
        "instructions": "Stop using it; return every pack to the pharmacy.",
    } | changes


def previewed(client: Client, fields: dict[str, str]) -> dict[str, str]:
    """The fields with the token of their preview, which issuing requires."""
    page = client.post(reverse("recall-new"), fields | {"preview": "1"}).content.decode()
    [token] = re.findall(r'name="previewed" value="([^"]+)"', page)
    return fields | {"previewed": token}


def test_the_preview_page_shows_the_scope_and_issues_nothing(
    batch: Batch, shipments: dict[str, Shipment], regulator: Persona
) -> None:
    response = signed_in(regulator).post(reverse("recall-new"), form(batch) | {"preview": "1"})

    assert response.status_code == 200
    page = text_of(response.content)
    assert "1000 units; 3 organisations will be told; 1 shipments planned or on the move will be flagged." in page
    assert "Pharmacy Pharmacy site: 100 0 50 will be told" in page
    assert shipments["in_transit"].reference in page
    assert 'name="password"' in response.content.decode()
    assert not Recall.objects.exists()


def test_the_preview_of_a_serial_range_counts_the_serials_it_covers(
    batch: Batch, shipments: dict[str, Shipment], regulator: Persona, manufacturer: Persona
) -> None:
    first, _, last, _ = sorted(batch.serials.values_list("serial", flat=True))  # three of its four serials
    fields = form(batch, batches=f"{batch.product.gtin} {batch.lot} {first} {last}")

    page = text_of(signed_in(regulator).post(reverse("recall-new"), fields | {"preview": "1"}).content)
    api = manufacturer.client().post(
        reverse("api-recall-preview"),
        {"items": [{"batch": batch.pk, "serial_from": first, "serial_to": last}], "depth": "consumer"},
        format="json",
    )

    assert f"Serial ranges recalled Batch (lot) From To Serial numbers FLU24 {first} {last} 3" in page
    assert "1000 units; 3 organisations will be told" in page  # holders of the whole batch
    assert api.json()["ranges"] == [
        {"batch": batch.pk, "lot": "FLU24", "serial_from": first, "serial_to": last, "serials": 3}
    ]
    whole = manufacturer.client().post(
        reverse("api-recall-preview"), {"items": [{"batch": batch.pk}], "depth": "consumer"}, format="json"
    )
    assert whole.json()["ranges"] == []
    assert not Recall.objects.exists()


def test_issuing_from_the_page_needs_the_password(
    batch: Batch, shipments: dict[str, Shipment], regulator: Persona
) -> None:
    client = signed_in(regulator)
    fields = previewed(client, form(batch))
    refused = client.post(reverse("recall-new"), fields | {"issue": "1", "password": "wrong"})
    assert refused.status_code == 400
    assert "is not your password" in text_of(refused.content)
    assert not Recall.objects.exists()

    issued = client.post(reverse("recall-new"), fields | {"issue": "1", "password": PASSWORD})

    recall = Recall.objects.get()
    assert issued.status_code == 302
    assert issued["Location"] == reverse("recall-detail", args=[recall.pk])
    page = text_of(client.get(issued["Location"]).content)
    assert f"Recall {recall.reference} issued." in page
    assert "0 of 3 organisations have acknowledged." in page
    assert shipments["in_transit"].reference in page
    flagged = text_of(client.get(reverse("logistics-shipment", args=[shipments["in_transit"].pk])).content)
    assert f"This shipment carries goods of class I recall {recall.reference}: Particles seen" in flagged


def test_what_is_issued_is_what_was_previewed(batch: Batch, shipments: dict[str, Shipment], regulator: Persona) -> None:
    client = signed_in(regulator)
    fields = previewed(client, form(batch, depth="wholesale"))
    for changed in (fields | {"depth": "consumer"}, fields | {"previewed": "forged"}, form(batch)):
        response = client.post(reverse("recall-new"), changed | {"issue": "1", "password": PASSWORD})
        assert response.status_code == 400
        assert "The recall changed since its scope was shown" in text_of(response.content)
        assert 'name="previewed"' in response.content.decode()  # the new scope, to issue from
    assert not Recall.objects.exists()
    other = Client()
    other.force_login(factories.MembershipFactory(organisation=regulator.organisation).user)
    assert other.post(reverse("recall-new"), fields | {"issue": "1", "password": PASSWORD}).status_code == 400


@pytest.mark.parametrize(
    ("batches", "words"),
    [
        ("123", "Line 1: write a GTIN and a lot"),
        ("12345678901234 L1", "Line 1:"),  # a wrong check digit, in the GS1 module's words
        ("{gtin} NOPE", "Line 1: no batch with GTIN"),
        ("{gtin} FLU24 1 123456789012345678901", "Line 1: serial (AI 21) is 21 characters long"),
    ],
)
def test_bad_batch_lines_say_which_line(batch: Batch, regulator: Persona, batches: str, words: str) -> None:
    lines = batches.format(gtin=batch.product.gtin)
    response = signed_in(regulator).post(reverse("recall-new"), form(batch, batches=lines) | {"preview": "1"})
    assert response.status_code == 400
    assert words in text_of(response.content)


def test_a_holder_sees_its_notice_acknowledges_and_the_regulator_closes(
    batch: Batch, shipments: dict[str, Shipment], regulator: Persona, pharmacy: Persona, manufacturer: Persona
) -> None:
    client = signed_in(regulator)
    client.post(reverse("recall-new"), previewed(client, form(batch)) | {"issue": "1", "password": PASSWORD})
    recall = Recall.objects.get()
    pharmacist = signed_in(pharmacy)
    home = text_of(pharmacist.get(reverse("recalls")).content)
    assert "Recalls 1 to acknowledge" in home
    assert recall.reference in home
    detail = text_of(pharmacist.get(reverse("recall-detail", args=[recall.pk])).content)
    assert "Pharmacy 150 waiting" in detail
    assert "Manufacturer" not in detail.split("Notices and acknowledgements")[1]  # a holder sees its own notice

    refused = pharmacist.post(reverse("recall-acknowledge", args=[recall.pk]), {"units_found": "-3"})
    assert refused.status_code == 400
    done = pharmacist.post(reverse("recall-acknowledge", args=[recall.pk]), {"units_found": "148", "note": "2 sold"})
    assert done.status_code == 302
    notice = RecallNotice.objects.get(organisation=pharmacy.organisation)
    assert (notice.units_found, notice.note) == (148, "2 sold")
    assert "to acknowledge" not in text_of(pharmacist.get(reverse("recalls")).content)

    regulator_page = text_of(signed_in(regulator).get(reverse("recall-detail", args=[recall.pk])).content)
    assert "1 of 3 organisations have acknowledged." in regulator_page
    assert "Manufacturer 850 waiting" in regulator_page
    closed = signed_in(regulator).post(reverse("recall-close", args=[recall.pk]), {"note": "Stock accounted for."})
    assert closed.status_code == 302
    recall.refresh_from_db()
    assert recall.status == Recall.Status.CLOSED
    assert signed_in(manufacturer).post(reverse("recall-close", args=[recall.pk]), {"note": "x"}).status_code == 403


def test_the_batch_page_links_to_the_trace_and_a_prefilled_recall(batch: Batch, manufacturer: Persona) -> None:
    client = signed_in(manufacturer)
    page = client.get(reverse("manufacturer-batch", args=[batch.pk])).content.decode()
    assert reverse("batch-trace", args=[batch.pk]) in page
    assert f"{reverse('recall-new')}?batch={batch.pk}" in page
    prefilled = client.get(reverse("recall-new"), {"batch": batch.pk}).content.decode()
    assert f"{batch.product.gtin} {batch.lot}</textarea>" in prefilled


def test_the_trace_page_tells_the_batch_life(
    batch: Batch, shipments: dict[str, Shipment], manufacturer: Persona, competitor: Persona
) -> None:
    page = text_of(signed_in(manufacturer).get(reverse("batch-trace", args=[batch.pk])).content)
    assert "Batch registered: 1000 units" in page
    assert f"shipment.delivered {shipments['delivered'].reference} Received by Pharmacy." in page
    assert signed_in(competitor).get(reverse("batch-trace", args=[batch.pk])).status_code == 404


# The API -------------------------------------------------------------------------------------


def test_the_api_previews_issues_and_reports_progress(
    batch: Batch, shipments: dict[str, Shipment], manufacturer: Persona, pharmacy: Persona
) -> None:
    api = manufacturer.client()
    items = [{"batch": batch.pk, "serial_from": "", "serial_to": ""}]
    scope = api.post(reverse("api-recall-preview"), {"items": items, "depth": "wholesale"}, format="json").json()
    assert scope["units"] == 1000
    assert {h["organisation"]["name"]: h["notified"] for h in scope["holders"]} == {
        "Manufacturer": True,
        "Carrier": True,
        "Pharmacy": False,
    }
    body = {
        "items": items,
        "classification": "II",
        "depth": "retail",
        "reason": "Label misprint.",
        "instructions": "Return.",
        "password": PASSWORD,
    }
    created = api.post(reverse("api-recall-list"), body, format="json")
    assert created.status_code == 201, created.json()
    recall = created.json()
    assert recall["kind"] == "voluntary"
    assert len(recall["notices"]) == 3
    assert recall["flagged_shipments"] == [{"reference": shipments["in_transit"].reference, "units": 50}]

    acknowledged = pharmacy.client().post(
        reverse("api-recall-acknowledge", args=[recall["id"]]), {"units_found": 150}, format="json"
    )
    assert acknowledged.status_code == 200
    own = acknowledged.json()["notices"]
    assert [(n["organisation"]["name"], n["units_found"]) for n in own] == [("Pharmacy", 150)]
    assert acknowledged.json()["flagged_shipments"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"items": [{"batch": 999999}]}, "items"),
        ({"items": "all"}, "items"),
        ({"classification": "V"}, "classification"),
        ({"password": "nope"}, "password"),
        ({"reason": ""}, "reason"),
    ],
)
def test_bad_recalls_get_400_naming_the_field(
    batch: Batch, manufacturer: Persona, change: dict[str, Any], field: str
) -> None:
    body = {
        "items": [{"batch": batch.pk}],
        "classification": "II",
        "depth": "retail",
        "reason": "Label misprint.",
        "instructions": "Return.",
        "password": PASSWORD,
    } | change
    response = manufacturer.client().post(reverse("api-recall-list"), body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Recall.objects.exists()


def test_the_trace_api(batch: Batch, shipments: dict[str, Shipment], manufacturer: Persona, pharmacy: Persona) -> None:
    found = manufacturer.client().get(reverse("api-batch-trace", args=[batch.pk])).json()
    assert found["steps"][0]["kind"] == "batch.registered"
    assert {s["organisation"]["name"]: s["free"] for s in found["stock"]} == {"Manufacturer": 850, "Pharmacy": 100}
    assert [m["shipment"] for m in found["moving"]] == [shipments["in_transit"].reference]

    steps = pharmacy.client().get(reverse("api-shipment-trace", args=[shipments["delivered"].pk])).json()
    assert [step["kind"] for step in steps] == ["shipment.created", "shipment.dispatched", "shipment.delivered"]

    site = pharmacy.client().get(reverse("api-site-trace", args=[pharmacy.site.pk])).json()
    assert site["truncated"] is False
    assert [(p["direction"], p["shipment"]) for p in site["passages"]] == [("in", shipments["delivered"].reference)]
    assert site["passages"][0]["items"] == [{"gtin": batch.product.gtin, "lot": batch.lot, "units": 100}]
    bad = pharmacy.client().get(reverse("api-site-trace", args=[pharmacy.site.pk]), {"since": "yesterday"})
    assert bad.status_code == 400
    assert "since" in bad.json()


# End to end ----------------------------------------------------------------------------------


def test_a_recall_end_to_end_preview_issue_notices_consumer_verification_acknowledgements_close(
    batch: Batch,
    shipments: dict[str, Shipment],
    regulator: Persona,
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    django_capture_on_commit_callbacks: Any,
) -> None:
    for persona in (manufacturer, carrier, pharmacy):
        persona.user.email = f"{persona.name}@example.com"  # type: ignore[attr-defined]
        persona.user.save()
    serial = batch.serials.values_list("serial", flat=True)[0]
    pack = f"/01/{batch.product.gtin}/10/{batch.lot}/21/{serial}"
    before = Client().get(pack)
    assert "has been recalled" not in text_of(before.content)

    # The regulator previews, then issues with its password.
    client = signed_in(regulator)
    fields = previewed(client, form(batch))
    with django_capture_on_commit_callbacks(execute=True):
        issued = client.post(reverse("recall-new"), fields | {"issue": "1", "password": PASSWORD})
    assert issued.status_code == 302
    recall = Recall.objects.get()

    # Every holder is told, in the application and by mail.
    assert sorted(recall.notices.values_list("organisation__name", "units_expected")) == [
        ("Carrier", 50),
        ("Manufacturer", 850),
        ("Pharmacy", 150),
    ]
    assert sorted(message.to[0] for message in mail.outbox) == [
        "carrier@example.com",
        "manufacturer@example.com",
        "pharmacy@example.com",
    ]

    # The consumer page shows the banner at once, and a cache holding the old page is told it changed.
    after = Client().get(pack, HTTP_IF_NONE_MATCH=before["ETag"])
    assert after.status_code == 200
    page = text_of(after.content)
    assert "has been recalled" in page
    assert recall.instructions in page

    # The DSCSA verification answers "recalled".
    answer = (
        Client()
        .get(
            pack,
            {
                "linkType": "verificationService",
                "exp": batch.expires_on.strftime("%y%m%d"),
                "reqGLN": pharmacy.organisation.gln,
            },
        )
        .json()
    )
    assert answer["data"]["verified"] is True
    assert "Recalled" in answer["data"]["additionalInfo"]

    # Each holder acknowledges; the regulator closes.
    for persona, found in ((pharmacy, 148), (carrier, 50), (manufacturer, 850)):
        response = persona.client().post(
            reverse("api-recall-acknowledge", args=[recall.pk]), {"units_found": found}, format="json"
        )
        assert response.status_code == 200
    progress = text_of(signed_in(regulator).get(reverse("recall-detail", args=[recall.pk])).content)
    assert "3 of 3 organisations have acknowledged." in progress
    closed = regulator.client().post(
        reverse("api-recall-close", args=[recall.pk]), {"note": "All found."}, format="json"
    )
    assert closed.json()["status"] == "closed"

    # All of it in the ledger, public, and the ledger verifies.
    ledger.ledger_commit()
    kinds = list(
        Entry.objects.filter(subject=f"recall:{recall.reference}").order_by("seq").values_list("type", "public")
    )
    assert kinds == [("recall.issued", True)] + [("recall.acknowledged", True)] * 3 + [("recall.closed", True)]
    out = io.StringIO()
    call_command("ledger_verify", stdout=out)
    assert out.getvalue().startswith("OK")


def test_guessing_the_password_through_the_api_is_throttled_like_signing_in(
    batch: Batch, manufacturer: Persona, settings: Any
) -> None:
    body = {"items": [{"batch": batch.pk}], "classification": "II", "depth": "retail", "reason": "r"}
    body |= {"instructions": "i", "password": "guess"}
    rate = auth_rate(settings)
    api = manufacturer.client()
    answers = [api.post(reverse("api-recall-list"), body, format="json").status_code for _ in range(rate + 1)]
    assert answers == [400] * rate + [429]
    assert api.get(reverse("api-recall-list")).status_code == 200  # reading is not a guess


def auth_rate(settings: Any) -> int:
    return int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["password"].split("/")[0])


def test_guessing_the_password_on_the_page_is_throttled_like_the_api(
    batch: Batch, manufacturer: Persona, settings: Any
) -> None:
    client = signed_in(manufacturer)
    fields = previewed(client, form(batch))
    guesses = [
        client.post(reverse("recall-new"), fields | {"issue": "1", "password": f"guess-{n}"}).status_code
        for n in range(auth_rate(settings))
    ]
    assert guesses == [400] * auth_rate(settings)

    refused = client.post(reverse("recall-new"), fields | {"issue": "1", "password": PASSWORD})

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many attempts to confirm with your password." in text_of(refused.content)
    assert refused.context["form"]["reason"].value() == fields["reason"]  # what was typed is kept
    assert not Recall.objects.exists()
    assert client.post(reverse("recall-new"), form(batch) | {"preview": "1"}).status_code == 200  # not a guess


def test_password_guesses_on_the_page_and_through_the_api_share_one_allowance(
    batch: Batch, manufacturer: Persona, regulator: Persona, settings: Any
) -> None:
    client = signed_in(manufacturer)
    fields = previewed(client, form(batch))
    body = {"items": [{"batch": batch.pk}], "classification": "II", "depth": "retail", "reason": "r"}
    body |= {"instructions": "i", "password": "guess"}
    half = auth_rate(settings) // 2
    for _guess in range(half):
        assert client.post(reverse("recall-new"), fields | {"issue": "1", "password": "guess"}).status_code == 400
    api = manufacturer.client()
    for _guess in range(auth_rate(settings) - half):
        assert api.post(reverse("api-recall-list"), body, format="json").status_code == 400

    assert client.post(reverse("recall-new"), fields | {"issue": "1", "password": PASSWORD}).status_code == 429
    assert api.post(reverse("api-recall-list"), body | {"password": PASSWORD}, format="json").status_code == 429
    # Per user: another one is not held back.
    other = signed_in(regulator)
    other_fields = previewed(other, form(batch))
    assert other.post(reverse("recall-new"), other_fields | {"issue": "1", "password": PASSWORD}).status_code == 302


def test_revoking_tokens_spends_none_of_the_password_guesses(
    batch: Batch, manufacturer: Persona, settings: Any
) -> None:
    api = manufacturer.client()
    for _call in range(auth_rate(settings) + 1):  # the token endpoint's own limit, per user too
        assert api.delete(reverse("api-token")).status_code in (400, 429)  # signed in without a token: none to revoke
    client = signed_in(manufacturer)
    fields = previewed(client, form(batch))
    assert client.post(reverse("recall-new"), fields | {"issue": "1", "password": "guess"}).status_code == 400


def test_the_dispense_api(batch: Batch, shipments: dict[str, Shipment], pharmacy: Persona) -> None:
    serials = list(batch.serials.values_list("serial", flat=True)[:2])
    url = reverse("api-batch-dispense", args=[batch.pk])
    api = pharmacy.client()
    done = api.post(url, {"serials": serials, "site": pharmacy.site.gln}, format="json")
    assert (done.status_code, done.json()) == (201, {"dispensed": 2})
    for body, field in (
        ({"serials": serials, "site": pharmacy.site.gln}, "serials"),  # already dispensed
        ({"serials": ["X" * 21], "site": pharmacy.site.gln}, "serials"),
        ({"serials": serials[:1], "site": "0000000000000"}, "site"),
        ({"serials": "all", "site": pharmacy.site.gln}, "serials"),
    ):
        refused = api.post(url, body, format="json")
        assert refused.status_code == 400
        assert field in refused.json()
    page = Client().get(f"/01/{batch.product.gtin}/10/{batch.lot}/21/{serials[0]}")
    assert "already dispensed" in text_of(page.content)
