"""RFC 6962 Merkle trees: published Certificate Transparency vectors, then properties over many sizes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.merkle import (
    MerkleTree,
    inclusion_path,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_path,
    verify_inclusion,
)

# The eight leaves and the roots of the trees over the first 1..8 of them, as published with Certificate
# Transparency's reference implementation and used by google/trillian's merkle/log_verifier_test.go.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (0-based leaf index, tree size, audit path) from the same Trillian test file (it counts leaves from 1).
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def reference_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH written as the RFC writes it (recursion on the largest power of two below n)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])).digest()


def reference_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]), as the RFC writes it."""
    n = len(leaves)
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if index < k:
        return [*reference_path(index, leaves[:k]), reference_root(leaves[k:])]
    return [*reference_path(index - k, leaves[k:]), reference_root(leaves[:k])]


def receipts(n: int) -> list[bytes]:
    return [hashlib.sha256(f"receipt {i}".encode()).digest() for i in range(n)]


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_certificate_transparency_vectors(size: int) -> None:
    assert merkle_root(CT_LEAVES[:size]).hex() == CT_ROOTS[size - 1]


def test_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle_root([]).hex() == EMPTY_ROOT


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"\x00").hex() == CT_INCLUSION[0][2][0]  # the published leaf hash of d1 = 0x00
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_inclusion_paths_match_certificate_transparency_vectors(index: int, size: int, path: list[str]) -> None:
    leaves = CT_LEAVES[:size]
    assert [p.hex() for p in inclusion_path(leaves, index)] == path
    root = bytes.fromhex(CT_ROOTS[size - 1])
    proof = [bytes.fromhex(p) for p in path]
    assert verify_inclusion(leaves[index], index, size, proof, root)


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_mutated_vectors_are_rejected(index: int, size: int, path: list[str]) -> None:
    # The mutations google/trillian's verifierCheck applies to each vector.
    leaf = CT_LEAVES[index]
    root = bytes.fromhex(CT_ROOTS[size - 1])
    proof = [bytes.fromhex(p) for p in path]
    empty = bytes.fromhex(EMPTY_ROOT)
    assert not verify_inclusion(leaf, index - 1, size, proof, root)
    assert not verify_inclusion(leaf, index + 1, size, proof, root)
    assert not verify_inclusion(leaf, index ^ 2, size, proof, root)
    assert not verify_inclusion(leaf, index, size * 2, proof, root)
    assert not verify_inclusion(leaf, index, size // 2, proof, root)
    assert not verify_inclusion(b"WrongLeaf", index, size, proof, root)
    assert not verify_inclusion(leaf, index, size, proof, empty)
    for i in range(len(proof)):
        assert not verify_inclusion(leaf, index, size, [*proof[:i], empty, *proof[i + 1 :]], root)
    assert not verify_inclusion(leaf, index, size, [*proof, b""], root)
    assert not verify_inclusion(leaf, index, size, [*proof, root], root)
    assert not verify_inclusion(leaf, index, size, proof[:-1], root)
    assert not verify_inclusion(leaf, index, size, [b"", *proof], root)
    assert not verify_inclusion(leaf, index, size, [root, *proof], root)


def test_every_index_of_every_size_up_to_70_verifies() -> None:
    for size in range(1, 71):
        leaves = receipts(size)
        tree = MerkleTree(leaves)
        assert tree.size == size
        assert tree.root == reference_root(leaves)
        for index in range(size):
            path = tree.path(index)
            assert path == reference_path(index, leaves)
            assert len(path) <= (size - 1).bit_length()
            assert verify_inclusion(leaves[index], index, size, path, tree.root)


@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, n - 1))))
def test_a_wrong_leaf_index_or_root_does_not_verify(case: tuple[int, int, int]) -> None:
    size, index, other = case
    leaves = receipts(size)
    tree = MerkleTree(leaves)
    path = tree.path(index)
    assert verify_inclusion(leaves[index], index, size, path, tree.root)
    if other != index:
        assert not verify_inclusion(leaves[other], index, size, path, tree.root)  # another receipt
        assert not verify_inclusion(leaves[index], other, size, path, tree.root)  # another position
    assert not verify_inclusion(hashlib.sha256(b"forged").digest(), index, size, path, tree.root)
    assert not verify_inclusion(leaves[index], index, size, path, MerkleTree(receipts(size + 1)).root)
    assert not verify_inclusion(leaves[index], index, size, path, leaves[index])  # unprefixed digest as root
    assert not verify_inclusion(leaves[index], size, size, path, tree.root)  # index past the end
    assert not verify_inclusion(leaves[index], -1, size, path, tree.root)


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=40), st.data())
def test_matches_the_rfc_recursion_for_arbitrary_leaves(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    assert merkle_root(leaves) == reference_root(leaves)
    assert inclusion_path(leaves, index) == reference_path(index, leaves)
    assert root_from_path(leaves[index], index, len(leaves), inclusion_path(leaves, index)) == merkle_root(leaves)


def test_a_leaf_hash_cannot_pass_as_a_one_leaf_tree_of_two() -> None:
    # Second-preimage attempt: present the concatenation of two leaf hashes as a single leaf.
    leaves = receipts(2)
    forged = leaf_hash(leaves[0]) + leaf_hash(leaves[1])
    assert merkle_root([forged]) != merkle_root(leaves)


def test_path_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        inclusion_path(receipts(3), 3)
    with pytest.raises(IndexError):
        MerkleTree([]).path(0)
    assert not verify_inclusion(b"x", 0, 0, [], merkle_root([]))


def test_the_root_alone_does_not_fix_the_tree_size() -> None:
    # Documented limitation shared with RFC 6962/9162: the size must be signed along with the root.
    leaves = receipts(4)
    tree = MerkleTree(leaves)
    assert verify_inclusion(leaves[0], 0, 3, tree.path(0), tree.root)
