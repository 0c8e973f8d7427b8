"""The archive signing key: creation, file modes, signing, verification, refusal of exposed keys."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver.errors import ArchiverError, SigningKeyError
from archiver.keys import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    create_key,
    load_signer,
    verify_signature,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_create_writes_a_private_key_only_its_owner_can_read(key_dir: Path, permissive_umask: None) -> None:
    # With umask 0, a chmod-after-write implementation would leave 0666 for a moment; ours never does.
    info = create_key(key_dir)
    assert info.private_key_path == key_dir / PRIVATE_KEY_NAME
    assert info.public_key_path == key_dir / PUBLIC_KEY_NAME
    assert mode_of(info.private_key_path) == 0o600
    assert mode_of(info.public_key_path) == 0o644
    assert info.private_key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert info.public_key_path.read_bytes() == info.public_pem
    assert info.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert sorted(p.name for p in key_dir.iterdir()) == [PRIVATE_KEY_NAME, PUBLIC_KEY_NAME]  # no temp files


def test_key_id_is_the_sha256_of_the_raw_public_key(key_dir: Path) -> None:
    info = create_key(key_dir)
    public = serialization.load_pem_public_key(info.public_pem)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert info.key_id == hashlib.sha256(raw).hexdigest()


def test_creating_twice_is_harmless_and_keeps_the_first_key(key_dir: Path) -> None:
    first = create_key(key_dir)
    private_before = first.private_key_path.read_bytes()
    second = create_key(key_dir)
    assert second == first
    assert first.private_key_path.read_bytes() == private_before


def test_only_a_private_key_is_an_error_that_says_how_to_recover(key_dir: Path) -> None:
    info = create_key(key_dir)
    info.public_key_path.unlink()
    with pytest.raises(SigningKeyError) as caught:
        create_key(key_dir)
    assert PUBLIC_KEY_NAME in caught.value.message
    assert caught.value.hint is not None and "openssl pkey" in caught.value.hint
    # The hint's command really restores the pair.
    subprocess.run(
        ["openssl", "pkey", "-in", str(info.private_key_path), "-pubout", "-out", str(info.public_key_path)],
        check=True,
        capture_output=True,
    )
    assert create_key(key_dir) == info


def test_only_a_public_key_is_an_error_and_no_new_key_is_made(key_dir: Path) -> None:
    info = create_key(key_dir)
    info.private_key_path.unlink()
    with pytest.raises(SigningKeyError) as caught:
        create_key(key_dir)
    assert "private key" in caught.value.message
    assert caught.value.hint is not None and "backup" in caught.value.hint
    assert not info.private_key_path.exists()
    assert info.public_key_path.read_bytes() == info.public_pem


def test_sign_and_verify(key_dir: Path) -> None:
    info = create_key(key_dir)
    signer = load_signer(key_dir)
    assert signer.key_id == info.key_id
    assert signer.public_pem == info.public_pem
    receipt = b'{"capture":"c1","sha256":"ab"}'
    signature = signer.sign(receipt)
    assert len(signature) == 64
    assert verify_signature(info.public_pem, receipt, signature)


def test_tampered_data_or_signature_does_not_verify(key_dir: Path) -> None:
    create_key(key_dir)
    signer = load_signer(key_dir)
    signature = signer.sign(b"receipt")
    assert not verify_signature(signer.public_pem, b"receipt!", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(signer.public_pem, b"receipt", flipped)
    assert not verify_signature(signer.public_pem, b"receipt", signature[:63])
    assert not verify_signature(signer.public_pem, b"receipt", b"")


def test_another_key_or_a_broken_key_does_not_verify_and_never_raises(key_dir: Path) -> None:
    create_key(key_dir)
    signature = load_signer(key_dir).sign(b"receipt")
    other = Ed25519PrivateKey.generate().public_key()
    other_pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert not verify_signature(other_pem, b"receipt", signature)
    assert not verify_signature(b"not a key", b"receipt", signature)
    assert not verify_signature(b"", b"receipt", signature)


def test_openssl_verifies_our_signatures(key_dir: Path, tmp_path: Path) -> None:
    # What a court's technical staff can run with the public key exported in a bundle.
    info = create_key(key_dir)
    data, sig = tmp_path / "receipt.json", tmp_path / "receipt.sig"
    data.write_bytes(b'{"a":1}')
    sig.write_bytes(load_signer(key_dir).sign(data.read_bytes()))
    command = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(info.public_key_path), "-rawin"]
    ok = subprocess.run([*command, "-in", str(data), "-sigfile", str(sig)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "Signature Verified Successfully" in ok.stdout
    data.write_bytes(b'{"a":2}')
    bad = subprocess.run([*command, "-in", str(data), "-sigfile", str(sig)], capture_output=True, text=True)
    assert bad.returncode != 0


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_private_key_others_can_access_is_refused(key_dir: Path, mode: int) -> None:
    info = create_key(key_dir)
    info.private_key_path.chmod(mode)
    with pytest.raises(SigningKeyError) as caught:
        load_signer(key_dir)
    assert "accessible to other users" in caught.value.message
    assert caught.value.hint is not None and "chmod 600" in caught.value.hint


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o700])
def test_owner_only_modes_are_accepted(key_dir: Path, mode: int) -> None:
    info = create_key(key_dir)
    info.private_key_path.chmod(mode)
    assert load_signer(key_dir).key_id == info.key_id


def test_a_public_key_from_another_pair_is_refused(key_dir: Path, tmp_path: Path) -> None:
    create_key(key_dir)
    other = create_key(tmp_path / "other")
    (key_dir / PUBLIC_KEY_NAME).write_bytes(other.public_pem)
    with pytest.raises(SigningKeyError, match="does not belong"):
        load_signer(key_dir)


def test_missing_key_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError) as caught:
        load_signer(tmp_path)
    assert caught.value.hint is not None and "archiver init" in caught.value.hint
    assert isinstance(caught.value, ArchiverError)


def test_a_garbled_private_key_is_a_key_error(key_dir: Path) -> None:
    info = create_key(key_dir)
    info.private_key_path.chmod(0o600)
    info.private_key_path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        load_signer(key_dir)


def test_signer_repr_shows_no_key_material(key_dir: Path) -> None:
    create_key(key_dir)
    signer = load_signer(key_dir)
    assert repr(signer) == f"Signer(key_id={signer.key_id!r})"
