"""Every event type the ledger records, in one place (spec/ledger.md).

An appender passes one of these; anything else is refused before it reaches
the ledger, so a typo cannot become a permanent entry.
"""

from __future__ import annotations

EVENT_TYPES = frozenset(
    {
        # traceability
        "product.registered",
        "batch.registered",
        "batch.quarantined",
        "batch.released",
        "shipment.created",
        "shipment.dispatched",
        "custody.transferred",
        "shipment.delivered",
        "shipment.rejected",
        "unit.dispensed",
        # cold-chain monitoring
        "excursion.started",
        "excursion.ended",
        "contract.breached",
        "alert.acknowledged",
        "alert.resolved",
        "readings.committed",
        # recalls (public: see PUBLIC_PREFIXES)
        "recall.issued",
        "recall.acknowledged",
        "recall.closed",
        # the ledger itself
        "key.rotated",
    }
)

# Entries of these types are readable by anyone, signed in or not.
PUBLIC_TYPES = frozenset({"product.registered", "batch.registered", "key.rotated"})
PUBLIC_PREFIXES = ("recall.",)


def is_public(event_type: str) -> bool:
    return event_type in PUBLIC_TYPES or event_type.startswith(PUBLIC_PREFIXES)
