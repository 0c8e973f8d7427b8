"""Trusted time: RFC 3161 timestamps from a configured timestamp authority (TSA), through ``rfc3161-client``.

What we store is the whole DER ``TimeStampResp`` (RFC 3161 §2.4.2) exactly as the TSA sent it: status plus
the token (a CMS SignedData over a TSTInfo). That is what ``openssl ts -verify -in`` reads by default, so
anyone can check it offline, years later, without our software::

    openssl ts -verify -digest <sha256 hex of the timestamped data> -in token.tsr -CAfile tsa-ca.pem

(add ``-attime <gen_time as Unix seconds>`` once the TSA certificate has expired). We ask with ``certReq``
so that the token carries the TSA certificate, and we check every token before accepting it: nonce, message
imprint, signature, and that the TSA certificate chains to a certificate the operator configured as trusted.
Certificates are checked at the token's genTime, not today (RFC 3161 §4, item 1: a token stays valid after
the TSA certificate expires, as long as the TSA key was not compromised before genTime).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from rfc3161_client import TimeStampResponse, VerificationError, VerifierBuilder, decode_timestamp_response

from archiver.errors import ConfigError, TimestampError

SHA256_OID = "2.16.840.1.101.3.4.2.1"  # id-sha256, RFC 5754 §2.2
_SHA256_ALGORITHM_IDENTIFIER = bytes.fromhex("300d06096086480165030402010500")  # with NULL parameters
_MAX_RESPONSE = 1 << 20  # a TimeStampResp is a few KiB; anything bigger is not one
_MAX_CHAIN = 8

# RFC 3161 §2.4.2 PKIStatus and PKIFailureInfo names, for messages a person can act on.
_STATUS = {0: "granted", 1: "grantedWithMods", 2: "rejection", 3: "waiting", 4: "revocationWarning",
           5: "revocationNotification"}  # fmt: skip
_FAILURES = {0: "badAlg", 2: "badRequest", 5: "badDataFormat", 14: "timeNotAvailable", 15: "unacceptedPolicy",
             16: "unacceptedExtension", 17: "addInfoNotAvailable", 25: "systemFailure"}  # fmt: skip


@dataclass(frozen=True)
class TsaConfig:
    """One timestamp authority: where to ask, and which CA certificate(s) its certificate must chain to.

    ``trusted_certs`` is either a path to a PEM bundle or the PEM bytes themselves: the TSA's root (and any
    intermediate) CA certificates, never just "whatever the token contains".
    """

    name: str
    url: str
    trusted_certs: Path | bytes
    timeout: float = 30.0

    def trusted_pems(self) -> bytes:
        if isinstance(self.trusted_certs, bytes):
            return self.trusted_certs
        try:
            return self.trusted_certs.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"TSA {self.name}: cannot read trusted certificates {self.trusted_certs}: {exc.strerror}",
                hint="point the TSA's trusted certificates at the PEM file of its CA",
            ) from exc


@dataclass(frozen=True)
class TimestampToken:
    """A verified RFC 3161 timestamp; ``der`` is the DER TimeStampResp that ``openssl ts -verify -in`` reads.

    ``certificate_pems`` are the certificates embedded in the token, the TSA's signing certificate first.
    """

    tsa_name: str
    der: bytes
    gen_time: datetime
    serial: int
    hash_algorithm: str
    message_digest: bytes
    policy_oid: str
    nonce: int | None
    certificate_pems: tuple[bytes, ...]


# --- DER, the little of it we write and read ourselves (X.690 §8, §10) -------------------------------------
# rfc3161-client's request builder hashes the data it is given; we already hold the SHA-256 digest and want
# exactly that as the message imprint, so that `openssl ts -verify -digest <hex>` works on it. It also cannot
# parse a response without a token, so the status of a rejection is read here.


class _DerError(ValueError):
    pass


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:  # X.690 §8.1.3.4: short form
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")  # §8.1.3.5: long form, minimal (§10.1)
    return bytes([tag, 0x80 | len(size)]) + size + content


def _der_uint(value: int) -> bytes:
    # Two's complement, minimal: a leading zero byte when the top bit would otherwise make it negative.
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def build_request(digest: bytes, nonce: int) -> bytes:
    """DER TimeStampReq (RFC 3161 §2.4.1) v1 for a SHA-256 ``digest``, with ``nonce`` and certReq TRUE."""
    if len(digest) != 32:
        raise ValueError(f"a SHA-256 digest is 32 bytes, not {len(digest)}")
    imprint = _tlv(0x30, _SHA256_ALGORITHM_IDENTIFIER + _tlv(0x04, digest))
    return _tlv(0x30, _der_uint(1) + imprint + _der_uint(nonce) + b"\x01\x01\xff")


def _read_tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``; DER definite lengths only."""
    if pos + 2 > end:
        raise _DerError("truncated")
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first & 0x80:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise _DerError("bad length")
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    else:
        length = first
    if pos + length > end:
        raise _DerError("truncated")
    return tag, pos, pos + length


def response_status(der: bytes) -> tuple[int, list[str], list[str]]:
    """(PKIStatus, statusString texts, failInfo names) of a DER TimeStampResp (RFC 3161 §2.4.2)."""
    tag, start, end = _read_tlv(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise _DerError("not a DER SEQUENCE")
    tag, pos, info_end = _read_tlv(der, start, end)
    if tag != 0x30:
        raise _DerError("no PKIStatusInfo")
    tag, s, e = _read_tlv(der, pos, info_end)
    if tag != 0x02 or not 0 < e - s <= 4:
        raise _DerError("no PKIStatus")
    status, pos = int.from_bytes(der[s:e], "big", signed=True), e
    texts: list[str] = []
    failures: list[str] = []
    while pos < info_end:
        tag, s, e = _read_tlv(der, pos, info_end)
        if tag == 0x30:  # PKIFreeText ::= SEQUENCE OF UTF8String
            p = s
            while p < e:
                _, ts, te = _read_tlv(der, p, e)
                texts.append(der[ts:te].decode("utf-8", errors="replace"))
                p = te
        elif tag == 0x03 and e > s:  # PKIFailureInfo BIT STRING: bit 0 is the first byte's top bit
            bits = der[s + 1 : e]
            failures += [
                name for bit, name in _FAILURES.items() if bit // 8 < len(bits) and bits[bit // 8] & (0x80 >> bit % 8)
            ]
        pos = e
    return status, texts, failures


# --- verification -------------------------------------------------------------------------------------------


def _signer_certificate(response: TimeStampResponse, certs: list[x509.Certificate]) -> x509.Certificate | None:
    # The signer is named by issuerAndSerialNumber in SignerInfo (RFC 5652 §5.3), which the signature covers.
    infos = list(response.signed_data.signer_infos)
    if len(infos) != 1:
        return None
    for cert in certs:
        if cert.issuer == infos[0].issuer and cert.serial_number == infos[0].serial_number:
            return cert
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _chains_to_trusted(
    cert: x509.Certificate, embedded: list[x509.Certificate], trusted: list[x509.Certificate]
) -> bool:
    """Whether a path of issuer signatures leads from ``cert`` through ``embedded`` to a trusted certificate.

    Only to tell an untrusted TSA apart from a broken signature: the binding check, with validity periods and
    extensions, is OpenSSL's PKCS7_verify inside rfc3161-client.
    """
    for _ in range(_MAX_CHAIN):
        if cert in trusted or any(_issued_by(cert, t) for t in trusted):
            return True
        parents = [c for c in embedded if c != cert and _issued_by(cert, c)]
        if not parents:
            return False
        cert = parents[0]
    return False


def _parse(der: bytes) -> TimeStampResponse:
    try:
        response = decode_timestamp_response(der)
        # rfc3161-client parses lazily: touch what we use so that a malformed token fails here, not later.
        _ = (
            response.tst_info.message_imprint.message,
            response.tst_info.gen_time,
            response.signed_data.certificates,
        )
    except ValueError as exc:
        raise _DerError(str(exc)) from exc
    return response


def verify_token(token_der: bytes, digest: bytes, trusted_pems: bytes) -> list[str]:
    """Problems with a stored token (a DER TimeStampResp) for SHA-256 ``digest``; an empty list means valid.

    The problems name their kind first: "malformed token", "not a granted timestamp", "token for other
    data", "untrusted TSA", "signature invalid". Never raises for a bad token: verification results are data.
    """
    try:
        return _problems(token_der, digest, trusted_pems)
    except Exception as exc:  # noqa: BLE001
        # rfc3161-client and cryptography parse lazily and, on hostile bytes, raise whatever their parsers
        # meet (ValueError, KeyError, InvalidVersion...): every one of them means the token is malformed.
        return [f"malformed token: {type(exc).__name__}: {exc}"]


def _problems(token_der: bytes, digest: bytes, trusted_pems: bytes) -> list[str]:
    try:
        status, texts, failures = response_status(token_der)
    except _DerError as exc:
        return [f"malformed token: not an RFC 3161 TimeStampResp ({exc})"]
    if status != 0:
        detail = "; ".join(texts + failures) or "no reason given"
        return [f"not a granted timestamp: status {_STATUS.get(status, status)} ({detail})"]
    response = _parse(token_der)
    certs = [x509.load_der_x509_certificate(c) for c in response.signed_data.certificates]
    problems: list[str] = []
    imprint = response.tst_info.message_imprint
    algorithm = imprint.hash_algorithm.dotted_string
    if algorithm != SHA256_OID:
        problems.append(f"token for other data: its imprint uses {algorithm}, not SHA-256")
    elif imprint.message != digest:
        problems.append(f"token for other data: it timestamps {imprint.message.hex()}, not {digest.hex()}")
    try:
        trusted = x509.load_pem_x509_certificates(trusted_pems)
    except ValueError:
        return [*problems, "no trusted TSA certificate configured: cannot check who signed the token"]
    signer = _signer_certificate(response, certs)
    if signer is None:
        return [*problems, "malformed token: it does not include the TSA certificate that signed it"]
    if not _chains_to_trusted(signer, certs, trusted):
        subject = signer.subject.rfc4514_string()
        return [*problems, f"untrusted TSA: {subject} does not chain to a trusted certificate"]
    builder = VerifierBuilder()
    for cert in trusted:
        builder = builder.add_root_certificate(cert)
    try:
        # Checked against the token's own imprint so that "other data" and "bad signature" are told apart;
        # this also checks the TSA certificate's critical timeStamping EKU (RFC 3161 §2.3) at genTime.
        builder.build().verify(response, imprint.message)
    except VerificationError as exc:
        problems.append(f"signature invalid: {exc}")
    return problems


def _hash_name(oid: str) -> str:
    return "sha256" if oid == SHA256_OID else oid


def parse_token(tsa_name: str, der: bytes) -> TimestampToken:
    """Read the fields of a stored TimeStampResp (no verification: use :func:`verify_token` for that).

    Raises :class:`TimestampError` if ``der`` is not a granted, well-formed TimeStampResp.
    """
    try:
        return _token_fields(tsa_name, der)
    except Exception as exc:  # re-raised as ours: the parsers raise assorted types, as in verify_token
        raise TimestampError(f"TSA {tsa_name}: malformed timestamp token: {type(exc).__name__}: {exc}") from exc


def _token_fields(tsa_name: str, der: bytes) -> TimestampToken:
    response = _parse(der)
    certs = [x509.load_der_x509_certificate(c) for c in response.signed_data.certificates]
    signer = _signer_certificate(response, certs)
    certs.sort(key=lambda c: (c != signer, c.subject.rfc4514_string()))
    info = response.tst_info
    return TimestampToken(
        tsa_name=tsa_name,
        der=der,
        gen_time=info.gen_time.astimezone(UTC),
        serial=info.serial_number,
        hash_algorithm=_hash_name(info.message_imprint.hash_algorithm.dotted_string),
        message_digest=info.message_imprint.message,
        policy_oid=info.policy.dotted_string,
        nonce=info.nonce,
        certificate_pems=tuple(c.public_bytes(Encoding.PEM) for c in certs),
    )


# --- asking a TSA -------------------------------------------------------------------------------------------


def _post(tsa: TsaConfig, body: bytes, session: requests.Session) -> bytes:
    headers = {"Content-Type": "application/timestamp-query", "Accept": "application/timestamp-reply"}
    try:
        with session.post(tsa.url, data=body, headers=headers, timeout=tsa.timeout, stream=True) as response:
            if response.status_code != 200:
                raise TimestampError(
                    f"TSA {tsa.name} at {tsa.url} answered HTTP {response.status_code} {response.reason}",
                    hint="the TSA may be down or overloaded; try again later or configure another TSA",
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > _MAX_RESPONSE:
                    raise TimestampError(f"TSA {tsa.name} at {tsa.url} sent more than {_MAX_RESPONSE} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.RequestException as exc:
        raise TimestampError(
            f"cannot reach TSA {tsa.name} at {tsa.url}: {exc}",
            hint="check the TSA URL and the network, or configure another TSA",
        ) from exc


def request_timestamp(tsa: TsaConfig, digest: bytes, *, session: requests.Session | None = None) -> TimestampToken:
    """Ask ``tsa`` to timestamp the SHA-256 ``digest``; returns the token only after verifying it.

    Raises :class:`TimestampError` when the TSA cannot be reached, answers an HTTP error, rejects the request,
    or sends something that is not a valid token for this digest and request.
    """
    trusted = tsa.trusted_pems()
    nonce = secrets.randbits(64)  # RFC 3161 §2.4.1: a large random number, to match the answer to the request
    body = build_request(digest, nonce)
    own = session is None
    http = requests.Session() if session is None else session
    try:
        der = _post(tsa, body, http)
    finally:
        if own:
            http.close()
    try:
        status, texts, failures = response_status(der)
    except _DerError as exc:
        raise TimestampError(f"TSA {tsa.name} at {tsa.url} did not answer with an RFC 3161 response ({exc})") from exc
    if status != 0:
        detail = "; ".join(texts + failures) or "no reason given"
        raise TimestampError(
            f"TSA {tsa.name} refused the request: status {_STATUS.get(status, status)} ({detail})",
            hint="check the TSA's policy and supported hash algorithms, or configure another TSA",
        )
    token = parse_token(tsa.name, der)
    if token.nonce != nonce:
        raise TimestampError(f"TSA {tsa.name} answered with a token for another request (nonce mismatch)")
    problems = verify_token(der, digest, trusted)
    if problems:
        raise TimestampError(f"TSA {tsa.name} sent a token that does not verify: {'; '.join(problems)}")
    return token
