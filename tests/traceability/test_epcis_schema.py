"""Our copy of GS1's EPCIS 2.0 JSON Schema is GS1's, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

from traceability.epcis import schema

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "standards" / "epcis" / "EPCIS-JSON-Schema.json"
# The SHA-256 of GS1's file as published: the copy must keep it. Where GS1's original lies beside the
# checkout (the design documents' standards/), the pin is checked against that too.
GS1_SHA256 = "ed3228d7867198b4a5be9748fe77f473457c6ed98224fab28a950b4ce634a041"


def test_the_shipped_schema_is_gs1s_byte_for_byte() -> None:
    assert hashlib.sha256(schema.SCHEMA_PATH.read_bytes()).hexdigest() == GS1_SHA256
    if SHARED.exists():
        assert hashlib.sha256(SHARED.read_bytes()).hexdigest() == GS1_SHA256


def test_the_shipped_schema_is_gs1s_epcis_2_schema() -> None:
    validator = schema.validator()
    assert validator.schema["$id"] == "https://gs1.github.io/EPCIS/EPCIS-JSON-Schema.json"
    assert "epcisQueryDocument" in validator.schema["definitions"]
