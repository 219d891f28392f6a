"""The ledger's HTTP contract (spec/ledger.md, "HTTP"), checked as an outside auditor would.

Proofs are verified with ``ledger.merkle``'s verifiers and against roots
computed below straight from RFC 9162's definition over the entries' leaf
bytes; checkpoints and entry signatures are verified with keys built from the
``/keys`` JSON only. Who reads what comes from ``reader_parties`` below (set
as ``LEDGER_READER_PARTIES``), so these tests do not depend on how
traceability names organisations.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes

import hypothesis
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from rest_framework.request import Request
from rest_framework.test import APIClient

from ledger import merkle, note, services
from ledger.models import Checkpoint, Entry
from tests.conftest import Persona
from traceability.services import api_token_issue

CHECKPOINT = reverse("ledger-checkpoint")
KEYS = reverse("ledger-keys")
ENTRIES = reverse("ledger-entry-list")
INCLUSION = reverse("ledger-proof-inclusion")
CONSISTENCY = reverse("ledger-proof-consistency")
MAX_INTEGER = 2**63 - 1


def entry_url(seq: int) -> str:
    return reverse("ledger-entry-detail", args=[seq])


def reader_parties(request: Request) -> frozenset[str] | None:
    """LEDGER_READER_PARTIES for these tests: the regulator reads everything, other users as ``party:<username>``."""
    user = request.user
    if not user.is_authenticated:
        return frozenset()
    if user.get_username() == "regulator":
        return None
    return frozenset({f"party:{user.get_username()}"})


@pytest.fixture(autouse=True)
def _reader_parties(settings: Any) -> None:
    settings.LEDGER_READER_PARTIES = f"{__name__}.reader_parties"


def append(count: int, *, type: str = "batch.registered", subject: str = "", readers: tuple[str, ...] = ()) -> None:
    """``count`` committed-looking entries: appended, then sequenced as the sequencer task would."""
    for n in range(count):
        services.entry_append(
            type=type, subject=subject or f"batch:09506000134352:LOT{n}", data={"n": n}, readers=readers
        )
    services.entries_sequence()


def sign() -> Checkpoint:
    checkpoint = services.checkpoint_sign()
    assert checkpoint is not None
    return checkpoint


# An auditor's toolkit, written from the spec, not from ledger/ -----------------------


def leaf_hashes() -> list[bytes]:
    return [hashlib.sha256(b"\x00" + bytes(leaf)).digest() for leaf in Entry.objects.values_list("leaf", flat=True)]


def mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, recursively, over leaf hashes."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:])).digest()


def published_verifiers(client: APIClient) -> list[note.Verifier]:
    """The log's keys as /keys publishes them; each vkey must agree with the name and hex key beside it."""
    verifiers = []
    for key in client.get(KEYS).json():
        verifier = note.parse_vkey(key["vkey"])
        assert verifier == note.Verifier(key["name"], bytes.fromhex(key["public_key"]))
        assert verifier.key_id.hex() == key["key_id"]
        verifiers.append(verifier)
    return verifiers


def verify_entry(item: dict[str, Any], keys: list[dict[str, Any]]) -> dict[str, Any]:
    """The entry an entry's JSON carries, after checking its hash and signature with a published key."""
    leaf = base64.b64decode(item["leaf"], validate=True)
    assert item["hash"] == hashlib.sha256(b"\x00" + leaf).hexdigest()
    (key,) = [key for key in keys if key["key_id"] == item["key_id"]]
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["public_key"])).verify(
        base64.b64decode(item["signature"], validate=True), leaf
    )
    entry: dict[str, Any] = json.loads(leaf)
    assert rfc8785.dumps(entry) == leaf  # the leaf is the entry's canonical form
    assert entry["seq"] == item["seq"]
    return entry


# Checkpoint and keys ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_checkpoint_is_the_newest_note_byte_for_byte(anonymous: APIClient) -> None:
    append(3)
    sign()
    append(2)
    newest = sign()

    response = anonymous.get(CHECKPOINT)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == newest.note.encode()
    assert response.content.decode().startswith(f"{newest.note.splitlines()[0]}\n5\n")


@pytest.mark.django_db
def test_an_auditor_verifies_the_checkpoint_with_the_published_keys(anonymous: APIClient) -> None:
    append(4)
    sign()

    checkpoint = note.open_checkpoint(anonymous.get(CHECKPOINT).content, published_verifiers(anonymous))

    assert checkpoint.size == 4
    assert checkpoint.root == mth(leaf_hashes())


@pytest.mark.django_db
def test_a_client_accepting_only_text_gets_the_checkpoint(anonymous: APIClient) -> None:
    append(1)
    newest = sign()

    response = anonymous.get(CHECKPOINT, HTTP_ACCEPT="text/plain")

    assert response.status_code == 200
    assert response.content == newest.note.encode()


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["application/json", "text/plain"])
def test_before_the_first_checkpoint_the_checkpoint_is_404_with_a_reason(anonymous: APIClient, accept: str) -> None:
    append(2)  # entries, but nothing signed yet

    response = anonymous.get(CHECKPOINT, HTTP_ACCEPT=accept)

    assert response.status_code == 404
    assert response["Content-Type"].startswith(accept)
    assert b"no checkpoint yet" in response.content


@pytest.mark.django_db
def test_keys_list_the_active_key(anonymous: APIClient) -> None:
    append(1)

    (key,) = anonymous.get(KEYS).json()

    signer = services.active_signer()
    public_key = signer.verifier.public_key
    assert set(key) == {"name", "key_id", "public_key", "vkey", "active_from", "retired_at"}
    assert key["name"] == signer.name
    assert key["public_key"] == public_key.hex()
    assert key["key_id"] == hashlib.sha256(signer.name.encode() + b"\n\x01" + public_key).digest()[:4].hex()
    expected_vkey = f"{signer.name}+{key['key_id']}+{base64.b64encode(b'\x01' + public_key).decode()}"
    assert key["vkey"] == expected_vkey
    assert key["active_from"].endswith("Z")
    assert key["retired_at"] is None


@dataclass
class Rotated:
    old: dict[str, Any]
    new: dict[str, Any]
    rotation: Checkpoint


@pytest.fixture
def rotated(db: None, django_capture_on_commit_callbacks: Callable[..., Any]) -> Rotated:
    """Entries signed by one key, a rotation, and entries signed by the next; a checkpoint after each."""
    append(3)
    sign()
    # The new private key reaches LEDGER_KEY_FILE only on commit.
    with django_capture_on_commit_callbacks(execute=True):
        services.key_rotate()
    rotation = Checkpoint.objects.order_by("-size").first()
    assert rotation is not None
    append(2)
    sign()
    old, new = APIClient().get(KEYS).json()
    return Rotated(old, new, rotation)


def test_after_a_rotation_keys_list_both_and_only_the_new_one_is_active(rotated: Rotated) -> None:
    assert rotated.old["retired_at"] is not None
    assert rotated.new["retired_at"] is None
    assert rotated.old["key_id"] != rotated.new["key_id"]
    assert rotated.old["name"] == rotated.new["name"]
    assert rotated.old["active_from"] <= rotated.new["active_from"]
    # The rotation entry announces exactly the key /keys now calls active.
    rotation_entry = json.loads(bytes(Entry.objects.get(type="key.rotated").leaf))
    assert rotation_entry["data"] == {
        "retired": rotated.old["key_id"],
        "active": rotated.new["key_id"],
        "vkey": rotated.new["vkey"],
    }


def test_the_rotation_checkpoint_verifies_with_each_published_key(rotated: Rotated, anonymous: APIClient) -> None:
    for key in (rotated.old, rotated.new):
        checkpoint = note.open_checkpoint(rotated.rotation.note, [note.parse_vkey(key["vkey"])])
        assert checkpoint.size == rotated.rotation.size
    newest = note.open_checkpoint(anonymous.get(CHECKPOINT).content, published_verifiers(anonymous))
    assert newest.size == 6
    assert newest.root == mth(leaf_hashes())


def test_every_entry_verifies_with_the_key_that_signed_it(rotated: Rotated, regulator: Persona) -> None:
    keys = [rotated.old, rotated.new]
    client = regulator.client()

    signed_by = [client.get(entry_url(seq)).json()["key_id"] for seq in range(6)]
    for seq in range(6):
        verify_entry(client.get(entry_url(seq)).json(), keys)

    # Up to and including the rotation entry the old key signs; after it, the new one.
    assert signed_by == [rotated.old["key_id"]] * 4 + [rotated.new["key_id"]] * 2


# Entries ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_entry_carries_its_signed_canonical_leaf(anonymous: APIClient) -> None:
    services.entry_append(
        type="batch.registered", subject="batch:09506000134352:LOT42", data={"lot": "LOT42", "quantity": 100}
    )
    append(1)
    keys = anonymous.get(KEYS).json()

    first, second = anonymous.get(entry_url(0)).json(), anonymous.get(entry_url(1)).json()

    assert set(first) == {"seq", "leaf", "hash", "signature", "key_id"}
    entry = verify_entry(first, keys)
    assert entry["seq"] == 0
    assert entry["type"] == "batch.registered"
    assert entry["subject"] == "batch:09506000134352:LOT42"
    assert entry["data"] == {"lot": "LOT42", "quantity": 100}
    assert entry["prev"] == "0" * 64
    assert entry["time"].endswith("Z")
    assert verify_entry(second, keys)["prev"] == first["hash"]  # the chain


@pytest.fixture
def shipment_entry(personas: dict[str, Persona]) -> int:
    """A private entry the manufacturer and the carrier are party to."""
    append(1)  # a public one first, so the private entry's seq is not 0
    append(1, type="shipment.dispatched", subject="shipment:1", readers=("party:manufacturer", "party:carrier"))
    return 1


@pytest.mark.parametrize("reader", ["manufacturer", "carrier", "regulator"])
def test_parties_and_regulators_read_a_private_entry(
    shipment_entry: int, personas: dict[str, Persona], reader: str
) -> None:
    response = personas[reader].client().get(entry_url(shipment_entry))

    assert response.status_code == 200
    assert response.json()["seq"] == shipment_entry


@pytest.mark.parametrize("outsider", ["competitor", "carrier2", "pharmacy"])
def test_outsiders_get_404_for_a_private_entry_as_for_a_missing_one(
    shipment_entry: int, personas: dict[str, Persona], outsider: str
) -> None:
    client = personas[outsider].client()

    hidden, missing = client.get(entry_url(shipment_entry)), client.get(entry_url(99))

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json().keys() == missing.json().keys() == {"detail"}


def test_anonymous_reads_public_entries_but_not_private_ones(shipment_entry: int, anonymous: APIClient) -> None:
    assert anonymous.get(entry_url(0)).status_code == 200
    assert anonymous.get(entry_url(shipment_entry)).status_code == 404


def test_a_token_signed_in_party_reads_its_entry(shipment_entry: int, carrier: Persona) -> None:
    """Token authentication, the way API clients sign in, counts as much as a session."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=carrier.user).key}")

    assert client.get(entry_url(shipment_entry)).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("seq", [MAX_INTEGER, MAX_INTEGER + 1, 10**30])
def test_an_entry_beyond_any_log_is_404(anonymous: APIClient, seq: int) -> None:
    append(1)

    assert anonymous.get(entry_url(seq)).status_code == 404


@pytest.fixture
def mixed_log(personas: dict[str, Persona]) -> None:
    """seq 0, 2: public batches; 1: the manufacturer's and carrier's shipment; 3: the competitor's shipment."""
    append(1, subject="batch:09506000134352:LOT1")
    append(1, type="shipment.dispatched", subject="shipment:1", readers=("party:manufacturer", "party:carrier"))
    append(1, subject="batch:09506000134352:LOT2")
    append(1, type="shipment.dispatched", subject="shipment:2", readers=("party:competitor",))


def listed(client: APIClient, query: str = "") -> list[int]:
    response = client.get(f"{ENTRIES}?{query}")
    assert response.status_code == 200
    return [item["seq"] for item in response.json()["results"]]


@pytest.mark.parametrize(
    ("reader", "seqs"),
    [("anonymous", [0, 2]), ("manufacturer", [0, 1, 2]), ("competitor", [0, 2, 3]), ("regulator", [0, 1, 2, 3])],
)
def test_the_entry_list_shows_only_what_the_reader_may_read(
    mixed_log: None, personas: dict[str, Persona], reader: str, seqs: list[int]
) -> None:
    client = APIClient() if reader == "anonymous" else personas[reader].client()

    assert listed(client) == seqs


def test_the_entry_list_filters_by_subject_and_type(mixed_log: None, regulator: Persona) -> None:
    client = regulator.client()

    assert listed(client, "subject=shipment:1") == [1]
    assert listed(client, "type=shipment.dispatched") == [1, 3]
    assert listed(client, "type=batch.registered&subject=batch:09506000134352:LOT2") == [2]
    assert listed(client, "subject=nothing") == []


def test_listed_entries_are_entries_with_their_type_subject_and_time(mixed_log: None, regulator: Persona) -> None:
    keys = APIClient().get(KEYS).json()
    response = regulator.client().get(ENTRIES)

    for item in response.json()["results"]:
        assert set(item) == {"seq", "leaf", "hash", "signature", "key_id", "type", "subject", "time"}
        entry = verify_entry(item, keys)
        assert (item["type"], item["subject"], item["time"]) == (entry["type"], entry["subject"], entry["time"])
        assert regulator.client().get(entry_url(item["seq"])).json() == {
            key: item[key] for key in ("seq", "leaf", "hash", "signature", "key_id")
        }


def test_the_entry_list_pages_by_limit_and_offset(mixed_log: None, regulator: Persona) -> None:
    client = regulator.client()

    page = client.get(f"{ENTRIES}?limit=3").json()

    assert page["count"] == 4
    assert [item["seq"] for item in page["results"]] == [0, 1, 2]
    assert [item["seq"] for item in client.get(page["next"]).json()["results"]] == [3]
    assert listed(client, f"offset={MAX_INTEGER}") == []


# Proofs ---------------------------------------------------------------------------------

CHECKPOINT_SIZES = [1, 2, 5, 8, 13]
LOG_SIZE = 16  # three entries past the newest checkpoint


@pytest.fixture
def grown_log(db: None) -> list[Checkpoint]:
    """Checkpoints at sizes 1, 2, 5, 8 and 13, then three more entries not yet checkpointed."""
    checkpoints = []
    for size in CHECKPOINT_SIZES:
        append(size - services.tree_size())
        checkpoints.append(sign())
    append(LOG_SIZE - services.tree_size())
    return checkpoints


def test_every_inclusion_proof_verifies_at_several_tree_sizes(grown_log: list[Checkpoint]) -> None:
    client = APIClient()
    hashes = leaf_hashes()
    for size in [1, 3, 5, 8, 13, 16]:
        for seq in range(size):
            response = client.get(f"{INCLUSION}?seq={seq}&tree_size={size}")
            assert response.status_code == 200
            proof = response.json()
            assert (proof["seq"], proof["tree_size"]) == (seq, size)
            assert proof["leaf_hash"] == hashes[seq].hex()
            assert proof["root"] == mth(hashes[:size]).hex()
            path = [bytes.fromhex(item) for item in proof["path"]]
            assert merkle.verify_inclusion(seq, size, hashes[seq], path, bytes.fromhex(proof["root"]))


def test_inclusion_proofs_default_to_the_newest_checkpoint_and_verify_against_its_root(
    grown_log: list[Checkpoint],
) -> None:
    newest = grown_log[-1]
    signed = note.open_checkpoint(newest.note, services.verifiers())
    client = APIClient()
    for seq in range(newest.size):
        proof = client.get(f"{INCLUSION}?seq={seq}").json()
        assert proof["tree_size"] == signed.size == 13
        assert proof["root"] == signed.root.hex()
        path = [bytes.fromhex(item) for item in proof["path"]]
        assert merkle.verify_inclusion(seq, signed.size, bytes.fromhex(proof["leaf_hash"]), path, signed.root)


def test_every_pair_of_checkpoints_is_proved_consistent(grown_log: list[Checkpoint]) -> None:
    client = APIClient()
    for older in grown_log:
        for newer in grown_log:
            if older.size > newer.size:
                continue
            response = client.get(f"{CONSISTENCY}?first={older.size}&second={newer.size}")
            assert response.status_code == 200
            proof = response.json()
            assert (proof["first"], proof["second"]) == (older.size, newer.size)
            assert proof["first_root"] == bytes(older.root).hex()
            assert proof["second_root"] == bytes(newer.root).hex()
            path = [bytes.fromhex(item) for item in proof["path"]]
            assert merkle.verify_consistency(older.size, newer.size, bytes(older.root), bytes(newer.root), path)


def test_consistency_proofs_default_to_the_newest_checkpoint_and_reach_past_it(grown_log: list[Checkpoint]) -> None:
    client = APIClient()
    hashes = leaf_hashes()

    to_newest = client.get(f"{CONSISTENCY}?first=5").json()
    to_log = client.get(f"{CONSISTENCY}?first=13&second={LOG_SIZE}").json()

    assert to_newest["second"] == 13
    assert to_newest["second_root"] == bytes(grown_log[-1].root).hex()
    assert to_log["second_root"] == mth(hashes).hex()
    for proof in (to_newest, to_log):
        path = [bytes.fromhex(item) for item in proof["path"]]
        first_root, second_root = bytes.fromhex(proof["first_root"]), bytes.fromhex(proof["second_root"])
        assert merkle.verify_consistency(proof["first"], proof["second"], first_root, second_root, path)


# 400s: each names the parameter ------------------------------------------------------

BAD_PROOF_QUERIES = [
    # Missing, malformed, negative or absurd.
    (INCLUSION, "", "seq"),
    (INCLUSION, "seq=", "seq"),
    (INCLUSION, "seq=abc", "seq"),
    (INCLUSION, "seq=-1", "seq"),
    (INCLUSION, "seq=1.0", "seq"),
    (INCLUSION, "seq=1.5", "seq"),
    (INCLUSION, "seq=1_0", "seq"),
    (INCLUSION, "seq=0x1", "seq"),
    (INCLUSION, "seq=%201", "seq"),
    (INCLUSION, "seq=%D9%A1", "seq"),  # ARABIC-INDIC DIGIT ONE: int() would take it
    (INCLUSION, f"seq={MAX_INTEGER + 1}", "seq"),
    (INCLUSION, f"seq={'9' * 5000}", "seq"),
    (INCLUSION, "seq=0&tree_size=x", "tree_size"),
    (INCLUSION, "seq=0&tree_size=-3", "tree_size"),
    (INCLUSION, f"seq=0&tree_size={MAX_INTEGER + 1}", "tree_size"),
    # Outside the tree.
    (INCLUSION, "seq=5&tree_size=5", "seq"),
    (INCLUSION, "seq=0&tree_size=0", "seq"),
    (INCLUSION, "seq=13", "seq"),  # the newest checkpoint has 13 entries
    (INCLUSION, f"seq=0&tree_size={LOG_SIZE + 1}", "tree_size"),
    (INCLUSION, f"seq=0&tree_size={MAX_INTEGER}", "tree_size"),
    (INCLUSION, f"seq={MAX_INTEGER}&tree_size={LOG_SIZE}", "seq"),
    # Consistency: malformed.
    (CONSISTENCY, "", "first"),
    (CONSISTENCY, "first=one", "first"),
    (CONSISTENCY, "first=-1", "first"),
    (CONSISTENCY, f"first={MAX_INTEGER + 1}", "first"),
    (CONSISTENCY, "first=1&second=two", "second"),
    (CONSISTENCY, "first=1&second=-1", "second"),
    # Consistency: outside the tree.
    (CONSISTENCY, "first=0&second=5", "first"),
    (CONSISTENCY, "first=0", "first"),
    (CONSISTENCY, "first=6&second=5", "first"),
    (CONSISTENCY, "first=14", "first"),  # past the newest checkpoint, the default second
    (CONSISTENCY, f"first=1&second={LOG_SIZE + 1}", "second"),
    (CONSISTENCY, f"first=1&second={MAX_INTEGER}", "second"),
    # Listing.
    (ENTRIES, "type=batch.invented", "type"),
    (ENTRIES, f"subject={'x' * 201}", "subject"),
    (ENTRIES, "subject=%00", "subject"),
    (ENTRIES, "limit=0", "limit"),
    (ENTRIES, "limit=501", "limit"),
    (ENTRIES, "limit=ten", "limit"),
    (ENTRIES, "offset=-1", "offset"),
    (ENTRIES, f"offset={MAX_INTEGER + 1}", "offset"),
]


@pytest.mark.parametrize(("path", "query", "parameter"), BAD_PROOF_QUERIES)
def test_a_bad_query_is_400_naming_the_parameter(
    grown_log: list[Checkpoint], path: str, query: str, parameter: str
) -> None:
    response = APIClient().get(f"{path}?{query}")

    assert response.status_code == 400
    reasons = response.json()[parameter]
    assert reasons
    assert all(isinstance(reason, str) and reason for reason in reasons)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "query", "parameter"), [(INCLUSION, "seq=0", "tree_size"), (CONSISTENCY, "first=1", "second")]
)
def test_without_a_checkpoint_a_default_size_is_400_explaining(path: str, query: str, parameter: str) -> None:
    append(3)

    response = APIClient().get(f"{path}?{query}")

    assert response.status_code == 400
    assert "no checkpoint" in response.json()[parameter][0].lower()


@pytest.mark.django_db
def test_with_an_explicit_size_proofs_need_no_checkpoint() -> None:
    append(3)

    assert APIClient().get(f"{INCLUSION}?seq=2&tree_size=3").status_code == 200
    assert APIClient().get(f"{CONSISTENCY}?first=1&second=3").status_code == 200


# Never a 5xx -----------------------------------------------------------------------------

PATHS = [CHECKPOINT, KEYS, ENTRIES, entry_url(0), entry_url(1), INCLUSION, CONSISTENCY]
NAMES = ["seq", "tree_size", "first", "second", "subject", "type", "limit", "offset", "format"]
VALUES = [
    "",
    "0",
    "1",
    "13",
    "16",
    "17",
    "-0",
    str(MAX_INTEGER),
    str(MAX_INTEGER + 1),
    "json",
    "api",
    "txt",
    "batch.registered",
]
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30).map(str.encode)
parts = st.sampled_from(NAMES).map(str.encode) | text | st.binary(max_size=20)
values = (
    st.sampled_from(VALUES).map(str.encode)
    | st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: str(n).encode())
    | text
    | st.binary(max_size=20)
)
encoded_query = st.lists(
    st.tuples(parts, values).map(lambda pair: "=".join(quote_from_bytes(part, safe="") for part in pair)), max_size=4
).map("&".join)
raw_query = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"))


@pytest.fixture
def log_with_readers(grown_log: list[Checkpoint], personas: dict[str, Persona]) -> dict[str, APIClient]:
    append(2, type="shipment.dispatched", subject="shipment:1", readers=("party:manufacturer",))
    return {
        "anonymous": APIClient(),
        "manufacturer": personas["manufacturer"].client(),
        "regulator": personas["regulator"].client(),
    }


@hypothesis.settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(PATHS),
    query=encoded_query | raw_query,
    reader=st.sampled_from(["anonymous", "manufacturer", "regulator"]),
)
def test_no_query_string_makes_the_server_fail(
    log_with_readers: dict[str, APIClient], path: str, query: str, reader: str
) -> None:
    response = log_with_readers[reader].get(f"{path}?{query}")

    hypothesis.event(f"HTTP {response.status_code}")
    assert response.status_code < 500


# The schema -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_ledger_endpoint_is_in_the_schema_with_its_errors() -> None:
    schema = APIClient().get(reverse("api-schema"), {"format": "json"}).json()
    paths = {path: operations["get"] for path, operations in schema["paths"].items() if "/ledger/" in path}

    assert paths["/api/v1/ledger/checkpoint"]["responses"]["200"]["content"].keys() == {"text/plain"}
    assert "404" in paths["/api/v1/ledger/checkpoint"]["responses"]
    assert "200" in paths["/api/v1/ledger/keys"]["responses"]
    assert "404" in paths["/api/v1/ledger/entries/{seq}"]["responses"]
    for path in ("/api/v1/ledger/entries/", "/api/v1/ledger/proof/inclusion", "/api/v1/ledger/proof/consistency"):
        assert "400" in paths[path]["responses"]
    inclusion = {parameter["name"]: parameter for parameter in paths["/api/v1/ledger/proof/inclusion"]["parameters"]}
    assert inclusion["seq"]["required"]
    assert inclusion["tree_size"]["schema"]["maximum"] == MAX_INTEGER
