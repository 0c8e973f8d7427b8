"""The archive signing key: one Ed25519 key pair that signs capture receipts and custody checkpoints.

The private key lives in ``archive-key.pem`` (unencrypted PKCS #8, RFC 5958, because scheduled jobs sign
without a person at the keyboard: its protection is the file mode 0600 and the machine's disk), the public key
in ``archive-key.pub.pem`` (SubjectPublicKeyInfo, RFC 5280 §4.1.2.7; Ed25519 per RFC 8410). The public key is
exported with every bundle, so anyone can check a signature with ``openssl pkeyutl -verify -rawin``.

A key is never overwritten: losing the private key means new signatures need a new key, but overwriting one
would make every signature already issued unverifiable against the key published with earlier bundles.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from archiver.errors import SigningKeyError

PRIVATE_KEY_NAME = "archive-key.pem"
PUBLIC_KEY_NAME = "archive-key.pub.pem"

# Group and world permission bits: a private key readable (or writable) by anyone but its owner is refused,
# as OpenSSH does for its identity files.
_FOREIGN_ACCESS = stat.S_IRWXG | stat.S_IRWXO


@dataclass(frozen=True)
class KeyInfo:
    """Where the archive key is and how it is known: ``key_id`` is sha256(raw public key bytes) in hex."""

    key_id: str
    public_pem: bytes
    private_key_path: Path
    public_key_path: Path


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """sha256 hex of the 32 raw public key bytes (RFC 8032 §5.1.5): stable across PEM re-encodings."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` holding ``data`` with ``mode``, atomically, refusing to replace anything.

    The bytes go to a temporary name created with O_EXCL and the final mode (never a chmod after writing, so
    the key is not readable by others even for an instant), are fsynced, then hard-linked to the final name:
    link(2) fails if the name exists, and a crash leaves either no key or a complete one, never half a key.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # POSIX: a new directory entry is durable only once the directory itself is fsynced.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _half_key_error(directory: Path, private: Path, public: Path) -> SigningKeyError:
    if private.exists():
        return SigningKeyError(
            f"{private} exists but {public.name} does not",
            hint=(
                f"restore {public.name} from a backup, or recreate it from the private key with "
                f"`openssl pkey -in {private} -pubout -out {public}`"
            ),
        )
    return SigningKeyError(
        f"{public} exists but the private key {private.name} does not",
        hint=(
            f"restore {private.name} from a backup; if it is lost for good, move {public.name} out of "
            f"{directory} (keep it: it still verifies earlier signatures) and run init again for a new key"
        ),
    )


def create_key(directory: Path) -> KeyInfo:
    """Make the archive key in ``directory``, or return the existing one's info (never overwrites a key).

    Raises :class:`SigningKeyError` if only one of the two files exists: that needs a person's decision.
    """
    private = directory / PRIVATE_KEY_NAME
    public = directory / PUBLIC_KEY_NAME
    if private.exists() and public.exists():
        return _load_info(directory)
    if private.exists() or public.exists():
        raise _half_key_error(directory, private, public)
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Private key first: if we die between the two writes, the hint above says how to re-derive the other.
    try:
        _write_new_file(private, private_pem, 0o600)
        _write_new_file(public, _public_pem(key.public_key()), 0o644)
    except FileExistsError as exc:
        # Another process made a key at the same moment: keep theirs, never ours.
        if private.exists() and public.exists():
            return _load_info(directory)
        raise SigningKeyError(f"another process is creating the archive key in {directory}") from exc
    except OSError as exc:
        raise SigningKeyError(f"cannot write the archive key in {directory}: {exc.strerror or exc}") from exc
    return KeyInfo(key_id_of(key.public_key()), _public_pem(key.public_key()), private, public)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise SigningKeyError(
            f"archive key file {path} does not exist", hint="run `archiver init` to create the archive key"
        ) from exc
    except OSError as exc:
        raise SigningKeyError(f"cannot read archive key file {path}: {exc.strerror or exc}") from exc


def _load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read(path))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def _load_info(directory: Path) -> KeyInfo:
    private = directory / PRIVATE_KEY_NAME
    public = directory / PUBLIC_KEY_NAME
    key = _load_public(public)
    return KeyInfo(key_id_of(key), _public_pem(key), private, public)


def _check_private_mode(path: Path) -> None:
    if os.name != "posix":
        return  # Windows has no mode bits; its ACLs are the operator's business
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise SigningKeyError(
            f"archive key file {path} does not exist", hint="run `archiver init` to create the archive key"
        ) from exc
    if mode & _FOREIGN_ACCESS:
        raise SigningKeyError(
            f"archive private key {path} is accessible to other users (mode {stat.S_IMODE(mode):04o})",
            hint=f"run `chmod 600 {path}`, and consider the key exposed if others could read it",
        )


class Signer:
    """Signs bytes with the archive's private key. Made by :func:`load_signer`."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        public = private_key.public_key()
        self.key_id: str = key_id_of(public)
        self.public_pem: bytes = _public_pem(public)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature (RFC 8032 §5.1.6) of ``data``; PureEdDSA, no pre-hash."""
        return self._key.sign(data)

    def __repr__(self) -> str:  # never show key material, even by accident in a log
        return f"Signer(key_id={self.key_id!r})"


def load_signer(directory: Path) -> Signer:
    """Load the archive key from ``directory``; refuses a key others can read or that mismatches its pair."""
    private = directory / PRIVATE_KEY_NAME
    public = directory / PUBLIC_KEY_NAME
    _check_private_mode(private)
    try:
        key = serialization.load_pem_private_key(_read(private), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{private} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{private} holds a {type(key).__name__}, not an Ed25519 private key")
    signer = Signer(key)
    if key_id_of(_load_public(public)) != signer.key_id:
        raise SigningKeyError(
            f"{public.name} does not belong to {private.name} in {directory}",
            hint="restore the matching pair from a backup: signatures would not verify with this public key",
        )
    return signer


def verify_signature(public_pem: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``data`` by ``public_pem``.

    Never raises: a bad signature, a malformed signature, or a public key that is not a PEM Ed25519 key all
    give False, because verification results are data.
    """
    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, UnsupportedAlgorithm):
        return False
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
