"""How ColdTrace speaks EPCIS 2.0: the JSON-LD context, identifiers, and the CBV terms of each fact.

No queries here: plain values in, EPCIS JSON out.

Identifiers (GS1 Digital Link, GS1 Web URI):

- products: class level ``{BASE_URL}/01/{gtin}/10/{lot}`` in ``quantityList``,
  instance level ``{BASE_URL}/01/{gtin}/21/{serial}`` in ``epcList``. Our own
  resolver domain, as on the packs' QR codes (EPCIS 2.0 allows any Digital
  Link domain; the event hash maps them to ``id.gs1.org``).
- places (readPoint, bizLocation, ``location`` sources and destinations):
  ``https://id.gs1.org/414/{site gln}``, parties (``owning_party``,
  ``possessing_party``): ``https://id.gs1.org/417/{organisation gln}``. GS1
  GenSpecs separate the physical-location GLN (AI 414) from the party GLN
  (AI 417), and the canonical Digital Link domain is ``id.gs1.org``: a GLN is
  not ours to resolve.
- shipments: ``urn:epcglobal:cbv:bt:{shipper gln}:{reference}`` of type
  ``desadv`` (despatch advice), the CBV 2.0 form of a business transaction ID.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings

from traceability import gs1

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# The standard context defines ``cbvmda`` too; declaring it here lets the reference hash tool expand the
# ``ilmd`` keys (it reads prefixes only from a document's own context), so partners get our eventIDs.
CONTEXT: list[Any] = [EPCIS_CONTEXT, {"cbvmda": "urn:epcglobal:cbv:mda:"}]
ID_GS1 = "https://id.gs1.org"
SCHEMA_VERSION = "2.0"


def when(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC to the millisecond, as EPCIS examples write it."""
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def product_class(gtin: str, lot: str) -> str:
    return gs1.DigitalLink(gtin=gtin, lot=lot).uri(settings.BASE_URL)


def product_instance(gtin: str, serial: str) -> str:
    return gs1.DigitalLink(gtin=gtin, serial=serial).uri(settings.BASE_URL)


def place(gln: str) -> str:
    return f"{ID_GS1}/414/{gln}"


def located(gln: str | None) -> dict[str, Any]:
    """An event's readPoint and bizLocation, both the site with that GLN (none without a site)."""
    if gln is None:
        return {}
    return {"readPoint": {"id": place(gln)}, "bizLocation": {"id": place(gln)}}


def party(gln: str) -> str:
    return f"{ID_GS1}/417/{gln}"


def shipment_transaction(shipper_gln: str, reference: str) -> dict[str, str]:
    return {"bizTransaction": f"urn:epcglobal:cbv:bt:{shipper_gln}:{reference}", "type": "desadv"}


def sources(*, owner: str, holder: str, site: str | None = None) -> list[dict[str, str]]:
    found = [{"source": party(owner), "type": "owning_party"}, {"source": party(holder), "type": "possessing_party"}]
    return found + ([{"source": place(site), "type": "location"}] if site else [])


def destinations(*, owner: str, holder: str, site: str | None = None) -> list[dict[str, str]]:
    found = [
        {"destination": party(owner), "type": "owning_party"},
        {"destination": party(holder), "type": "possessing_party"},
    ]
    return found + ([{"destination": place(site), "type": "location"}] if site else [])


def object_event(
    *, time: datetime.datetime, action: str, biz_step: str, disposition: str, **fields: Any
) -> dict[str, Any]:
    """An ObjectEvent with its fields in the standard's order; fields given as None are left out."""
    event: dict[str, Any] = {"type": "ObjectEvent", "eventTime": when(time), "eventTimeZoneOffset": "+00:00"}
    for name in ("epcList", "quantityList"):
        if fields.get(name):
            event[name] = fields.pop(name)
        else:
            fields.pop(name, None)
    event |= {"action": action, "bizStep": biz_step, "disposition": disposition}
    event |= {name: value for name, value in fields.items() if value}
    return event


def temperature_summary(
    *, start: datetime.datetime, end: datetime.datetime, low: float, high: float, mean: float
) -> dict[str, Any]:
    """A leg's readings in one sensorElement: lowest, highest and mean °C between dispatch and arrival."""
    return {
        "sensorMetadata": {"startTime": when(start), "endTime": when(end)},
        "sensorReport": [
            {
                "type": "Temperature",
                "minValue": _celsius(low),
                "maxValue": _celsius(high),
                "meanValue": _celsius(mean),
                "uom": "CEL",
            }
        ],
    }


def excursion_alarm(*, start: datetime.datetime, end: datetime.datetime, direction: str, peak: float) -> dict[str, Any]:
    """An excursion as a sensorElement: its span, and an ALARM_CONDITION report with its peak.

    EPCIS 2.0 (sensorReport ``exception``, SensorAlertType): ALARM_CONDITION says
    the sensor's alarm condition held; the peak is the highest (above the range)
    or lowest (below it) temperature of the excursion.
    """
    bound = "maxValue" if direction == "above" else "minValue"
    return {
        "sensorMetadata": {"startTime": when(start), "endTime": when(end)},
        "sensorReport": [{"type": "Temperature", "exception": "ALARM_CONDITION", bound: _celsius(peak), "uom": "CEL"}],
    }


def _celsius(value: float) -> float | int:
    rounded = round(float(value), 3)
    return int(rounded) if rounded.is_integer() else rounded
