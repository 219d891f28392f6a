"""The consumer page at the GS1 Digital Link path itself: no login, no JavaScript, nothing private.

``/01/{gtin}[/10/{lot}[/21/{serial}]][?17=YYMMDD]`` answers, in the reader's
language (Accept-Language):

- 200, the page: product, manufacturer, batch, expiry, status, whether the
  serial was issued, the cold chain leg by leg, and the batch's ledger entry.
  A serial never issued for the batch is a counterfeit warning on that page,
  not an error: the batch is real, the pack may not be.
- 200, the RFC 9264 linkset, for ``Accept: application/linkset+json`` or
  ``?linkType=linkset`` (``all``, the GS1 Digital Link 1.1 name, too).
- 301 from a GTIN-8, -12 or -13 to the 14-digit form, path and query kept.
- 307 to the target of another link type the linkset offers
  (``gs1:certificationInfo``, ``gs1:recallStatus``).
- 400 for a malformed link, saying what is wrong (GS1-Conformant resolvers
  report syntax errors with 400).
- 429 with ``Retry-After`` for a client that looked up too many codes, or
  too many that are not genuine (``throttle``: serial harvesting).
- 404 for a product, variant or lot never registered, and for a link type
  this item does not offer. A GS1 resolver may instead fall back to the
  default link; we answer 404 because a client that asks for a particular
  service must never mistake the page for that service's answer. The 404
  lists the link types that are available.

``?linkType=verificationService`` is a DSCSA product identifier verification
request: ``verification`` answers it in GS1 Lightweight Messaging JSON, from
the same judgement of the code (``check``) as the page.

Errors are an HTML page, or RFC 9457 problem JSON when the client prefers
JSON. What depends on the database is sent ``Cache-Control: public,
no-cache`` with an ETag: any cache may keep it but must ask again before each
use, and gets a bodiless 304 when nothing changed. So a recall, quarantine or
excursion shows on the next scan, not after a cache's minute; a scan storm
still costs little, since each process keeps rendered pages keyed by what
they show (``cache``). A malformed link and the redirect of a short GTIN
depend on the link alone and may be kept for a day.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.template.loader import render_to_string
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers, set_response_etag
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe

from traceability import gs1
from traceability.consumer import cache, check, linkset, reads, throttle, verdict, verification, words

LINK_SECONDS = 86_400  # how long an answer that depends on the link alone may be kept
LEGS_SHOWN = 10
JSON_TYPES = (linkset.MEDIA_TYPE, "application/json")
JSONLD_CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"


@require_safe
def digital_link(request: HttpRequest, **route: str) -> HttpResponse:
    """Every Digital Link path: the route only gets the request here; the link is parsed as it was sent."""
    wants_json = request.get_preferred_type(["text/html", *JSON_TYPES]) in JSON_TYPES
    try:
        parsed = gs1.parse_digital_link(_as_sent(request), today=timezone.localdate())
    except gs1.GS1Error as error:
        if linkset.link_type(request.GET.get("linkType")) == verification.LINK_TYPE:
            if (wait := throttle.admit(request)) is not None:  # kept, as refused: it counts as a miss
                return verification.throttled(wait)
            return verification.malformed(request, _as_sent(request), str(error))
        response = _error(
            400,
            _("This is not a valid GS1 Digital Link"),
            _(
                "The address does not follow the GS1 Digital Link rules, so it is not a code a manufacturer "
                "printed. If you typed it, check it for typing errors. If you scanned it from a pack, show "
                "the pack to your pharmacist."
            ),
            reason=str(error),
            wants_json=wants_json,
        )
        return _public(response, max_age=LINK_SECONDS)
    link = parsed.link
    if parsed.gtin_as_given != link.gtin:
        return _public(_canonical(request, link), max_age=LINK_SECONDS)
    requested = linkset.link_type(parsed.extra_query.get("linkType"))
    if (wait := throttle.admit(request)) is not None:
        if requested == verification.LINK_TYPE:
            return verification.throttled(wait)
        return _too_many(wait, wants_json=wants_json or requested in linkset.LINKSET)
    try:
        return _looked_up(request, parsed, requested, wants_json=wants_json)
    except Exception:
        throttle.found(request)  # a failure (the database down) says nothing of the code: no miss
        raise


def _looked_up(
    request: HttpRequest, parsed: gs1.ParsedDigitalLink, requested: str | None, *, wants_json: bool
) -> HttpResponse:
    """The answer of an admitted look-up: a verification, or the page, the linkset or another link."""
    link = parsed.link
    if requested == verification.LINK_TYPE:
        return verification.answer(request, parsed)
    # To the minute, as a leg in transit shows how long it has lasted: a page stays the same for a minute.
    now = timezone.now().replace(second=0, microsecond=0)
    try:
        pack = reads.pack_read(link, now=now)
        if link.lot is not None and pack.batch is None:
            raise reads.UnknownError("batch", product=pack.product)
    except reads.UnknownError as unknown:
        return _unknown(link, unknown, wants_json=wants_json or requested in linkset.LINKSET)  # a miss
    result = pack.judged(today=timezone.localdate())
    if result.genuine:
        throttle.found(request)
    if (requested is None and not wants_json) or requested in linkset.PAGE:
        return _fresh(request, _page(pack, result))
    links = _links(pack, result)
    if requested in linkset.LINKSET or requested is None:
        return _fresh(request, _linkset(pack, links))
    if requested in links:
        return _fresh(request, HttpResponse(status=307, headers={"Location": links[requested][0].href}))
    return _link_type_missing(requested, links, wants_json=wants_json)


# The request --------------------------------------------------------------------------


def _as_sent(request: HttpRequest) -> str:
    """The request target still percent-encoded, so that an encoded '/' in a lot stays in the lot.

    WSGI servers decode PATH_INFO; gunicorn keeps the target as sent in
    RAW_URI, uWSGI and others in REQUEST_URI. Without either (runserver, the
    test client) Django's re-encoded path is the best there is. GS1 resolvers
    tolerate one trailing slash, so it is dropped.
    """
    sent = request.META.get("RAW_URI") or request.META.get("REQUEST_URI") or request.get_full_path()
    path, separator, query = sent.partition("?")
    if path.endswith("/") and not path.endswith("//") and path.count("/") > 3:
        path = path[:-1]
    return path + separator + query


def _canonical(request: HttpRequest, link: gs1.DigitalLink) -> HttpResponse:
    """A GTIN-8/12/13 link, permanently redirected to its GTIN-14 form with the rest of the path and the query."""
    query = request.META.get("QUERY_STRING", "")
    location = get_script_prefix().rstrip("/") + link.path() + (f"?{query}" if query else "")
    return HttpResponsePermanentRedirect(location)


def _html_lang(code: str) -> str:
    """Django's language code as a BCP 47 tag: zh-hans is zh-Hans, en-gb is en-GB."""
    first, *rest = code.split("-")
    return "-".join([first, *(part.title() if len(part) == 4 else part.upper() for part in rest)])


def _public(response: HttpResponse, *, max_age: int | None = None) -> HttpResponse:
    """Cacheable by anyone, readable cross-origin (public data, GS1 resolvers support CORS).

    Without ``max_age``: only after asking again (``no-cache``), because the answer depends on the database.
    """
    if max_age is None:
        patch_cache_control(response, public=True, no_cache=True)
    else:
        patch_cache_control(response, public=True, max_age=max_age)
    patch_vary_headers(response, ["Accept"])
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _fresh(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A database-dependent answer with its ETag: a 304 without the body when the client's copy is current."""
    set_response_etag(response)
    response = _public(response)
    conditional = get_conditional_response(request, etag=response.get("ETag"), response=response)
    assert conditional is not None  # given a response, Django returns it or a 304
    return conditional


# Links ----------------------------------------------------------------------------------


def _item(pack: reads.Pack) -> str:
    return " ".join(part for part in (pack.product.name, pack.product.strength) if part)


def _links(pack: reads.Pack, result: check.Check) -> dict[str, list[linkset.Link]]:
    """The links this item offers, absolute on BASE_URL: the page, its recall status, its ledger proof."""
    page_url = dataclasses.replace(pack.link, expiry=None).uri(settings.BASE_URL)
    page = linkset.Link(
        page_url, _("Product information: %(item)s") % {"item": _item(pack)}, "text/html", linkset.PAGE_LANGUAGES
    )
    links = {"pip": [page], "defaultLink": [page]}
    if pack.batch is not None:
        title = _("Recall status: recalled") if result.recalled else _("Recall status: not recalled")
        links["recallStatus"] = [linkset.Link(f"{page_url}#status", title, "text/html", linkset.PAGE_LANGUAGES)]
    if pack.ledger is not None and pack.ledger.checkpointed:
        proof = f"{settings.BASE_URL}{reverse('ledger-proof-inclusion')}?seq={pack.ledger.seq}"
        title = _("Ledger inclusion proof of the registration (entry %(seq)d)") % {"seq": pack.ledger.seq}
        links["certificationInfo"] = [linkset.Link(proof, title, "application/json")]
    return links


def _linkset(pack: reads.Pack, links: dict[str, list[linkset.Link]]) -> HttpResponse:
    anchor = links["pip"][0].href
    response = JsonResponse(
        linkset.document(anchor, _item(pack), links),
        content_type=linkset.MEDIA_TYPE,
        json_dumps_params={"ensure_ascii": False},
    )
    response["Link"] = f'<{linkset.JSONLD_CONTEXT}>; rel="{JSONLD_CONTEXT_REL}"; type="application/ld+json"'
    return response


# Pages ----------------------------------------------------------------------------------


def _rendered(template: str, context: dict[str, Any]) -> str:
    """The template alone: the consumer pages use no context processor (no user, no session, no CSRF token)."""
    return render_to_string(template, {"html_lang": _html_lang(get_language()), **context})


def _page(pack: reads.Pack, result: check.Check) -> HttpResponse:
    """The page, rendered once per process for as long as what it is rendered from stays the same (``cache``)."""
    canonical = get_script_prefix().rstrip("/") + dataclasses.replace(pack.link, expiry=None).path()
    linkset_url = f"{canonical}?linkType=linkset"
    key = cache.key(get_language(), linkset_url, pack, result, timezone.localdate())
    content = cache.pages.get(key)
    if content is None:
        content = _rendered("consumer/pack.html", _page_context(pack, result, linkset_url)).encode()
        cache.pages.put(key, content)
    response = HttpResponse(content, content_type="text/html; charset=utf-8")
    response["Link"] = f'<{linkset_url}>; rel="linkset"; type="{linkset.MEDIA_TYPE}"'
    return response


def _page_context(pack: reads.Pack, result: check.Check, linkset_url: str) -> dict[str, Any]:
    product = pack.product
    context: dict[str, Any] = {
        "product": product,
        "manufacturer": product.manufacturer,
        "gtin": product.gtin,
        "ledger": pack.ledger,
        "linkset_url": linkset_url,
    }
    if pack.ledger is not None:
        context["ledger_entry_url"] = reverse("ledger-entry-detail", args=[pack.ledger.seq])
        context["ledger_proof_url"] = f"{reverse('ledger-proof-inclusion')}?seq={pack.ledger.seq}"
        context["ledger_date"] = words.day(timezone.localdate(pack.ledger.time))
    if pack.batch is not None:
        context |= _batch_context(pack, pack.batch, result)
    return context


def _batch_context(pack: reads.Pack, batch: check.BatchFacts, result: check.Check) -> dict[str, Any]:
    notices = words.batch_notices(result, expires_on=batch.expires_on, expiry_in_code=pack.link.expiry)
    unit = None
    if pack.link.serial is not None:
        unit = words.unit_notice(pack.link.serial, result, pack.product.manufacturer)
    cold = verdict.judge(pack.legs)
    shown = _legs_shown(cold.legs)
    cold_chain = words.cold_chain_summary(cold)
    # An excursion is shown in red, but only the manufacturer's decision (quarantine, recall) says
    # "do not use": many products tolerate a short excursion, and their QA judges it. Until then,
    # the advice is to check with a pharmacist.
    chain_level = words.WARNING if cold_chain.level == words.DANGER else cold_chain.level
    levels = [notice.level for notice in (*notices, *([unit] if unit else []))] + [chain_level]
    return {
        "batch": batch,
        "lot": batch.lot,
        "expiry": words.day(batch.expires_on),
        "serial": pack.link.serial,
        "unit": unit,
        "recall": words.recall_view(pack.recall) if pack.recall is not None and result.recalled else None,
        "notices": notices or [words.released()],
        "cold_chain": cold_chain,
        "legs": [words.leg_view(leg) for leg in shown],
        "legs_unlisted": len(cold.legs) - len(shown),
        "advice": words.advice(words.worst(levels)),
    }


def _legs_shown(legs: tuple[verdict.Leg, ...]) -> list[verdict.Leg]:
    """The legs described one by one, in order: those with a problem first, then the latest, LEGS_SHOWN at most.

    A batch spread over hundreds of shipments would otherwise make a page no one
    reads on a phone, and no server renders quickly; the summary above counts them all.
    """
    troubled = [leg for leg in legs if not leg.held][:LEGS_SHOWN]
    room = LEGS_SHOWN - len(troubled)
    latest = [leg for leg in legs if leg.held][-room:] if room else []
    return sorted(troubled + latest, key=lambda leg: leg.number)


def _error(
    status: int,
    title: str,
    text: str,
    *,
    wants_json: bool,
    reason: str = "",
    available: list[str] | None = None,
) -> HttpResponse:
    """An error page or problem JSON, without caching headers: the caller says how long it holds."""
    if wants_json:
        problem: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": reason or text}
        if available is not None:
            problem["availableLinkTypes"] = available
        return JsonResponse(
            problem, status=status, content_type="application/problem+json", json_dumps_params={"ensure_ascii": False}
        )
    context = {"status": status, "title": title, "text": text, "reason": reason, "available": available}
    return HttpResponse(_rendered("consumer/error.html", context), status=status)


def _unknown(link: gs1.DigitalLink, unknown: reads.UnknownError, *, wants_json: bool) -> HttpResponse:
    product = unknown.product
    if product is None:
        title = _("Unknown product")
        text = _(
            "No product with GTIN %(gtin)s is registered with ColdTrace. Check the code; if you scanned it "
            "from a pack, show the pack to your pharmacist."
        ) % {"gtin": link.gtin}
    elif unknown.what == "variant":
        title = _("Unknown product variant")
        text = _("%(product)s has no variant %(variant)s registered with ColdTrace.") % {
            "product": product.name,
            "variant": link.cpv,
        }
    else:
        title = _("Unknown batch")
        text = _(
            "%(manufacturer)s registered no batch %(lot)s of %(product)s. A pack with this code may not be "
            "genuine: do not use it, and show it to your pharmacist."
        ) % {"manufacturer": product.manufacturer, "lot": link.lot, "product": product.name}
    return _public(_error(404, title, text, wants_json=wants_json))  # until the product or lot is registered


def _too_many(wait: int, *, wants_json: bool) -> HttpResponse:
    """429: the client asked too much (``throttle``); never kept by a cache, which would answer others."""
    text = _(
        "Many codes were looked up from your network in a short time, so ColdTrace answers no more for a "
        "while. Scan the pack again later; until then, keep it and do not use it."
    )
    response = _error(429, _("Too many look-ups"), text, wants_json=wants_json)
    response["Retry-After"] = str(wait)
    response["Access-Control-Allow-Origin"] = "*"  # a resolver in a browser may read when to retry
    patch_cache_control(response, no_store=True)
    return response


def _link_type_missing(requested: str, links: dict[str, list[linkset.Link]], *, wants_json: bool) -> HttpResponse:
    text = _("This code has no link of type %(type)s.") % {"type": linkset.curie(requested)}
    available = [linkset.curie(name) for name in (*links, "linkset")]
    response = _error(404, _("Link type not available"), text, wants_json=wants_json, available=available)
    return _public(response)
