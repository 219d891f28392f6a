"""The answer to a DSCSA product identifier verification request, in GS1 Lightweight Messaging JSON: pure, no Django.

Names and values follow the GS1 Lightweight Messaging Standard for
Verification of Product Identifiers (release 1.0.2, 2019) as the GS1 US
Implementation Guideline for DSCSA (release 1.3) applies it::

    {"verificationTimestamp": "2026-03-01T09:30:00.000Z",
     "responderGLN": "0950600000006",
     "data": {"verified": false, "verificationFailureReason": "No_match_GTIN_Serial_Lot"},
     "corrUUID": "5c2b..."}

``verified`` says whether the product identifier (GTIN, serial, lot and
expiry) matches what the manufacturer issued; when it does not,
``verificationFailureReason`` says which part fails. ``additionalInfo``
carries one fact about a genuine unit that the requester must act on. The
standard defines one value at a time; when several apply, the most serious is
sent: ``Illegitimate`` (a unit reported stolen: DSCSA counts stolen product as
illegitimate), then ``Recalled``, then ``Suspect`` (a unit already dispensed,
destroyed or decommissioned coming back, or a batch on hold or not released:
its integrity is in question), then ``Expired``.
"""

from __future__ import annotations

import datetime
from typing import Any

from traceability.consumer.check import BatchState, Check, Mismatch, UnitState

FAILURE_REASONS = {
    Mismatch.SERIAL: "No_match_GTIN_Serial",
    Mismatch.SERIAL_LOT: "No_match_GTIN_Serial_Lot",
    Mismatch.SERIAL_EXPIRY: "No_match_GTIN_Serial_Expiry",
    Mismatch.SERIAL_LOT_EXPIRY: "No_match_GTIN_Serial_Lot_Expiry",
}
NO_REASON = "No_reason_provided"  # the standard's answer when no code fits (a request without a serial never gets here)

ILLEGITIMATE, RECALLED, SUSPECT, EXPIRED = "Illegitimate", "Recalled", "Suspect", "Expired"
_SUSPECT_UNITS = frozenset({UnitState.DISPENSED, UnitState.DESTROYED, UnitState.OUT_OF_CIRCULATION})
_SUSPECT_BATCHES = frozenset({BatchState.QUARANTINED, BatchState.DESTROYED, BatchState.NOT_RELEASED})


def failure_reason(result: Check) -> str | None:
    if result.mismatch is None:
        return None
    return FAILURE_REASONS.get(result.mismatch, NO_REASON)


def additional_info(result: Check) -> str | None:
    """The one fact about a genuine unit the requester must act on, most serious first; None for a mismatch."""
    if not result.genuine:
        return None  # facts about another lot's unit are not the requester's to know
    if result.unit is UnitState.STOLEN:
        return ILLEGITIMATE
    if result.recalled:
        return RECALLED
    if result.unit in _SUSPECT_UNITS or result.batch in _SUSPECT_BATCHES:
        return SUSPECT
    if result.expired:
        return EXPIRED
    return None


def response(result: Check, *, responder_gln: str, corr_uuid: str, at: datetime.datetime) -> dict[str, Any]:
    """The response message: ``corrUUID`` echoed when the request gave one."""
    data: dict[str, Any] = {"verified": result.genuine}
    reason = failure_reason(result)
    if reason is not None:
        data["verificationFailureReason"] = reason
    info = additional_info(result)
    if info is not None:
        data["additionalInfo"] = info
    message: dict[str, Any] = {"verificationTimestamp": timestamp(at), "responderGLN": responder_gln, "data": data}
    if corr_uuid:
        message["corrUUID"] = corr_uuid
    return message


def timestamp(at: datetime.datetime) -> str:
    """ISO 8601 in UTC to the millisecond, as the standard's examples write it: 2026-03-01T09:30:00.000Z."""
    utc = at.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
