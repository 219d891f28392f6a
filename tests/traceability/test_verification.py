"""DSCSA product identifier verification at the Digital Link, as a trading partner's system asks it.

``manufacturer`` (Manufacturer) makes the Morbivax vaccine; ``pharmacy``
(Pharmacy) verifies a returned pack before it goes back into stock, naming
itself by its GLN (``reqGLN``) as the GS1 Lightweight Messaging Standard has
it. The answer must agree with what the consumer page says of the same code.
"""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from ledger import services as ledger
from tests.conftest import Persona
from tests.scenarios import register_batch
from traceability import gs1, services
from traceability.models import Batch, Product, Recall, RecallItem, SerialNumber, VerificationRequest

CORRELATION = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
BAD_GLN = "400999800001" + str((int(gs1.check_digit("400999800001")) + 1) % 10)  # the check digit is off by one
BATCH_QUANTITY = 4321


@pytest.fixture
def batch(manufacturer: Persona, product: Product) -> Batch:
    batch = register_batch(manufacturer, product, "MV2405", 3, quantity=BATCH_QUANTITY)
    ledger.ledger_commit()
    return batch


def serials_of(batch: Batch) -> list[str]:
    return sorted(batch.serials.values_list("serial", flat=True), key=lambda serial: (len(serial), serial))


def ask(
    gtin: str,
    lot: str | None,
    serial: str | None,
    *,
    exp: datetime.date | str | None = None,
    requester: Persona | None = None,
    client: APIClient | None = None,
    **query: str,
) -> Any:
    """A verification request as the standard writes it; ``exp`` and ``reqGLN`` unless left out."""
    path = f"/01/{gtin}" + (f"/10/{lot}" if lot else "") + (f"/21/{serial}" if serial else "")
    parameters = {"linkType": "verificationService", "context": "dscsaSaleableReturn", "corrUUID": CORRELATION}
    if exp is not None:
        parameters["exp"] = exp if isinstance(exp, str) else gs1.format_expiry(exp)
    if requester is not None:
        parameters["reqGLN"] = requester.organisation.gln
    parameters |= query
    url = path + "?" + "&".join(f"{key}={value}" for key, value in parameters.items() if value is not None)
    return (client or APIClient()).get(url)


def ask_for(batch: Batch, serial: str, requester: Persona, **changes: Any) -> Any:
    arguments: dict[str, Any] = {"exp": batch.expires_on, "requester": requester} | changes
    return ask(batch.product.gtin, batch.lot, serial, **arguments)


def page_of(batch: Batch, serial: str) -> str:
    return APIClient().get(f"/01/{batch.product.gtin}/10/{batch.lot}/21/{serial}").content.decode()


def recall(batch: Batch, persona: Persona, *, serials: tuple[str, str] | None = None) -> None:
    """A recall as ``recall_issue`` records it: the rows, then the statuses it sets (the ORM, as tests may)."""
    issued = Recall.objects.create(
        reference="RC-TEST-1",
        kind=Recall.Kind.VOLUNTARY,
        classification=Recall.Class.II,
        depth=Recall.Depth.CONSUMER,
        reason="Particles seen in a retained sample.",
        instructions="Return the packs to your pharmacy.",
        manufacturer=persona.organisation,
        initiated_by=persona.organisation,
        issued_by=persona.user,
    )
    low, high = serials or ("", "")
    RecallItem.objects.create(recall=issued, batch=batch, serial_from=low, serial_to=high)
    if serials is None:
        Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.RECALLED)
        batch.serials.filter(status=SerialNumber.Status.ACTIVE).update(status=SerialNumber.Status.RECALLED)
    else:
        batch.serials.filter(serial__in=serials).update(status=SerialNumber.Status.RECALLED)


# A genuine pack ---------------------------------------------------------------------------------------


def test_a_genuine_pack_is_verified_in_the_standards_words(
    batch: Batch, manufacturer: Persona, pharmacy: Persona
) -> None:
    serial = serials_of(batch)[0]

    response = ask_for(batch, serial, pharmacy)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    answer = response.json()
    assert set(answer) == {"verificationTimestamp", "responderGLN", "data", "corrUUID"}
    assert answer["data"] == {"verified": True}
    assert answer["responderGLN"] == manufacturer.organisation.gln
    assert answer["corrUUID"] == CORRELATION
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", answer["verificationTimestamp"])


def test_behind_the_proxy_a_request_is_kept_with_the_client_s_address(
    batch: Batch, pharmacy: Persona, settings: Any
) -> None:
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"NUM_PROXIES": 1}
    client = APIClient(HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR="10.0.0.2")  # the proxy's own address
    ask(batch.product.gtin, batch.lot, serials_of(batch)[0], exp=batch.expires_on, requester=pharmacy, client=client)
    assert VerificationRequest.objects.get().remote_addr == "203.0.113.9"


def test_every_request_is_kept_with_who_asked_and_the_answer_given(batch: Batch, pharmacy: Persona) -> None:
    serial = serials_of(batch)[0]

    answer = ask_for(batch, serial, pharmacy).json()

    (kept,) = VerificationRequest.objects.all()
    assert (kept.gtin, kept.lot, kept.serial, kept.expiry) == (
        batch.product.gtin,
        batch.lot,
        serial,
        gs1.format_expiry(batch.expires_on),
    )
    assert kept.requester == pharmacy.organisation.gln
    assert kept.request_id == CORRELATION
    assert kept.remote_addr == "127.0.0.1"
    assert kept.user is None  # nobody signed in: the GLN is what the requester says
    assert kept.verified is True
    assert kept.failure_reason == ""
    assert kept.response == answer


def test_a_signed_in_requester_is_recorded_beside_its_gln(batch: Batch, pharmacy: Persona) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {services.api_token_issue(user=pharmacy.user).key}")

    assert ask_for(batch, serials_of(batch)[0], pharmacy, client=client).status_code == 200

    assert VerificationRequest.objects.get().user == pharmacy.user


def test_a_token_that_is_not_valid_is_refused_not_taken_as_anonymous(batch: Batch, pharmacy: Persona) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")

    response = ask_for(batch, serials_of(batch)[0], pharmacy, client=client)

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    kept = VerificationRequest.objects.get()
    assert (kept.verified, kept.user, kept.response["status"]) == (False, None, 401)


def test_the_expiry_may_be_given_as_the_digital_links_ai_17(batch: Batch, pharmacy: Persona) -> None:
    response = ask(
        batch.product.gtin,
        batch.lot,
        serials_of(batch)[0],
        requester=pharmacy,
        **{"17": gs1.format_expiry(batch.expires_on)},
    )

    assert response.status_code == 200
    assert response.json()["data"] == {"verified": True}


def test_a_request_without_a_correlation_id_gets_an_answer_without_one(batch: Batch, pharmacy: Persona) -> None:
    answer = ask_for(batch, serials_of(batch)[0], pharmacy, corrUUID=None).json()

    assert "corrUUID" not in answer
    assert answer["data"]["verified"] is True


# Codes that do not match ---------------------------------------------------------------------------


def test_a_serial_never_issued_does_not_match(batch: Batch, pharmacy: Persona) -> None:
    answer = ask_for(batch, "NEVERISSUED1", pharmacy).json()

    assert answer["data"] == {"verified": False, "verificationFailureReason": "No_match_GTIN_Serial"}


def test_a_wrong_expiry_does_not_match(batch: Batch, pharmacy: Persona) -> None:
    wrong = batch.expires_on + datetime.timedelta(days=31)

    answer = ask_for(batch, serials_of(batch)[0], pharmacy, exp=gs1.format_expiry(wrong)).json()

    assert answer["data"] == {"verified": False, "verificationFailureReason": "No_match_GTIN_Serial_Expiry"}


@pytest.mark.parametrize(
    ("days_off", "reason"), [(0, "No_match_GTIN_Serial_Lot"), (31, "No_match_GTIN_Serial_Lot_Expiry")]
)
def test_a_serial_of_another_lot_does_not_match(
    batch: Batch, manufacturer: Persona, product: Product, pharmacy: Persona, days_off: int, reason: str
) -> None:
    other = register_batch(manufacturer, product, "MV2406", 2)  # expires the same day as ``batch``
    expiry = batch.expires_on + datetime.timedelta(days=days_off)

    answer = ask_for(batch, serials_of(other)[0], pharmacy, exp=gs1.format_expiry(expiry)).json()

    assert answer["data"] == {"verified": False, "verificationFailureReason": reason}
    assert "MV2406" not in str(answer)


def test_a_lot_never_registered_does_not_match_rather_than_404(batch: Batch, pharmacy: Persona) -> None:
    response = ask(batch.product.gtin, "MV9999", serials_of(batch)[0], exp=batch.expires_on, requester=pharmacy)

    assert response.status_code == 200
    assert response.json()["data"] == {"verified": False, "verificationFailureReason": "No_match_GTIN_Serial_Lot"}


# What has become of a genuine pack ------------------------------------------------------------------


def test_a_recalled_batch_is_verified_and_said_to_be_recalled(
    batch: Batch, manufacturer: Persona, pharmacy: Persona
) -> None:
    recall(batch, manufacturer)

    answer = ask_for(batch, serials_of(batch)[0], pharmacy).json()

    assert answer["data"] == {"verified": True, "additionalInfo": "Recalled"}


def test_a_recalled_serial_range_is_said_recalled_for_its_units_only(
    batch: Batch, manufacturer: Persona, pharmacy: Persona
) -> None:
    first, second, third = serials_of(batch)
    recall(batch, manufacturer, serials=(first, second))

    assert ask_for(batch, second, pharmacy).json()["data"] == {"verified": True, "additionalInfo": "Recalled"}
    assert ask_for(batch, third, pharmacy).json()["data"] == {"verified": True}


def test_an_expired_pack_is_verified_and_said_to_be_expired(batch: Batch, pharmacy: Persona) -> None:
    serial = serials_of(batch)[0]
    with time_machine.travel(batch.expires_on + datetime.timedelta(days=2)):
        answer = ask_for(batch, serial, pharmacy).json()

    assert answer["data"] == {"verified": True, "additionalInfo": "Expired"}


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (SerialNumber.Status.STOLEN, "Illegitimate"),
        (SerialNumber.Status.DISPENSED, "Suspect"),
        (SerialNumber.Status.DESTROYED, "Suspect"),
        (SerialNumber.Status.DECOMMISSIONED, "Suspect"),
    ],
)
def test_a_unit_out_of_the_supply_chain_is_verified_with_what_became_of_it(
    batch: Batch, pharmacy: Persona, status: str, said: str
) -> None:
    serial = serials_of(batch)[0]
    SerialNumber.objects.filter(batch=batch, serial=serial).update(status=status)

    assert ask_for(batch, serial, pharmacy).json()["data"] == {"verified": True, "additionalInfo": said}


def test_a_quarantined_batch_is_suspect(batch: Batch, pharmacy: Persona) -> None:
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.QUARANTINED)

    assert ask_for(batch, serials_of(batch)[0], pharmacy).json()["data"] == {
        "verified": True,
        "additionalInfo": "Suspect",
    }


def test_the_answer_and_the_consumer_page_judge_a_code_alike(
    batch: Batch, manufacturer: Persona, product: Product, pharmacy: Persona
) -> None:
    other = register_batch(manufacturer, product, "MV2406", 1)
    first, second, _ = serials_of(batch)
    recall(batch, manufacturer, serials=(second, second))
    cases = {"genuine": first, "recalled": second, "never issued": "NEVERISSUED1", "other lot": serials_of(other)[0]}

    for case, serial in cases.items():
        data = ask_for(batch, serial, pharmacy).json()["data"]
        page = page_of(batch, serial)
        assert data["verified"] is ("Possible counterfeit" not in page), case
        assert (data.get("additionalInfo") == "Recalled") is ("This pack has been recalled" in page), case


# Requests that cannot be answered --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"exp": None}, "The expiry date is missing: send exp=YYMMDD."),
        ({"exp": "271399"}, "exp is not a valid expiry date"),
        ({"requester": None}, "reqGLN is missing"),
        ({"reqGLN": BAD_GLN}, "reqGLN is not a valid GLN: GLN check digit"),
        ({"corrUUID": "not-a-uuid"}, "corrUUID is not a UUID"),
        ({"context": "saleable return"}, "context is not a context name"),
        ({"17": "271231"}, "exp and AI 17 give different expiry dates"),
    ],
)
def test_a_malformed_request_gets_a_400_saying_what_is_wrong_and_is_kept(
    batch: Batch, pharmacy: Persona, changes: dict[str, Any], said: str
) -> None:
    arguments: dict[str, Any] = {"exp": batch.expires_on, "requester": pharmacy} | changes

    response = ask(batch.product.gtin, batch.lot, serials_of(batch)[0], **arguments)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response["Cache-Control"] == "no-store"
    assert said in response.json()["detail"]
    kept = VerificationRequest.objects.get()
    assert (kept.gtin, kept.verified, kept.failure_reason) == (batch.product.gtin, False, "")
    assert kept.response == response.json()


def test_a_request_without_lot_or_serial_is_a_400_naming_both(batch: Batch, pharmacy: Persona) -> None:
    response = ask(batch.product.gtin, None, None, exp=batch.expires_on, requester=pharmacy)

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "The lot (AI 10) is missing" in detail
    assert "The serial number (AI 21) is missing" in detail


def test_a_malformed_link_is_a_400_and_is_kept_when_it_names_a_gtin(batch: Batch, pharmacy: Persona) -> None:
    response = ask(batch.product.gtin, "L%C3%A91", "S1", exp=batch.expires_on, requester=pharmacy)

    assert response.status_code == 400
    assert "lot (AI 10) has 'é'" in response.json()["detail"]
    kept = VerificationRequest.objects.get()
    assert (kept.gtin, kept.lot, kept.serial, kept.requester) == (
        batch.product.gtin,
        "Lé1",
        "S1",
        pharmacy.organisation.gln,
    )


def test_a_link_with_no_valid_gtin_is_a_400_and_names_nothing_to_keep(db: None, pharmacy: Persona) -> None:
    response = ask("09506000134353", "L1", "S1", exp="271231", requester=pharmacy)

    assert response.status_code == 400
    assert "GTIN check digit is 3, expected 2" in response.json()["detail"]
    assert not VerificationRequest.objects.exists()


def test_a_gtin_not_held_here_is_a_404_and_is_kept(db: None, pharmacy: Persona) -> None:
    unknown = "0400999999999" + gs1.check_digit("0400999999999")

    response = ask(unknown, "L1", "S1", exp="271231", requester=pharmacy)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert VerificationRequest.objects.get().gtin == unknown


# Privacy -----------------------------------------------------------------------------------------------


def test_the_answer_reveals_nothing_private(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    shipment = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=37)],
    )
    services.shipment_dispatch(actor=manufacturer.user, shipment=shipment, occurred_at=timezone.now())

    for serial in (*serials_of(batch), "NEVERISSUED1"):
        content = ask_for(batch, serial, pharmacy).content.decode()
        assert shipment.reference not in content
        for private in ("Pharmacy", "Carrier", pharmacy.site.gln, manufacturer.site.gln):
            assert private not in content, private
        assert not re.search(rf"\b{BATCH_QUANTITY}\b", content)
    assert uuid.UUID(CORRELATION)  # the only identifier echoed is the requester's own
