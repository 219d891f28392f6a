"""The ledger's RFC 9162 Merkle tree: roots, proofs and their verification.

spec/ledger.md ("Merkle tree and proofs") fixes the tree as RFC 9162's
(section 2.1): leaves are ``SHA-256(0x00 || data)``, nodes
``SHA-256(0x01 || left || right)``, split at the largest power of two below n.

Storage model. The ledger stores the hash of every *complete aligned subtree*:
node ``(level, index)`` covers leaves ``[index * 2**level, (index + 1) * 2**level)``
and level 0 holds the leaf hashes. Every range that RFC 9162's recursive
definitions hash (MTH in section 2.1.1, PATH in 2.1.3.1, SUBPROOF in 2.1.4.1)
starts at a multiple of a power of two at least its length. Such a range is
either one complete node, or the complete nodes given by the binary digits of
its length, folded right to left. A root or a proof therefore needs O(log n)
stored nodes and never a scan of the leaves.

Reading takes two steps so that a database answers in one query:
``inclusion_keys(index, size)`` names the nodes needed, the caller fetches them
(``fetch(source, keys)`` or its own query), and ``inclusion_proof(index, size,
nodes)`` computes the proof from that mapping. Roots and consistency proofs
work the same way.

Pure module (standard library only) so auditors can run it offline.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = HASH(), RFC 9162 section 2.1.1

type NodeKey = tuple[int, int]  # (level, index) of a complete aligned subtree
type NewNode = tuple[int, int, bytes]  # (level, index, hash)
type _Range = tuple[int, int]  # leaves [start, end)

_HEX_HASH = re.compile(r"[0-9a-f]{64}")


class MissingNodeError(LookupError):
    """A computation was handed a mapping without a node its ``*_keys`` function named."""

    def __init__(self, key: NodeKey) -> None:
        level, index = key
        super().__init__(
            f"Merkle node (level {level}, index {index}) was not supplied; "
            "fetch every key that the matching *_keys() function returns"
        )
        self.key = key


class NodeSource(Protocol):
    """Where complete subtree hashes are stored (the ledger's table, or a MemoryTree)."""

    def node(self, level: int, index: int) -> bytes:
        """The hash of leaves [index * 2**level, (index + 1) * 2**level), a complete subtree."""
        ...


@runtime_checkable
class BatchNodeSource(NodeSource, Protocol):
    """A NodeSource that can return many nodes in one round trip (one SQL query)."""

    def nodes(self, keys: Iterable[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The hashes of the given complete subtrees, keyed by (level, index)."""
        ...


def fetch(source: NodeSource, keys: Iterable[NodeKey]) -> Mapping[NodeKey, bytes]:
    """Look ``keys`` up in ``source``, in one batch when the source supports it."""
    if isinstance(source, BatchNodeSource):
        return source.nodes(keys)
    return {key: source.node(*key) for key in keys}


# Hashing (RFC 9162 section 2.1.1).


def leaf_hash(data: bytes) -> bytes:
    """MTH({d(0)}) = SHA-256(0x00 || d(0)): the hash of one entry's leaf data."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# Ranges of RFC 9162's recursion and the stored nodes that make them up.


def _split(length: int) -> int:
    """k, the largest power of two smaller than ``length`` (> 1), where RFC 9162 section 2.1.1 splits."""
    return 1 << ((length - 1).bit_length() - 1)


def _range_keys(start: int, end: int) -> list[NodeKey]:
    """The complete aligned subtrees covering [start, end), left to right.

    Holds for the ranges of the RFC's recursion, which start at a multiple of a
    power of two at least ``end - start``: each piece is then aligned.
    """
    keys: list[NodeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def _lookup(nodes: Mapping[NodeKey, bytes], key: NodeKey) -> bytes:
    try:
        return nodes[key]
    except KeyError:
        raise MissingNodeError(key) from None


def _range_hash(start: int, end: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """MTH(D[start:end]): the first piece is D[start:start+k], the rest recurses, so fold right to left."""
    keys = _range_keys(start, end)
    digest = _lookup(nodes, keys[-1])
    for key in reversed(keys[:-1]):
        digest = node_hash(_lookup(nodes, key), digest)
    return digest


def _keys_of(ranges: Iterable[_Range]) -> set[NodeKey]:
    return {key for start, end in ranges for key in _range_keys(start, end)}


def _hashes_of(ranges: Iterable[_Range], nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    return [_range_hash(start, end, nodes) for start, end in ranges]


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"tree size {size} is negative")


def _inclusion_ranges(index: int, size: int) -> list[_Range]:
    """The subtrees whose hashes form PATH(index, D[size]) (RFC 9162 section 2.1.3.1), leaf end first."""
    _check_size(size)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    path: list[_Range] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _split(end - start)
        if index < mid:
            path.append((mid, end))
            end = mid
        else:
            path.append((start, mid))
            start = mid
    path.reverse()  # the RFC lists the deepest sibling first
    return path


def _consistency_ranges(first: int, second: int) -> list[_Range]:
    """The subtrees whose hashes form PROOF(first, D[second]) (RFC 9162 section 2.1.4.1), deepest first.

    Walks SUBPROOF(m, D[n], b) with m = first - start and n = end - start.
    """
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}: need 0 < first <= second")
    proof: list[_Range] = []
    start, end, whole = 0, second, True
    while first != end:  # m != n
        mid = start + _split(end - start)
        if first <= mid:
            proof.append((mid, end))
            end = mid
        else:
            proof.append((start, mid))
            start, whole = mid, False
    if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        proof.append((start, end))
    proof.reverse()
    return proof


# Roots and proofs: first the keys to fetch, then the computation from them.


def root_keys(size: int) -> set[NodeKey]:
    """The nodes ``root(size, nodes)`` reads: one per set bit of ``size``."""
    _check_size(size)
    return _keys_of([(0, size)]) if size else set()


def root(size: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """MTH(D[size]) (RFC 9162 section 2.1.1) from the nodes ``root_keys(size)`` names."""
    _check_size(size)
    return _range_hash(0, size, nodes) if size else EMPTY_ROOT


def root_of(leaves: Iterable[bytes]) -> bytes:
    """MTH of the leaf hashes, in one pass keeping a node per level (RFC 9162 section 2.1.1): for a root alone,
    without ``append_nodes``'s record of every complete subtree, a third of the work."""
    stack: list[tuple[int, bytes]] = []  # (height, hash) of complete subtrees, strictly decreasing heights
    for leaf in leaves:
        height, digest = 0, leaf
        while stack and stack[-1][0] == height:
            digest = node_hash(stack.pop()[1], digest)
            height += 1
        stack.append((height, digest))
    if not stack:
        return EMPTY_ROOT
    digest = stack.pop()[1]
    while stack:  # the incomplete right edge: each smaller subtree is the right child of the one before it
        digest = node_hash(stack.pop()[1], digest)
    return digest


def inclusion_keys(index: int, size: int) -> set[NodeKey]:
    """The nodes ``inclusion_proof(index, size, nodes)`` reads, at most about 2 * log2(size)."""
    return _keys_of(_inclusion_ranges(index, size))


def inclusion_proof(index: int, size: int, nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 section 2.1.3.1) from the nodes ``inclusion_keys`` names."""
    return _hashes_of(_inclusion_ranges(index, size), nodes)


def consistency_keys(first: int, second: int) -> set[NodeKey]:
    """The nodes ``consistency_proof(first, second, nodes)`` reads, at most about 2 * log2(second)."""
    return _keys_of(_consistency_ranges(first, second))


def consistency_proof(first: int, second: int, nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """PROOF(first, D[second]) (RFC 9162 section 2.1.4.1); empty when first == second."""
    return _hashes_of(_consistency_ranges(first, second), nodes)


# Appending.


def new_node_keys(index: int) -> list[NodeKey]:
    """The left siblings that appending leaf ``index`` pairs with, lowest first.

    One per trailing 1 bit of ``index``. For a batch starting at leaf ``start``,
    every sibling not created within the batch is among ``root_keys(start)``.
    """
    if index < 0:
        raise ValueError(f"leaf index {index} is negative")
    keys: list[NodeKey] = []
    level = 0
    while index & 1:
        keys.append((level, index - 1))
        index >>= 1
        level += 1
    return keys


def new_nodes(index: int, leaf: bytes, nodes: Mapping[NodeKey, bytes]) -> list[NewNode]:
    """The complete subtrees that appending leaf hash ``leaf`` at ``index`` completes, leaf first.

    ``nodes`` holds the siblings ``new_node_keys(index)`` names.
    """
    created: list[NewNode] = [(0, index, leaf)]
    digest = leaf
    for level, sibling in new_node_keys(index):
        digest = node_hash(_lookup(nodes, (level, sibling)), digest)
        created.append((level + 1, sibling >> 1, digest))
    return created


def append_nodes(start: int, leaves: Sequence[bytes], frontier: Mapping[NodeKey, bytes]) -> list[NewNode]:
    """Every complete subtree completed by appending ``leaves`` (leaf hashes) at ``start``, ``start + 1``, ...

    ``frontier`` holds the nodes ``root_keys(start)`` names: a sibling that a new
    leaf pairs with is either created earlier in the batch or complete at size
    ``start`` with an incomplete parent, which is exactly a node of that root.
    """
    known = dict(frontier)
    created: list[NewNode] = []
    for offset, leaf in enumerate(leaves):
        completed = new_nodes(start + offset, leaf, known)
        known.update(((level, index), digest) for level, index, digest in completed)
        created.extend(completed)
    return created


# Verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2).


def _are_hashes(*hashes: bytes) -> bool:
    return all(len(digest) == HASH_SIZE for digest in hashes)


def _inclusion_length(index: int, size: int) -> int:
    """len(PATH(index, D[size])), from the shape of the tree alone.

    Below the level where the paths to ``index`` and to the last leaf part,
    ``index`` sits in a complete subtree: one sibling per level. Above it, its
    ancestors lie on the right border, which has a left sibling per set bit.
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(first: int, second: int) -> int:
    """len(PROOF(first, D[second])) for 0 < first < second.

    The path of leaf ``first - 1`` in the second tree, less the levels inside
    the largest complete subtree ending at ``first`` (its hash is one element,
    or the first root itself when ``first`` is a power of two).
    """
    inner = ((first - 1) ^ (second - 1)).bit_length()
    border = ((first - 1) >> inner).bit_count()
    shift = (first & -first).bit_length() - 1  # trailing zero bits of first
    seed = 0 if first == 1 << shift else 1
    return seed + inner - shift + border


def _shift_to_odd(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift fn and sn equally until LSB(fn) is set or fn is 0."""
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` with ``root_hash``.

    RFC 9162 section 2.1.3.2, step by step, after spec/ledger.md's checks:
    every hash is 32 bytes and the proof has the length the tree's shape implies.
    """
    if not 0 <= index < size or not _are_hashes(leaf, root_hash, *proof):
        return False
    if len(proof) != _inclusion_length(index, size):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_to_odd(fn, sn)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root_hash


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows the tree of ``first`` leaves is a prefix of the one of ``second`` leaves.

    RFC 9162 section 2.1.4.2, step by step. spec/ledger.md rejects proofs from
    size 0; first == second holds iff the proof is empty and the roots equal.
    """
    if not 0 < first <= second or not _are_hashes(first_root, second_root, *proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if not proof or len(proof) != _consistency_length(first, second):
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # the first tree is a complete subtree of the second: its root starts the walk
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            fn, sn = _shift_to_odd(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root


# Hex, as spec/ledger.md writes hashes in JSON.


def hash_from_hex(text: str) -> bytes:
    """A 32-byte hash from 64 lowercase hex digits; ValueError for anything else."""
    if not _HEX_HASH.fullmatch(text):
        raise ValueError(f"{text!r} is not a hash: expected 64 lowercase hex digits")
    return bytes.fromhex(text)


def proof_to_hex(proof: Iterable[bytes]) -> list[str]:
    """A proof as spec/ledger.md returns it: a list of lowercase hex hashes."""
    return [digest.hex() for digest in proof]


def proof_from_hex(items: Iterable[str]) -> list[bytes]:
    """The inverse of ``proof_to_hex``; ValueError on any item that is not a hex hash."""
    return [hash_from_hex(item) for item in items]


class MemoryTree:
    """An RFC 9162 tree held in memory, for tests and offline verification.

    It stores complete subtrees as the ledger's table does and answers through
    the same key and compute functions, so both exercise the same code.
    """

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = []

    @property
    def size(self) -> int:
        return len(self._levels[0]) if self._levels else 0

    def node(self, level: int, index: int) -> bytes:
        # Explicit bounds: a negative index would otherwise wrap around the list.
        if 0 <= level < len(self._levels) and 0 <= index < len(self._levels[level]):
            return self._levels[level][index]
        raise MissingNodeError((level, index))

    def nodes(self, keys: Iterable[NodeKey]) -> dict[NodeKey, bytes]:
        return {key: self.node(*key) for key in keys}

    def append(self, leaf: bytes) -> int:
        """Append one leaf hash; return its index."""
        index = self.size
        self._store(new_nodes(index, _checked_leaf(leaf), self.nodes(new_node_keys(index))))
        return index

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append leaf hashes as the sequencer does a batch: from the frontier, in memory."""
        batch = [_checked_leaf(leaf) for leaf in leaves]
        start = self.size
        self._store(append_nodes(start, batch, self.nodes(root_keys(start))))

    def _store(self, created: Iterable[NewNode]) -> None:
        # Nodes of one level complete left to right, so each lands at its own index.
        for level, _index, digest in created:
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(digest)

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        size = self._size(size)
        return root(size, self.nodes(root_keys(size)))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self._size(size)
        return inclusion_proof(index, size, self.nodes(inclusion_keys(index, size)))

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        second = self._size(second)
        return consistency_proof(first, second, self.nodes(consistency_keys(first, second)))


def _checked_leaf(leaf: bytes) -> bytes:
    if len(leaf) != HASH_SIZE:
        raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf)}: pass leaf_hash(data)")
    return leaf
