"""DSCSA verification requests carrying a NUL (``%00``): a 400 in problem JSON, kept with the symbol for NUL.

PostgreSQL stores no NUL in text or JSONB; the request log keeps every request with a valid GTIN, so what
was asked is kept as ``audit.storable`` shows it (``␀``) rather than the request failing with a 500.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger import services as ledger
from tests.conftest import Persona
from tests.scenarios import register_batch
from tests.traceability.test_verification import ask, serials_of
from traceability.models import Batch, Product, VerificationRequest

NUL_SHOWN = "\N{SYMBOL FOR NULL}"


@pytest.fixture
def batch(manufacturer: Persona, product: Product) -> Batch:
    batch = register_batch(manufacturer, product, "MV2405", 3)
    ledger.ledger_commit()
    return batch


@pytest.mark.parametrize(
    ("where", "kept_as"),
    [
        pytest.param({"reqGLN": "%00"}, "requester", id="reqGLN"),
        pytest.param({"corrUUID": "%00"}, "request_id", id="corrUUID"),
        pytest.param({"exp": "%00"}, "expiry", id="exp"),
        pytest.param({"exp": None, "17": "%00"}, "expiry", id="AI 17"),
        pytest.param({"lot": "%00"}, "lot", id="lot in the path"),
        pytest.param({"serial": "%00"}, "serial", id="serial in the path"),
    ],
)
def test_a_nul_anywhere_in_a_verification_request_is_a_400_kept_with_the_symbol_for_nul(
    batch: Batch, pharmacy: Persona, where: dict[str, Any], kept_as: str
) -> None:
    parts: dict[str, Any] = {"lot": batch.lot, "serial": serials_of(batch)[0]}
    query: dict[str, Any] = {"exp": batch.expires_on, "requester": pharmacy}
    for name, value in where.items():
        (parts if name in parts else query)[name] = value

    response = ask(batch.product.gtin, parts["lot"], parts["serial"], **query)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Not a valid verification request"
    kept = VerificationRequest.objects.get()
    assert getattr(kept, kept_as) == NUL_SHOWN
    assert (kept.gtin, kept.verified, kept.response["status"]) == (batch.product.gtin, False, 400)
