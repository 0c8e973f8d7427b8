"""A Merkle tree over receipts, so that one RFC 3161 timestamp covers a whole run.

The tree is the Merkle Tree Hash of RFC 6962 §2.1 (the tree Certificate Transparency logs use):

- leaf hash  ``sha256(0x00 || d)``, node hash ``sha256(0x01 || left || right)`` (the prefixes keep a leaf from
  ever being passed off as a node: second-preimage resistance);
- for n > 1 leaves, k is the largest power of two smaller than n, and the root is the node of the tree over
  the first k leaves and the tree over the remaining n - k; the empty tree's hash is ``sha256()``.

The leaves we feed it are the 32-byte SHA-256 digests of canonical receipts, but any byte strings work, which
is what lets the tests use the published Certificate Transparency vectors. The timestamp signs the root; each
receipt keeps its index, the tree size and its audit path (RFC 6962 §2.1.1), and verifies alone with
:func:`verify_inclusion`, which follows the algorithm of RFC 9162 §2.1.3.2.

The root fixes the leaves and their order, and a path fixes its leaf's index, but the root alone does not fix
the tree size: a path for leaf 0 of 4 also checks as leaf 0 of 3. Certificate Transparency signs the size
with the root (the signed tree head, RFC 6962 §3.5); a batch record that needs its size to be evidence must
likewise sign or timestamp the size together with the root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 §2.1: MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1: SHA-256(0x01 || MTH(left) || MTH(right))."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


class MerkleTree:
    """A whole tree built once, so that the root and every audit path cost O(n) and O(log n) after that.

    The levels are built bottom-up, pairing neighbours and carrying a level's last, unpaired node up
    unchanged. That yields exactly RFC 6962's tree: splitting at the largest power of two below n means every
    left subtree is complete, so the only node without a sibling on a level is always the rightmost one, and
    the RFC hashes it in one level higher, as carrying it up does.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        level = [leaf_hash(d) for d in leaves]
        self._levels: list[list[bytes]] = [level]
        while len(level) > 1:
            paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                paired.append(level[-1])
            level = paired
            self._levels.append(level)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """MTH(D[n]); for the empty tree, SHA-256 of the empty string (RFC 6962 §2.1)."""
        if not self._levels[0]:
            return hashlib.sha256(b"").digest()
        return self._levels[-1][0]

    def path(self, index: int) -> list[bytes]:
        """The audit path PATH(index, D[n]) of RFC 6962 §2.1.1, from the leaf's sibling up to the root."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} is outside a tree of {self.size} leaves")
        path: list[bytes] = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index >>= 1
        return path


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle Tree Hash of ``leaves`` (raw leaf data, hashed here with the 0x00 prefix)."""
    return MerkleTree(leaves).root


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of ``leaves[index]``; build a :class:`MerkleTree` instead when you need many paths."""
    return MerkleTree(leaves).path(index)


def root_from_path(leaf_data: bytes, index: int, tree_size: int, path: Sequence[bytes]) -> bytes | None:
    """The root ``path`` leads to from ``leaf_data`` at ``index``, or None if the path cannot fit the tree.

    RFC 9162 §2.1.3.2: walk up with fn = index and sn = tree_size - 1; a path element is a left sibling when
    fn is odd or fn == sn (the rightmost node, which then skips the levels where it has no sibling).
    """
    if not 0 <= index < tree_size:
        return None
    fn, sn = index, tree_size - 1
    r = leaf_hash(leaf_data)
    for p in path:
        if sn == 0:
            return None  # more path than tree
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None  # path too short to reach the root
    return r


def verify_inclusion(leaf_data: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes) -> bool:
    """True when ``leaf_data`` is leaf ``index`` of the ``tree_size``-leaf tree whose root is ``root``."""
    computed = root_from_path(leaf_data, index, tree_size, path)
    return computed is not None and computed == bytes(root)
