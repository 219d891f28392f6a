"""Our copy of GS1's EPCIS 2.0 JSON Schema is GS1's, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from traceability.epcis import schema

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "standards" / "epcis" / "EPCIS-JSON-Schema.json"


@pytest.mark.skipif(not SHARED.exists(), reason="GS1's original is not beside this clone (CI clones the repo alone)")
def test_the_shipped_schema_is_gs1s_byte_for_byte() -> None:
    assert schema.SCHEMA_PATH.read_bytes() == SHARED.read_bytes()


def test_the_shipped_schema_is_gs1s_epcis_2_schema() -> None:
    validator = schema.validator()
    assert validator.schema["$id"] == "https://gs1.github.io/EPCIS/EPCIS-JSON-Schema.json"
    assert "epcisQueryDocument" in validator.schema["definitions"]
