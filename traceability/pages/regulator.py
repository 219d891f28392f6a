"""The regulator's pages: everything at a glance, and the ledger verified on the server as the page is served.

Members of a regulator organisation only: anyone else signed in gets 404 (the
pages are not confirmed to exist), anonymous visitors the sign-in page. GET
and HEAD only; nothing here writes.

The ledger page trusts no stored value it has not checked. A checkpoint's
tree head is what its signed note says once a known log key's signature on it
verifies (the ``size`` and ``root`` columns are only compared with it).
Proofs are computed from the stored Merkle nodes and checked with
``ledger.merkle``'s pure verifiers against those signed roots, and an entry's
leaf hash is recomputed from its stored bytes. So an altered checkpoint,
node or entry shows as not verified. The checks of one checkpoint and one
entry are ``ledger.checks``'s, which the shipment page shares; the
consistency of the newest two checkpoints is this page's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from ledger import checks, merkle, note
from ledger import selectors as ledger_selectors
from ledger import services as ledger_services
from ledger.models import Checkpoint, Entry, PendingEvent
from traceability import gs1
from traceability.consumer import words
from traceability.models import Alert, Batch, Excursion, Organisation, Shipment, Site
from traceability.views import status_tiles

NEWEST_BATCHES = 50
OPEN_EXCURSIONS = 100
OPEN_ALERTS = 50
SUBJECT_ENTRIES = 50  # entries of a subject per page, newest first; "older entries" pages on
MAX_SEQ = 2**63 - 1  # a seq is a BigIntegerField
UNRESOLVED = (Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED)  # open until resolved, as Alert's constraint has it
SEVERITIES = (Alert.Severity.CRITICAL, Alert.Severity.ALARM, Alert.Severity.WARNING, Alert.Severity.INFO)
SUBJECT_KINDS = ("shipment", "batch", "product", "recall", "key")  # as the services name them (grep "_record(")
_NO_SPACE = re.compile(r"\S+")
_DECIMAL = re.compile(r"[0-9]{1,19}")


def _regulator(request: HttpRequest) -> Organisation:
    """The signed-in user's organisation if it is a regulator; 404 for everyone else."""
    membership = getattr(request.user, "membership", None)
    if membership is None or not membership.organisation.is_regulator:
        raise Http404("No such page.")
    organisation: Organisation = membership.organisation
    return organisation


# The overview ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExcursionRow:
    excursion: Excursion
    peak: str
    duration: str
    rules: list[str]  # the rules' names: their keys are "rule:<name>"


def _excursion_row(excursion: Excursion) -> ExcursionRow:
    return ExcursionRow(
        excursion,
        words.celsius(excursion.peak_celsius),
        words.duration(excursion.duration_seconds),
        [key.removeprefix("rule:") for key in excursion.rules],
    )


def _counted(rows: QuerySet[Any], field: str) -> Coalesce:
    """How many ``rows`` point at the outer organisation through ``field``; a subquery, so counts never multiply."""
    counted = rows.filter(**{field: OuterRef("pk")}).order_by().values(field).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def _organisations() -> QuerySet[Organisation]:
    return Organisation.objects.annotate(
        site_count=_counted(Site.objects.all(), "organisation"),
        shipped=_counted(Shipment.objects.all(), "shipper"),
        carried=_counted(Shipment.objects.all(), "carrier"),
        received=_counted(Shipment.objects.all(), "consignee"),
    ).order_by("name", "pk")


def _open_excursions() -> QuerySet[Excursion]:
    """Excursions still going on, or of a shipment with an alert not yet resolved; newest first."""
    unresolved = Alert.objects.filter(shipment=OuterRef("shipment"), status__in=UNRESOLVED)
    return (
        Excursion.objects.annotate(alerts_open=Exists(unresolved))
        .filter(Q(ended_at__isnull=True) | Q(alerts_open=True))
        .select_related("shipment")
        .order_by("-started_at", "-id")
    )


def _alert_counts() -> list[tuple[str, str, int, int]]:
    """(severity, label, open, acknowledged) for every severity, most severe first, zeros included."""
    rows = Alert.objects.filter(status__in=UNRESOLVED).order_by().values_list("severity", "status")
    counts = {(severity, status): n for severity, status, n in rows.annotate(n=Count("id"))}
    opened, acknowledged = Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED
    return [
        (value, str(label), counts.get((value, opened), 0), counts.get((value, acknowledged), 0))
        for value, label in ((severity.value, severity.label) for severity in SEVERITIES)
    ]


@require_safe
@never_cache
@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """Every organisation, batch, open excursion and open alert; a constant number of queries."""
    organisation = _regulator(request)
    batches = Batch.objects.all()
    excursions = _open_excursions()
    alerts = Alert.objects.filter(status__in=UNRESOLVED).select_related("shipment").order_by("-raised_at", "-id")
    context = {
        "organisation": organisation,
        "organisations": _organisations(),
        "batch_tiles": status_tiles(Batch.Status, batches),
        "batches": batches.select_related("product__manufacturer").order_by("-created_at", "-id")[:NEWEST_BATCHES],
        "excursion_count": excursions.count(),
        "excursions": [_excursion_row(row) for row in excursions[:OPEN_EXCURSIONS]],
        "alert_counts": _alert_counts(),
        "alerts": alerts[:OPEN_ALERTS],
        "limits": {"batches": NEWEST_BATCHES, "excursions": OPEN_EXCURSIONS, "alerts": OPEN_ALERTS},
    }
    return render(request, "regulator/overview.html", context)


# The ledger: checkpoints ------------------------------------------------------------------


def _verifiers() -> tuple[list[note.Verifier], str]:
    """Every key that ever signed for the log, and why there are none when a stored key is unusable."""
    try:
        return ledger_services.verifiers(), ""
    except note.NoteError as error:
        return [], _("A stored signing key is unusable, so no signature can be verified: %(reason)s") % {
            "reason": error
        }


@dataclass(frozen=True)
class Consistency:
    """The consistency proof from the previous checkpoint to the newest, and whether it verified."""

    first: int
    second: int
    proof: tuple[str, ...]
    consistent: bool
    reason: str  # why not, when not consistent


@dataclass(frozen=True)
class Head:
    """The newest checkpoint's tree head, if it can be trusted to check proofs against, else why not."""

    head: note.Checkpoint | None
    reason: str


def _trusted_head(newest: checks.CheckpointCheck | None, tree_size: int) -> Head:
    if newest is None:
        return Head(None, _("No checkpoint has been signed yet."))
    if not newest.verified or newest.head is None:
        return Head(None, _("The newest checkpoint does not verify."))
    if newest.head.size > tree_size:
        return Head(
            None,
            _("The newest checkpoint covers %(size)d entries but the ledger stores only %(stored)d.")
            % {"size": newest.head.size, "stored": tree_size},
        )
    return Head(newest.head, "")


def _consistency(
    previous: checks.CheckpointCheck, newest: checks.CheckpointCheck, head: Head, nodes: Mapping[merkle.NodeKey, bytes]
) -> Consistency:
    """Proves the newest tree extends the previous one, from the stored nodes, against the signed roots."""
    first, second = previous.row.size, newest.row.size
    if not previous.verified or previous.head is None:
        return Consistency(first, second, (), False, _("The previous checkpoint does not verify."))
    if head.head is None:
        return Consistency(first, second, (), False, head.reason)
    first, second = previous.head.size, head.head.size
    try:
        proof = merkle.consistency_proof(first, second, nodes)
    except (ValueError, merkle.MissingNodeError) as error:
        reason = _("No consistency proof can be made from the stored tree: %(reason)s") % {"reason": error}
        return Consistency(first, second, (), False, reason)
    hexes = tuple(merkle.proof_to_hex(proof))
    if merkle.verify_consistency(first, second, previous.head.root, head.head.root, proof):
        return Consistency(first, second, hexes, True, "")
    reason = _(
        "The proof made from the stored tree does not lead from the signed root of checkpoint %(first)d to the "
        "signed root of checkpoint %(second)d: a checkpoint or the stored tree was altered."
    ) % {"first": first, "second": second}
    return Consistency(first, second, hexes, False, reason)


def _tree_matches(head: Head, nodes: Mapping[merkle.NodeKey, bytes]) -> bool:
    """Whether the stored tree at the newest checkpoint's size has the root hash the checkpoint is signed for."""
    if head.head is None:
        return False
    try:
        return merkle.root(head.head.size, nodes) == head.head.root
    except merkle.MissingNodeError:
        return False


def _consistency_keys(previous: checks.CheckpointCheck | None, head: Head) -> set[merkle.NodeKey]:
    if previous is None or previous.head is None or head.head is None:
        return set()
    try:
        return merkle.consistency_keys(previous.head.size, head.head.size)
    except ValueError:  # sizes out of order: _consistency says so
        return set()


# The ledger: entries of a subject ---------------------------------------------------------


class BadQuery(ValueError):
    """A search the page cannot run; the message says why and what to type instead."""


def _subject(raw: str) -> str:
    """The subject as the ledger names it (GTINs as GTIN-14), or BadQuery saying what is wrong."""
    subject = raw.strip()
    if not subject:
        raise BadQuery(_("Enter a subject to search for, for example shipment:SHP-20260101-0A1B2C3D."))
    kind, colon, rest = subject.partition(":")
    if not colon or kind not in SUBJECT_KINDS:
        raise BadQuery(
            _("“%(subject)s” is not a subject: it must begin with shipment:, batch:, product:, recall: or key:.")
            % {"subject": subject[:80]}
        )
    if len(subject) > ledger_services.SUBJECT_MAX:
        raise BadQuery(_("A subject has at most %(max)d characters.") % {"max": ledger_services.SUBJECT_MAX})
    try:
        if kind == "batch":
            gtin, colon, lot = rest.partition(":")
            if not colon:
                raise BadQuery(_("A batch subject is batch:<GTIN>:<lot>, for example batch:09506000134352:LOT42."))
            return f"batch:{gs1.normalize_gtin(gtin)}:{gs1.validate_lot(lot)}"
        if kind == "product":
            return f"product:{gs1.normalize_gtin(rest)}"
    except gs1.GS1Error as error:
        reason = {"subject": subject, "reason": error}
        raise BadQuery(_("“%(subject)s” is not a subject: %(reason)s.") % reason) from None
    if not _NO_SPACE.fullmatch(rest):
        raise BadQuery(_("Give the name after “%(kind)s:”, without spaces.") % {"kind": kind})
    return subject


def _before(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not _DECIMAL.fullmatch(raw) or int(raw) > MAX_SEQ:
        raise BadQuery(_("“before” must be an entry's seq, a whole number."))
    return int(raw)


@dataclass(frozen=True)
class EntryRow:
    """One entry as the page shows it: what verifying it found, its time and its data."""

    check: checks.EntryCheck
    time: str
    data: str  # pretty JSON of the leaf's "data"
    reason: str  # why inclusion is not verified


def _data(leaf: bytes) -> str:
    try:
        parsed = json.loads(leaf)
        return json.dumps(parsed["data"], indent=2, ensure_ascii=False, sort_keys=True)
    except (ValueError, TypeError, KeyError):
        return leaf.decode(errors="replace")


def _entry_row(check: checks.EntryCheck, head: Head) -> EntryRow:
    entry = check.entry
    reason = check.reason if head.head is not None else head.reason  # why no checkpoint is trusted, said once
    return EntryRow(check, ledger_services.entry_time(entry.time), _data(bytes(entry.leaf)), reason)


@dataclass(frozen=True)
class Search:
    subject: str
    total: int
    entries: list[Entry]
    older: int | None  # the "before" of the next page, if there is one


def _search(request: HttpRequest) -> Search | None:
    """The requested page of a subject's entries, newest first; None when nothing was asked."""
    if "subject" not in request.GET:
        return None
    subject, before = _subject(request.GET["subject"]), _before(request.GET.get("before"))
    entries = ledger_selectors.readable_entries(request).filter(subject=subject)
    total = entries.count()
    if before is not None:
        entries = entries.filter(seq__lt=before)
    found = list(entries.order_by("-seq")[: SUBJECT_ENTRIES + 1])
    older = found[SUBJECT_ENTRIES - 1].seq if len(found) > SUBJECT_ENTRIES else None
    return Search(subject, total, found[:SUBJECT_ENTRIES], older)


@require_safe
@never_cache
@login_required
def ledger(request: HttpRequest) -> HttpResponse:
    """The newest two checkpoints verified now, and a subject's entries with verified inclusion proofs.

    A constant number of queries: the Merkle nodes of every proof on the page come in one.
    """
    organisation = _regulator(request)
    now = timezone.now()
    verifiers, keys_problem = _verifiers()
    stored = [checks.checkpoint_check(row, verifiers) for row in Checkpoint.objects.order_by("-size")[:2]]
    newest = stored[0] if stored else None
    previous = stored[1] if len(stored) > 1 else None
    tree_size = ledger_services.tree_size()
    head = _trusted_head(newest, tree_size)
    error, search = "", None
    try:
        search = _search(request)
    except BadQuery as bad:
        error = str(bad)
    entries = search.entries if search else []
    wanted = _consistency_keys(previous, head) | checks.proof_keys([entry.seq for entry in entries], head.head)
    if head.head is not None:
        wanted |= merkle.root_keys(head.head.size)
    nodes = ledger_services.nodes(wanted)
    keys = checks.by_key_id(verifiers)
    context = {
        "organisation": organisation,
        "now": now,
        "keys_problem": keys_problem,
        "newest": newest,
        "previous": previous,
        "age": words.duration(int((now - newest.row.created_at).total_seconds())) if newest else "",
        "consistency": _consistency(previous, newest, head, nodes) if previous and newest else None,
        "head": head,
        "tree_matches": _tree_matches(head, nodes),
        "tree_size": tree_size,
        "pending": PendingEvent.objects.count(),
        "subject_input": request.GET.get("subject", ""),
        "error": error,
        "search": search,
        "results": [_entry_row(checks.entry_check(entry, head.head, keys, nodes), head) for entry in entries],
    }
    return render(request, "regulator/ledger.html", context, status=400 if error else 200)
