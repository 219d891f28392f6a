"""GS1 link types and the RFC 9264 linkset of a Digital Link, as GS1-Conformant resolvers write them.

The linkset is one context object: ``anchor`` (the Digital Link URI on
BASE_URL), ``itemDescription``, and one array of target objects per link
relation type, named by its GS1 Web Vocabulary URI
(``https://gs1.org/voc/pip``). ``defaultLink`` is the link a plain request
resolves to: here that is the consumer page itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VOC = "https://gs1.org/voc/"
MEDIA_TYPE = "application/linkset+json"
# GS1's published JSON-LD context, which turns the linkset JSON into JSON-LD.
JSONLD_CONTEXT = "https://ref.gs1.org/standards/resolver/linkset-context"
PAGE_LANGUAGES = ["en", "zh-Hans"]  # BCP 47 tags of the languages the page is written in

PAGE = frozenset({"pip", "defaultLink"})  # the page answers these itself
LINKSET = frozenset({"linkset", "all"})  # "all" is the GS1 Digital Link 1.1 name of the linkset
_PREFIXES = ("gs1:", VOC, "http://gs1.org/voc/", "https://ref.gs1.org/voc/")


def link_type(value: str | None) -> str | None:
    """The bare name of a ``linkType`` parameter: ``gs1:pip``, ``https://gs1.org/voc/pip`` and ``pip`` are ``pip``."""
    if value is None:
        return None
    for prefix in _PREFIXES:
        if value.startswith(prefix):
            return value.removeprefix(prefix)
    return value


@dataclass(frozen=True)
class Link:
    href: str
    title: str
    type: str
    hreflang: list[str] | None = None

    def target(self) -> dict[str, Any]:
        target: dict[str, Any] = {"href": self.href, "title": self.title, "type": self.type}
        if self.hreflang:
            target["hreflang"] = self.hreflang
        return target


def document(anchor: str, item_description: str, links: dict[str, list[Link]]) -> dict[str, Any]:
    """The RFC 9264 ``application/linkset+json`` document: one context object for the anchor."""
    context: dict[str, Any] = {"anchor": anchor, "itemDescription": item_description}
    for name, targets in links.items():
        context[VOC + name] = [target.target() for target in targets]
    return {"linkset": [context]}


def curie(name: str) -> str:
    """How people write a GS1 link type: ``gs1:pip``; the linkset itself is just ``linkset``."""
    return name if name in LINKSET else f"gs1:{name}"
