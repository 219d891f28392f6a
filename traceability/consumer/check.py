"""Whether a pack is what its code says, and whether it may be used: pure rules, no Django.

One judgement serves both readers of a code: the consumer page (genuine,
counterfeit, dispensed, recalled, expired, in words) and the DSCSA product
identifier verification answer (``lms``). They cannot disagree, because
both are read off the ``Check`` that ``judge`` returns.

The identifiers match when the serial was issued for the lot the code names
and the code's expiry, if it has one, is that batch's. A serial issued for
another lot of the same product does not match: it is the classic sign of a
copied code. Statuses are the model's values (``Batch.Status``,
``SerialNumber.Status``), spelt out here so that the rules need no database.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass


class BatchState(enum.StrEnum):
    ACTIVE = "active"
    QUARANTINED = "quarantined"
    RECALLED = "recalled"
    EXPIRED = "expired"
    DESTROYED = "destroyed"
    NOT_RELEASED = "not_released"  # any status these rules do not know: never treated as fit for use


class UnitState(enum.StrEnum):
    ACTIVE = "active"
    DISPENSED = "dispensed"
    RECALLED = "recalled"
    STOLEN = "stolen"
    DESTROYED = "destroyed"
    OUT_OF_CIRCULATION = "out_of_circulation"  # decommissioned, or any status these rules do not know


class Serial(enum.StrEnum):
    ISSUED = "issued"  # issued for the lot the code names
    OTHER_LOT = "other_lot"  # issued for another lot of this product
    NEVER_ISSUED = "never_issued"  # never issued for this product


class Mismatch(enum.StrEnum):
    """Which identifiers do not match the record of the unit; the names follow the DSCSA failure reasons."""

    SERIAL = "serial"  # no unit with this GTIN and serial
    SERIAL_LOT = "serial_lot"  # the unit is of another lot
    SERIAL_EXPIRY = "serial_expiry"  # the unit's batch expires on another date
    SERIAL_LOT_EXPIRY = "serial_lot_expiry"  # both
    EXPIRY = "expiry"  # a code without a serial: its expiry is not the batch's


@dataclass(frozen=True)
class BatchFacts:
    lot: str
    expires_on: datetime.date
    status: str


@dataclass(frozen=True)
class UnitFacts:
    """The unit a GTIN and serial name, wherever it was issued."""

    lot: str
    expires_on: datetime.date
    status: str


@dataclass(frozen=True)
class Check:
    serial: Serial | None  # None: the code names no serial
    mismatch: Mismatch | None  # None: the identifiers are genuine
    expiry_in_code_wrong: bool  # the code's expiry is not that of the batch its lot names
    batch: BatchState | None  # None: the lot names no batch (only a verification request can ask that)
    expired: bool  # the batch is past its expiry date, or was marked expired
    unit: UnitState | None  # the unit's state when it was issued for this batch; None otherwise

    @property
    def genuine(self) -> bool:
        return self.mismatch is None

    @property
    def recalled(self) -> bool:
        return self.batch is BatchState.RECALLED or self.unit is UnitState.RECALLED


def judge(
    *,
    batch: BatchFacts | None,
    unit: UnitFacts | None,
    serial_asked: bool,
    expiry: datetime.date | None,
    today: datetime.date,
) -> Check:
    """What the code on a pack (its lot, serial and expiry) says about it, from the batch its lot names and the
    unit its serial names (None: never registered)."""
    serial = None
    if serial_asked and unit is None:
        serial = Serial.NEVER_ISSUED
    elif serial_asked and unit is not None:
        serial = Serial.ISSUED if batch is not None and unit.lot == batch.lot else Serial.OTHER_LOT
    expiry_in_code_wrong = expiry is not None and batch is not None and expiry != batch.expires_on
    return Check(
        serial=serial,
        mismatch=_mismatch(batch, unit, serial_asked=serial_asked, expiry=expiry),
        expiry_in_code_wrong=expiry_in_code_wrong,
        batch=None if batch is None else _batch_state(batch.status),
        expired=batch is not None and (batch.status == BatchState.EXPIRED or batch.expires_on < today),
        unit=_unit_state(unit.status) if unit is not None and serial is Serial.ISSUED else None,
    )


def _mismatch(
    batch: BatchFacts | None, unit: UnitFacts | None, *, serial_asked: bool, expiry: datetime.date | None
) -> Mismatch | None:
    if not serial_asked:
        wrong_expiry = expiry is not None and batch is not None and expiry != batch.expires_on
        return Mismatch.EXPIRY if wrong_expiry else None
    if unit is None:
        return Mismatch.SERIAL  # and there is nothing more to compare
    other_lot = batch is None or unit.lot != batch.lot
    other_expiry = expiry is not None and expiry != unit.expires_on
    if other_lot and other_expiry:
        return Mismatch.SERIAL_LOT_EXPIRY
    if other_lot:
        return Mismatch.SERIAL_LOT
    if other_expiry:
        return Mismatch.SERIAL_EXPIRY
    return None


def _batch_state(status: str) -> BatchState:
    try:
        return BatchState(status)
    except ValueError:
        return BatchState.NOT_RELEASED


def _unit_state(status: str) -> UnitState:
    try:
        return UnitState(status)
    except ValueError:
        return UnitState.OUT_OF_CIRCULATION
