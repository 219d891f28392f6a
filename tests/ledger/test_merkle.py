"""Tests for ledger.merkle: the RFC 9162 tree, its proofs and their verifiers.

Pure tests: no Django, no database. Expected values come from spec/ledger.md's
test vectors and from a reference implementation written below straight from
RFC 9162's recursive definitions, not from the code under test.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    MissingNodeError,
    NodeKey,
    append_nodes,
    consistency_keys,
    consistency_proof,
    fetch,
    hash_from_hex,
    inclusion_keys,
    inclusion_proof,
    leaf_hash,
    new_node_keys,
    new_nodes,
    node_hash,
    proof_from_hex,
    proof_to_hex,
    root,
    root_keys,
    verify_consistency,
    verify_inclusion,
)

# database=None: no .hypothesis directory is written into the work tree.
# deadline=None: timing on a loaded CI machine must not fail a test.
PROPERTY = settings(database=None, deadline=None, max_examples=150)
MAX_SIZE = 3000

# spec/ledger.md, "Test vectors", verbatim.
VECTOR_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
VECTOR_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
VECTOR_INCLUSION_5_IN_8 = [
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
]
VECTOR_CONSISTENCY_6_TO_8 = [
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
]


# Reference: RFC 9162 section 2.1, transcribed recursively over the entries' data.


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = ref_split(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = ref_split(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = ref_split(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# Helpers.


def entries(size: int) -> list[bytes]:
    """Distinct leaf data, so that no proof for one leaf happens to prove another."""
    return [b"entry %d" % i for i in range(size)]


def tree_of(data: Iterable[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for item in data:
        tree.append(leaf_hash(item))
    return tree


def flip(digest: bytes, bit: int) -> bytes:
    position = (bit // 8) % len(digest)
    changed = bytearray(digest)
    changed[position] ^= 1 << (bit % 8)
    return bytes(changed)


def is_complete(key: NodeKey, size: int) -> bool:
    level, index = key
    return (index + 1) << level <= size


class CountingSource:
    """A node source for the cost test: any hash will do, only the lookups matter."""

    def __init__(self) -> None:
        self.batches = 0
        self.keys: list[NodeKey] = []

    def node(self, level: int, index: int) -> bytes:
        raise AssertionError("fetch() must use the batch method")

    def nodes(self, keys: Iterable[NodeKey]) -> dict[NodeKey, bytes]:
        self.batches += 1
        wanted = list(keys)
        self.keys.extend(wanted)
        return {key: hashlib.sha256(b"%d/%d" % key).digest() for key in wanted}


class SingleNodeSource:
    """A NodeSource without a batch method, over a MemoryTree, counting lookups."""

    def __init__(self, tree: MemoryTree) -> None:
        self.tree = tree
        self.lookups = 0

    def node(self, level: int, index: int) -> bytes:
        self.lookups += 1
        return self.tree.node(level, index)


sizes = st.integers(min_value=1, max_value=MAX_SIZE)


# spec/ledger.md test vectors.


def vector_tree() -> MemoryTree:
    return tree_of(bytes.fromhex(leaf) for leaf in VECTOR_LEAVES)


def test_empty_root_is_the_hash_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == VECTOR_ROOTS[0]
    assert MemoryTree().root() == EMPTY_ROOT
    assert root_keys(0) == set()


@pytest.mark.parametrize("size", range(9))
def test_roots_match_the_spec_vectors(size: int) -> None:
    assert vector_tree().root(size).hex() == VECTOR_ROOTS[size]


def test_inclusion_proof_matches_the_spec_vector() -> None:
    tree = vector_tree()
    proof = tree.inclusion_proof(5, 8)
    assert proof_to_hex(proof) == VECTOR_INCLUSION_5_IN_8
    leaf = leaf_hash(bytes.fromhex(VECTOR_LEAVES[5]))
    assert verify_inclusion(5, 8, leaf, proof_from_hex(VECTOR_INCLUSION_5_IN_8), hash_from_hex(VECTOR_ROOTS[8]))


def test_consistency_proof_matches_the_spec_vector() -> None:
    proof = vector_tree().consistency_proof(6, 8)
    assert proof_to_hex(proof) == VECTOR_CONSISTENCY_6_TO_8
    first_root, second_root = hash_from_hex(VECTOR_ROOTS[6]), hash_from_hex(VECTOR_ROOTS[8])
    assert verify_consistency(6, 8, first_root, second_root, proof_from_hex(VECTOR_CONSISTENCY_6_TO_8))


def test_reference_agrees_with_the_spec_vectors() -> None:
    data = [bytes.fromhex(leaf) for leaf in VECTOR_LEAVES]
    assert [ref_mth(data[:n]).hex() for n in range(9)] == VECTOR_ROOTS
    assert proof_to_hex(ref_path(5, data)) == VECTOR_INCLUSION_5_IN_8
    assert proof_to_hex(ref_proof(6, data)) == VECTOR_CONSISTENCY_6_TO_8


# Properties against the reference.


@PROPERTY
@given(size=st.integers(min_value=0, max_value=MAX_SIZE))
def test_root_equals_the_reference(size: int) -> None:
    assert tree_of(entries(size)).root() == ref_mth(entries(size))


@PROPERTY
@given(size=st.integers(min_value=0, max_value=MAX_SIZE))
def test_the_root_of_leaf_hashes_in_one_pass_equals_the_reference(size: int) -> None:
    assert merkle.root_of([leaf_hash(entry) for entry in entries(size)]) == ref_mth(entries(size))


@PROPERTY
@given(size=sizes, data=st.data())
def test_inclusion_proof_equals_the_reference_and_verifies(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    leaves = entries(size)
    tree = tree_of(leaves)
    proof = tree.inclusion_proof(index)
    assert proof == ref_path(index, leaves)
    assert verify_inclusion(index, size, leaf_hash(leaves[index]), proof, tree.root())


@PROPERTY
@given(second=sizes, data=st.data())
def test_consistency_proof_equals_the_reference_and_verifies(second: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=1, max_value=second), label="first")
    leaves = entries(second)
    tree = tree_of(leaves)
    proof = tree.consistency_proof(first)
    assert proof == ref_proof(first, leaves)
    assert verify_consistency(first, second, tree.root(first), tree.root(), proof)


def test_every_small_proof_equals_the_reference() -> None:
    leaves = entries(40)
    tree = tree_of(leaves)
    for second in range(1, 41):
        assert tree.root(second) == ref_mth(leaves[:second])
        for index in range(second):
            assert tree.inclusion_proof(index, second) == ref_path(index, leaves[:second])
        for first in range(1, second + 1):
            assert tree.consistency_proof(first, second) == ref_proof(first, leaves[:second])


@PROPERTY
@given(size=sizes, data=st.data())
def test_only_complete_subtrees_are_ever_read(size: int, data: st.DataObject) -> None:
    """The ledger stores complete subtrees only, so no key may name an incomplete one."""
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    first = data.draw(st.integers(min_value=1, max_value=size), label="first")
    for key in root_keys(size) | inclusion_keys(index, size) | consistency_keys(first, size):
        assert is_complete(key, size), key


# Tampering.


def inclusion_tamperings(
    index: int, size: int, leaf: bytes, proof: list[bytes], tree_root: bytes, bit: int
) -> Iterable[tuple[str, tuple[int, int, bytes, list[bytes], bytes]]]:
    for position in range(len(proof)):
        changed = list(proof)
        changed[position] = flip(changed[position], bit)
        yield f"flipped element {position}", (index, size, leaf, changed, tree_root)
        yield f"dropped element {position}", (index, size, leaf, proof[:position] + proof[position + 1 :], tree_root)
        yield (
            f"31-byte element {position}",
            (index, size, leaf, [*proof[:position], proof[position][:31], *proof[position + 1 :]], tree_root),
        )
    yield "appended element", (index, size, leaf, [*proof, tree_root], tree_root)
    yield "flipped leaf", (index, size, flip(leaf, bit), proof, tree_root)
    yield "flipped root", (index, size, leaf, proof, flip(tree_root, bit))
    yield "31-byte leaf", (index, size, leaf[:31], proof, tree_root)
    yield "33-byte root", (index, size, leaf, proof, tree_root + b"\x00")
    yield "index == size", (size, size, leaf, proof, tree_root)
    yield "negative index", (-1, size, leaf, proof, tree_root)


@PROPERTY
@given(size=sizes, data=st.data())
def test_tampered_inclusion_proofs_are_rejected(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
    leaves = entries(size)
    tree = tree_of(leaves)
    leaf, proof, tree_root = leaf_hash(leaves[index]), tree.inclusion_proof(index), tree.root()
    for what, args in inclusion_tamperings(index, size, leaf, proof, tree_root, bit):
        assert not verify_inclusion(*args), what
    if size > 1:
        other = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda i: i != index), label="other")
        assert not verify_inclusion(other, size, leaf, proof, tree_root), "wrong index"
    other_size = data.draw(st.integers(min_value=index + 1, max_value=MAX_SIZE + 1), label="other size")
    if other_size != size:
        other_root = tree_of(entries(other_size)).root()
        assert not verify_inclusion(index, other_size, leaf, proof, other_root), "wrong size"


def consistency_tamperings(
    first: int, second: int, roots: tuple[bytes, bytes], proof: list[bytes], bit: int
) -> Iterable[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    first_root, second_root = roots
    for position in range(len(proof)):
        changed = list(proof)
        changed[position] = flip(changed[position], bit)
        yield f"flipped element {position}", (first, second, first_root, second_root, changed)
        yield f"dropped element {position}", (first, second, *roots, proof[:position] + proof[position + 1 :])
        yield (
            f"31-byte element {position}",
            (first, second, *roots, [*proof[:position], proof[position][:31], *proof[position + 1 :]]),
        )
    yield "appended element", (first, second, *roots, [*proof, second_root])
    yield "flipped first root", (first, second, flip(first_root, bit), second_root, proof)
    yield "flipped second root", (first, second, first_root, flip(second_root, bit), proof)
    yield "swapped roots", (first, second, second_root, first_root, proof)
    yield "31-byte first root", (first, second, first_root[:31], second_root, proof)
    yield "from size 0", (0, second, EMPTY_ROOT, second_root, proof)
    yield "first > second", (second, first, second_root, first_root, proof)


@PROPERTY
@given(second=st.integers(min_value=2, max_value=MAX_SIZE), data=st.data())
def test_tampered_consistency_proofs_are_rejected(second: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=1, max_value=second - 1), label="first")
    bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
    tree = tree_of(entries(second))
    roots, proof = (tree.root(first), tree.root()), tree.consistency_proof(first)
    for what, args in consistency_tamperings(first, second, roots, proof, bit):
        assert not verify_consistency(*args), what
    other_first = data.draw(st.integers(min_value=1, max_value=second - 1), label="other first")
    if other_first != first:
        assert not verify_consistency(other_first, second, tree.root(other_first), tree.root(), proof), "wrong first"
    other_second = data.draw(st.integers(min_value=first + 1, max_value=MAX_SIZE + 1), label="other second")
    if other_second != second:
        other_root = tree_of(entries(other_second)).root()
        assert not verify_consistency(first, other_second, roots[0], other_root, proof), "wrong second"


def test_consistency_between_equal_sizes_needs_an_empty_proof_and_equal_roots() -> None:
    tree = tree_of(entries(5))
    assert tree.consistency_proof(5) == []
    assert verify_consistency(5, 5, tree.root(), tree.root(), [])
    assert not verify_consistency(5, 5, tree.root(), tree.root(4), [])
    assert not verify_consistency(5, 5, tree.root(), tree.root(), [tree.root()])


def test_consistency_from_size_zero_is_rejected() -> None:
    tree = tree_of(entries(3))
    assert not verify_consistency(0, 3, EMPTY_ROOT, tree.root(), [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ValueError, match="0 < first <= second"):
        consistency_keys(0, 3)


def test_an_interior_node_passed_off_as_a_leaf_with_a_short_proof_is_rejected() -> None:
    """The hashes combine to the root; only the proof's length for the claimed position gives it away."""
    tree = tree_of(entries(4))
    assert node_hash(tree.node(1, 0), tree.node(1, 1)) == tree.root()
    assert not verify_inclusion(0, 4, tree.node(1, 0), [tree.node(1, 1)], tree.root())


def test_a_root_passed_off_as_a_smaller_trees_with_a_short_proof_is_rejected() -> None:
    """PROOF(4, D[8]) = [MTH(D[4:8])] also folds to both roots when size 4's root is claimed for size 2."""
    tree = tree_of(entries(8))
    proof = tree.consistency_proof(4)
    assert proof == [tree.node(2, 1)]
    assert verify_consistency(4, 8, tree.root(4), tree.root(), proof)
    assert not verify_consistency(2, 8, tree.root(4), tree.root(), proof)


def test_a_tree_of_one_leaf_proves_it_with_an_empty_path() -> None:
    leaf = leaf_hash(b"only")
    assert verify_inclusion(0, 1, leaf, [], leaf)
    assert not verify_inclusion(0, 1, leaf, [leaf], leaf)
    assert not verify_inclusion(0, 0, leaf, [], EMPTY_ROOT)


# Cost: proofs at a million entries read O(log n) nodes in one batch.

MILLION = 1_000_000
WORST = 2**20 - 1  # every bit set: the most pieces on the right border


type Compute = Callable[[Mapping[NodeKey, bytes]], object]


def cost_cases(size: int) -> list[tuple[set[NodeKey], Compute]]:
    cases: list[tuple[set[NodeKey], Compute]] = [(root_keys(size), partial(root, size))]
    for index in [0, 1, 2**19 - 1, 2**19, size // 2 + 1, size - 2, size - 1]:
        cases.append((inclusion_keys(index, size), partial(inclusion_proof, index, size)))
    for first in [1, 3, 2**19, 2**19 + 1, 777_777, size - 1]:
        cases.append((consistency_keys(first, size), partial(consistency_proof, first, size)))
    return cases


@pytest.mark.parametrize("size", [MILLION, WORST])
def test_proofs_over_a_million_entries_read_logarithmically_many_nodes(size: int) -> None:
    bound = 2 * math.log2(size) + 2
    for keys, compute in cost_cases(size):
        source = CountingSource()
        compute(fetch(source, keys))
        assert source.batches == 1
        assert len(source.keys) == len(keys) <= bound
        assert all(is_complete(key, size) for key in keys)


def test_proofs_over_a_real_tree_read_logarithmically_many_nodes() -> None:
    size = 5000
    tree = tree_of(entries(size))
    bound = 2 * math.log2(size) + 2
    for index in [0, 1234, 4095, 4096, size - 1]:
        source = SingleNodeSource(tree)
        proof = inclusion_proof(index, size, fetch(source, inclusion_keys(index, size)))
        assert source.lookups <= bound
        assert verify_inclusion(index, size, leaf_hash(entries(size)[index]), proof, tree.root())
    for first in [1, 1000, 4096, size - 1]:
        source = SingleNodeSource(tree)
        proof = consistency_proof(first, size, fetch(source, consistency_keys(first, size)))
        assert source.lookups <= bound
        assert verify_consistency(first, size, tree.root(first), tree.root(), proof)


# Appending.


def test_appending_a_leaf_completes_the_subtrees_it_closes() -> None:
    leaves = [leaf_hash(item) for item in entries(4)]
    nodes: dict[NodeKey, bytes] = {}
    for index, leaf in enumerate(leaves):
        nodes.update(((level, i), digest) for level, i, digest in new_nodes(index, leaf, nodes))
    assert new_node_keys(3) == [(0, 2), (1, 0)]
    assert [(level, i) for level, i, _ in new_nodes(3, leaves[3], nodes)] == [(0, 3), (1, 1), (2, 0)]
    assert nodes[(1, 1)] == node_hash(leaves[2], leaves[3])
    assert nodes[(2, 0)] == ref_mth(entries(4))
    assert new_node_keys(4) == []


@PROPERTY
@given(batches=st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_batch_appends_from_the_frontier_equal_one_by_one_appends(batches: list[int]) -> None:
    total = sum(batches)
    leaves = [leaf_hash(item) for item in entries(total)]
    batched, single = MemoryTree(), tree_of(entries(total))
    offset = 0
    for count in batches:
        batched.extend(leaves[offset : offset + count])
        offset += count
    assert batched.size == single.size == total
    for size in {0, total // 3, total}:
        assert batched.root(size) == single.root(size) == ref_mth(entries(size))
    assert all(batched.node(level, i) == single.node(level, i) for level, i in root_keys(total))


def test_a_batch_needs_only_the_frontier() -> None:
    leaves = [leaf_hash(item) for item in entries(13)]
    tree = tree_of(entries(6))
    frontier = tree.nodes(root_keys(6))
    created = append_nodes(6, leaves[6:], frontier)
    assert {(level, i) for level, i, _ in created} >= {(0, 12), (1, 5), (2, 2), (3, 0)}
    assert dict(((level, i), h) for level, i, h in created)[(3, 0)] == ref_mth(entries(8))


def test_memory_tree_refuses_anything_but_leaf_hashes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MemoryTree().append(b"raw entry data")


# Errors a caller can make.


def test_missing_nodes_are_named() -> None:
    with pytest.raises(MissingNodeError, match=r"level 2, index 0"):
        root(5, {(0, 4): leaf_hash(b"4")})
    with pytest.raises(MissingNodeError):
        MemoryTree().node(0, -1)


def test_requests_outside_the_tree_are_refused() -> None:
    tree = tree_of(entries(3))
    with pytest.raises(ValueError, match="outside a tree of size 3"):
        inclusion_keys(3, 3)
    with pytest.raises(ValueError, match="0 < first <= second"):
        consistency_keys(4, 3)
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        tree.root(4)
    with pytest.raises(ValueError, match="negative"):
        root_keys(-1)


def test_hex_hashes_are_strict() -> None:
    digest = leaf_hash(b"x")
    assert hash_from_hex(digest.hex()) == digest
    for bad in [digest.hex().upper(), digest.hex()[:62], digest.hex() + "00", " " + digest.hex()[1:], ""]:
        with pytest.raises(ValueError, match="64 lowercase hex digits"):
            hash_from_hex(bad)


def test_fetch_uses_single_lookups_when_a_source_has_no_batch_method() -> None:
    tree = tree_of(entries(7))
    source = SingleNodeSource(tree)
    assert root(7, fetch(source, root_keys(7))) == tree.root()
    assert source.lookups == 3  # 7 = 4 + 2 + 1
