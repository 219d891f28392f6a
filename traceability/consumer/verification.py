"""DSCSA product identifier verification at the Digital Link: ``?linkType=verificationService``.

The request is the GS1 Lightweight Messaging Standard's: a GET of the unit's
Digital Link with the product identifier in the path and the rest in the
query::

    /01/{gtin}/10/{lot}/21/{serial}?linkType=verificationService&exp=YYMMDD
        &reqGLN={requester's GLN}&corrUUID={requester's correlation UUID}&context=dscsaSaleableReturn

``exp`` may instead be the Digital Link's own ``17``. All four parts of the
product identifier and ``reqGLN`` are required; ``corrUUID`` is optional and
echoed; ``context`` (the reason for asking) is accepted and not judged.

Who asks: the requester names itself by its GLN, as the standard has it. No
sign-in is needed (the consumer page is public, and the answer reveals only
whether a code is genuine), so the GLN is what the requester says, recorded
as said. A signed-in user (session, or ``Authorization: Token ...`` as for
the API) is recorded beside it; a token that is not valid is refused (401),
never silently taken as anonymous.

The answer is ``lms.response`` of the same ``check.Check`` the consumer page
shows, sent ``Cache-Control: no-store``. Every request that names a valid
GTIN is kept as a ``VerificationRequest`` with the answer given, whole: also
a malformed one (400, problem JSON saying what is wrong), a refused one (401)
and one for a GTIN this platform does not hold (404). What cannot be stored
as sent (a NUL, ``%00``) is kept as ``audit.storable`` shows it. Only a
request from a client over its allowance (``throttle``) is answered 429 and
not kept: a flood must not grow the log (each request kept as refused counts
against the small allowance of misses).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from rest_framework import exceptions

from traceability import gs1
from traceability.api.authentication import token_user
from traceability.audit import client_address, storable
from traceability.consumer import lms, reads, throttle
from traceability.models import VerificationRequest

LINK_TYPE = "verificationService"
_CONTEXT = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_SEGMENT = re.compile(r"/(01|10|21)/([^/?]*)")


@dataclass(frozen=True)
class Asked:
    """What a request asks, as far as it could be read: the log keeps it even when the request is refused."""

    gtin: str
    lot: str = ""
    serial: str = ""
    expiry: str = ""  # YYMMDD as asked
    requester: str = ""  # the GLN the requester gave
    request_id: str = ""  # its corrUUID


def answer(request: HttpRequest, parsed: gs1.ParsedDigitalLink) -> HttpResponse:
    """The verification answer for a well-formed Digital Link; the request and the answer are logged."""
    link, query = parsed.link, parsed.extra_query
    expiry_text = query.get("exp") or (gs1.format_expiry(link.expiry) if link.expiry else "")
    asked = Asked(
        gtin=link.gtin,
        lot=link.lot or "",
        serial=link.serial or "",
        expiry=expiry_text[:6],
        requester=query.get("reqGLN", "")[:200],
        request_id=query.get("corrUUID", "")[:100],
    )
    try:
        user = _user(request)
    except exceptions.AuthenticationFailed as refused:
        return _refuse(request, asked, None, 401, "Not authenticated", f"{refused.detail} Send a valid token, or none.")
    problems = _problems(link, query)
    if problems:
        return _refuse(request, asked, user, 400, "Not a valid verification request", " ".join(problems))
    today = timezone.localdate()
    expiry = gs1.parse_expiry(query["exp"], today=today) if "exp" in query else link.expiry
    try:
        pack = reads.pack_read(dataclasses.replace(link, expiry=expiry), now=timezone.now())
    except reads.UnknownError:
        detail = f"No product with GTIN {link.gtin} is registered here, so this service cannot verify it."
        return _refuse(request, asked, user, 404, "Unknown GTIN", detail)
    result = pack.judged(today=today)
    if result.genuine:
        throttle.found(request)  # any other answer, and every refusal kept, counts as a miss
    body = lms.response(
        result, responder_gln=pack.product.manufacturer_gln, corr_uuid=asked.request_id, at=timezone.now()
    )
    _record(request, asked, user, verified=result.genuine, failure_reason=lms.failure_reason(result) or "", body=body)
    return _no_store(JsonResponse(body))


def throttled(wait: int) -> HttpResponse:
    """429 for a requester (its API token's user, or its address) that asked too much (``throttle``): answered,
    not kept, as what it asked is not read."""
    detail = f"Too many requests, or too many refused or for codes that are not genuine. Retry in {wait} s."
    response = JsonResponse(
        _problem(429, "Too many requests", detail), status=429, content_type="application/problem+json"
    )
    response["Retry-After"] = str(wait)
    return _no_store(response)


def malformed(request: HttpRequest, sent: str, reason: str) -> HttpResponse:
    """A verification request whose Digital Link does not parse: 400, logged when its GTIN is valid."""
    detail = f"The Digital Link is not valid: {reason}."
    segments = {ai: unquote(value) for ai, value in _SEGMENT.findall(sent.partition("?")[0])}
    try:
        gtin = gs1.normalize_gtin(segments.get("01", ""))
    except gs1.GS1Error:
        problem = _problem(400, "Not a valid verification request", detail)
        return _no_store(JsonResponse(problem, status=400, content_type="application/problem+json"))
    asked = Asked(
        gtin=gtin,
        lot=segments.get("10", "")[:20],
        serial=segments.get("21", "")[:20],
        expiry=(request.GET.get("exp") or request.GET.get("17") or "")[:6],
        requester=request.GET.get("reqGLN", "")[:200],
        request_id=request.GET.get("corrUUID", "")[:100],
    )
    try:
        user = _user(request)
    except exceptions.AuthenticationFailed:
        user = None  # the request is refused for its link anyway
    return _refuse(request, asked, user, 400, "Not a valid verification request", detail)


def _problems(link: gs1.DigitalLink, query: dict[str, str]) -> list[str]:
    """What makes the request unanswerable, each with what to send instead."""
    problems = []
    if link.lot is None:
        problems.append("The lot (AI 10) is missing: send /01/{gtin}/10/{lot}/21/{serial}.")
    if link.serial is None:
        problems.append("The serial number (AI 21) is missing: send /01/{gtin}/10/{lot}/21/{serial}.")
    if link.cpv is not None:
        problems.append("A consumer product variant (AI 22) is not part of a DSCSA product identifier: leave it out.")
    if "exp" in query:
        try:
            expiry = gs1.parse_expiry(query["exp"], today=timezone.localdate())
        except gs1.GS1Error as error:
            problems.append(f"exp is not a valid expiry date: {error}.")
        else:
            if link.expiry is not None and link.expiry != expiry:
                problems.append("exp and AI 17 give different expiry dates: send one.")
    elif link.expiry is None:
        problems.append("The expiry date is missing: send exp=YYMMDD.")
    if "reqGLN" not in query:
        problems.append("reqGLN is missing: send the GLN of the organisation asking.")
    else:
        try:
            gs1.validate_gln(query["reqGLN"])
        except gs1.GS1Error as error:
            problems.append(f"reqGLN is not a valid GLN: {error}.")
    if "corrUUID" in query and not _is_uuid(query["corrUUID"]):
        problems.append("corrUUID is not a UUID: send one like 3fa85f64-5717-4562-b3fc-2c963f66afa6, or none.")
    if "context" in query and not _CONTEXT.fullmatch(query["context"]):
        problems.append("context is not a context name: send one like dscsaSaleableReturn.")
    return problems


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _user(request: HttpRequest) -> User | None:
    """The signed-in user, by API token or session; None for an anonymous request. A bad token raises."""
    user: User | None = token_user(request)
    if user is not None:
        return user
    session_user = getattr(request, "user", None)
    return session_user if session_user is not None and session_user.is_authenticated else None


def _refuse(
    request: HttpRequest, asked: Asked, user: User | None, status: int, title: str, detail: str
) -> HttpResponse:
    problem = _problem(status, title, detail)
    _record(request, asked, user, verified=False, failure_reason="", body=problem)
    return _no_store(JsonResponse(problem, status=status, content_type="application/problem+json"))


def _problem(status: int, title: str, detail: str) -> dict[str, Any]:
    """RFC 9457 problem details: the standard sends its JSON with a 200 only."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail}


def _record(
    request: HttpRequest,
    asked: Asked,
    user: User | None,
    *,
    verified: bool,
    failure_reason: str,
    body: dict[str, Any],
) -> VerificationRequest:
    # As asked, but storable: a NUL (%00) in the link or the query is kept as the symbol for NUL.
    said = {name: storable(value) for name, value in dataclasses.asdict(asked).items()}
    return VerificationRequest.objects.create(
        user=user,
        remote_addr=client_address(request),  # behind the TLS proxy, the client's, as the audit log and throttles
        verified=verified,
        failure_reason=failure_reason,
        response=storable(body),
        **said,
    )


def _no_store(response: HttpResponse) -> HttpResponse:
    """Never cached: each answer is stamped with its time and the requester's correlation id, and logged."""
    response["Cache-Control"] = "no-store"
    return response
