"""RFC 3161 timestamps against a real ``openssl ts`` TSA on 127.0.0.1, and what must not pass."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.errors import ConfigError, TimestampError
from archiver.timestamps import (
    TimestampToken,
    TsaConfig,
    build_request,
    parse_token,
    request_timestamp,
    response_status,
    verify_token,
)
from tests.support.tsa import (
    TSA_POLICY_OID,
    OpensslTsa,
    openssl_ts_verify,
    openssl_tsa_fixture,  # noqa: F401 - pytest fixture "openssl_tsa"
    untrusted_tsa_fixture,  # noqa: F401 - pytest fixture "untrusted_tsa"
)

DIGEST = hashlib.sha256(b'{"receipt":"capture-1"}').digest()
OTHER_DIGEST = hashlib.sha256(b'{"receipt":"capture-2"}').digest()


def config(tsa: OpensslTsa, *, path: str = "/", trusted: bytes | Path | None = None) -> TsaConfig:
    return TsaConfig(
        name="test-tsa",
        url=tsa.url_for(path),
        trusted_certs=tsa.ca_pem if trusted is None else trusted,
        timeout=5,
    )


@pytest.fixture(scope="module")
def token(openssl_tsa: OpensslTsa) -> TimestampToken:
    return request_timestamp(config(openssl_tsa), DIGEST)


@pytest.fixture(scope="module")
def untrusted_token(untrusted_tsa: OpensslTsa) -> TimestampToken:
    # Valid in itself: signed by the second TSA and checked against that TSA's own CA.
    return request_timestamp(config(untrusted_tsa), DIGEST)


def test_request_is_the_rfc_3161_query_openssl_reads(tmp_path: Path) -> None:
    query = tmp_path / "request.tsq"
    query.write_bytes(build_request(DIGEST, 0x80FF))
    text = subprocess.run(
        ["openssl", "ts", "-query", "-in", str(query), "-text"], capture_output=True, text=True, check=True
    ).stdout
    assert "Hash Algorithm: sha256" in text
    assert "Nonce: 0x80FF" in text
    assert "Certificate required: yes" in text
    dump = "".join(line.split(" - ", 1)[1][:47] for line in text.splitlines() if " - " in line)
    assert dump.replace(" ", "").replace("-", "") == DIGEST.hex()


def test_request_refuses_what_is_not_a_sha256_digest() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        build_request(b"abc", 1)


def test_timestamp_from_a_real_tsa(token: TimestampToken, openssl_tsa: OpensslTsa) -> None:
    assert token.tsa_name == "test-tsa"
    assert token.message_digest == DIGEST
    assert token.hash_algorithm == "sha256"
    assert token.policy_oid == TSA_POLICY_OID
    assert token.serial > 0
    assert token.nonce is not None
    assert token.gen_time.tzinfo is not None and token.gen_time.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - token.gen_time) < timedelta(minutes=5)
    # The TSA's own certificate comes first, as embedded in the token.
    embedded = x509.load_pem_x509_certificate(token.certificate_pems[0])
    assert embedded == x509.load_pem_x509_certificate(openssl_tsa.tsa_cert_path.read_bytes())
    assert verify_token(token.der, DIGEST, openssl_tsa.ca_pem) == []
    assert response_status(token.der) == (0, [], [])


def test_the_request_is_a_timestamp_query(openssl_tsa: OpensslTsa) -> None:
    before = len(openssl_tsa.requests)
    request_timestamp(config(openssl_tsa), OTHER_DIGEST)
    path, content_type, body = openssl_tsa.requests[before]
    assert (path, content_type) == ("/", "application/timestamp-query")
    assert OTHER_DIGEST in body


def test_each_request_has_a_fresh_nonce_and_serial(openssl_tsa: OpensslTsa) -> None:
    with requests.Session() as session:  # a caller's session is used, and left open
        tokens = [request_timestamp(config(openssl_tsa), DIGEST, session=session) for _ in range(3)]
        assert session.get(openssl_tsa.url).status_code == 501  # still usable: http.server has no GET
    assert len({t.nonce for t in tokens}) == 3
    assert len({t.serial for t in tokens}) == 3


def test_trusted_certificates_from_a_pem_file(openssl_tsa: OpensslTsa) -> None:
    token = request_timestamp(config(openssl_tsa, trusted=openssl_tsa.ca_path), DIGEST)
    assert token.message_digest == DIGEST


def test_a_missing_trust_file_is_a_config_error(openssl_tsa: OpensslTsa, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read trusted certificates"):
        request_timestamp(config(openssl_tsa, trusted=tmp_path / "missing.pem"), DIGEST)


def test_openssl_verifies_the_stored_token(token: TimestampToken, openssl_tsa: OpensslTsa, tmp_path: Path) -> None:
    stored = tmp_path / "token.tsr"
    stored.write_bytes(token.der)
    result = openssl_ts_verify(stored, DIGEST.hex(), openssl_tsa.ca_path)
    assert result.returncode == 0, result.stderr
    assert "Verification: OK" in result.stdout
    # At genTime too, the form VERIFY.md gives for a TSA certificate that has since expired.
    at_gen_time = openssl_ts_verify(stored, DIGEST.hex(), openssl_tsa.ca_path, attime=int(token.gen_time.timestamp()))
    assert at_gen_time.returncode == 0, at_gen_time.stderr


def test_openssl_rejects_the_stored_token_for_other_data_or_another_ca(
    token: TimestampToken,
    openssl_tsa: OpensslTsa,
    untrusted_tsa: OpensslTsa,
    tmp_path: Path,
) -> None:
    stored = tmp_path / "token.tsr"
    stored.write_bytes(token.der)
    other = openssl_ts_verify(stored, OTHER_DIGEST.hex(), openssl_tsa.ca_path)
    assert other.returncode != 0 and "Verification: FAILED" in other.stdout
    untrusted = openssl_ts_verify(stored, DIGEST.hex(), untrusted_tsa.ca_path)
    assert untrusted.returncode != 0 and "unable to get local issuer certificate" in untrusted.stderr


def test_a_stored_token_reads_back_the_same(token: TimestampToken) -> None:
    assert parse_token("test-tsa", token.der) == token


# --- verify_token: problems as data -------------------------------------------------------------------------


def test_token_for_other_data(token: TimestampToken, openssl_tsa: OpensslTsa) -> None:
    problems = verify_token(token.der, OTHER_DIGEST, openssl_tsa.ca_pem)
    assert len(problems) == 1
    assert problems[0].startswith("token for other data")
    assert DIGEST.hex() in problems[0] and OTHER_DIGEST.hex() in problems[0]


def test_untrusted_tsa(untrusted_token: TimestampToken, untrusted_tsa: OpensslTsa, openssl_tsa: OpensslTsa) -> None:
    assert verify_token(untrusted_token.der, DIGEST, untrusted_tsa.ca_pem) == []
    problems = verify_token(untrusted_token.der, DIGEST, openssl_tsa.ca_pem)
    assert len(problems) == 1
    assert problems[0].startswith("untrusted TSA")
    assert "Untrusted TSA" in problems[0]  # names the certificate's subject


def test_trusting_both_cas_accepts_both(
    token: TimestampToken,
    untrusted_token: TimestampToken,
    openssl_tsa: OpensslTsa,
    untrusted_tsa: OpensslTsa,
) -> None:
    bundle = openssl_tsa.ca_pem + untrusted_tsa.ca_pem
    assert verify_token(token.der, DIGEST, bundle) == []
    assert verify_token(untrusted_token.der, DIGEST, bundle) == []


def test_a_corrupted_signature(token: TimestampToken, openssl_tsa: OpensslTsa) -> None:
    # The ECDSA signature value is the last element of the token; flip a bit near its end.
    corrupted = bytearray(token.der)
    corrupted[-3] ^= 0x01
    problems = verify_token(bytes(corrupted), DIGEST, openssl_tsa.ca_pem)
    assert len(problems) == 1 and problems[0].startswith("signature invalid"), problems


def test_a_changed_time_or_imprint_breaks_the_signature(token: TimestampToken, openssl_tsa: OpensslTsa) -> None:
    # Re-dating a token: change a digit of genTime inside the signed TSTInfo.
    gen_time = token.gen_time.strftime("%Y%m%d%H%M%S").encode()
    at = token.der.index(gen_time)
    redated = bytearray(token.der)
    redated[at + 3] = ord("0") if redated[at + 3] != ord("0") else ord("1")
    problems = verify_token(bytes(redated), DIGEST, openssl_tsa.ca_pem)
    assert any(p.startswith("signature invalid") for p in problems), problems
    # Re-targeting a token: put another digest into its imprint.
    at = token.der.index(DIGEST)
    retargeted = token.der[:at] + OTHER_DIGEST + token.der[at + len(DIGEST) :]
    problems = verify_token(retargeted, OTHER_DIGEST, openssl_tsa.ca_pem)
    assert problems and all(p.startswith("signature invalid") for p in problems), problems


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30", b"garbage", b"\x30\x03\x02\x01\x00", b"\x30\x82\xff\xff" + b"\x00" * 10],
    ids=["empty", "one-byte", "text", "status-only", "overlong"],
)
def test_malformed_tokens(der: bytes, openssl_tsa: OpensslTsa) -> None:
    problems = verify_token(der, DIGEST, openssl_tsa.ca_pem)
    assert len(problems) == 1 and problems[0].startswith("malformed token"), problems


def test_truncated_token(token: TimestampToken, openssl_tsa: OpensslTsa) -> None:
    for cut in (1, 10, len(token.der) // 2, len(token.der) - 1):
        problems = verify_token(token.der[:cut], DIGEST, openssl_tsa.ca_pem)
        assert problems and problems[0].startswith("malformed token"), (cut, problems)
    with pytest.raises(TimestampError, match="malformed"):
        parse_token("test-tsa", token.der[:-1])


def test_no_trusted_certificates(token: TimestampToken) -> None:
    assert verify_token(token.der, DIGEST, b"") == [
        "no trusted TSA certificate configured: cannot check who signed the token"
    ]


# A flipped bit in a certificate's serial number makes cryptography warn that it is not positive; the
# signature check then reports the token, which is what this test is about.
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_corruption_is_reported_never_raised(
    token: TimestampToken,
    openssl_tsa: OpensslTsa,
    data: st.DataObject,
) -> None:
    at = data.draw(st.integers(0, len(token.der) - 1), label="offset")
    mask = data.draw(st.sampled_from([0x01, 0x80, 0xFF]), label="mask")
    corrupted = bytearray(token.der)
    corrupted[at] ^= mask
    problems = verify_token(bytes(corrupted), DIGEST, openssl_tsa.ca_pem)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    # Bytes under the signature (the TSTInfo) can never change unnoticed. (A few bytes outside it, such as
    # the SignedData version or the SignerInfo's signatureAlgorithm OID, are not covered by the signature
    # and OpenSSL tolerates their change; the token still proves the same thing then.)
    if token.der.index(DIGEST) <= at < token.der.index(DIGEST) + len(DIGEST):
        assert problems


# --- request_timestamp: failures become TimestampError ------------------------------------------------------


def test_tsa_down_is_a_timestamp_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tsa = TsaConfig("down", f"http://127.0.0.1:{port}/", b"", timeout=2)
    with pytest.raises(TimestampError, match="cannot reach TSA down") as caught:
        request_timestamp(tsa, DIGEST)
    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    assert caught.value.hint is not None


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        stop = threading.Event()
        accepted: list[socket.socket] = []

        def serve() -> None:
            s.settimeout(0.1)
            while not stop.is_set():
                try:
                    accepted.append(s.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield s.getsockname()[1]
        stop.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()


def test_tsa_that_never_answers_times_out(silent_server: int) -> None:
    tsa = TsaConfig("silent", f"http://127.0.0.1:{silent_server}/", b"", timeout=0.3)
    with pytest.raises(TimestampError, match="cannot reach TSA silent"):
        request_timestamp(tsa, DIGEST)


def test_http_500_is_a_timestamp_error(openssl_tsa: OpensslTsa) -> None:
    with pytest.raises(TimestampError, match="answered HTTP 500"):
        request_timestamp(config(openssl_tsa, path="/http-500"), DIGEST)


def test_garbage_is_a_timestamp_error(openssl_tsa: OpensslTsa) -> None:
    with pytest.raises(TimestampError, match="did not answer with an RFC 3161 response"):
        request_timestamp(config(openssl_tsa, path="/garbage"), DIGEST)


def test_rejection_is_a_timestamp_error_with_the_tsas_reason(openssl_tsa: OpensslTsa) -> None:
    with pytest.raises(TimestampError) as caught:
        request_timestamp(config(openssl_tsa, path="/reject"), DIGEST)
    message = caught.value.message
    assert "refused the request: status rejection" in message
    assert "Message digest algorithm is not supported." in message and "badAlg" in message


def test_rejection_stored_by_mistake_is_not_a_valid_token(openssl_tsa: OpensslTsa) -> None:
    body = build_request(DIGEST, 7)
    reply = requests.post(openssl_tsa.url_for("/reject"), data=body, timeout=5).content
    assert response_status(reply)[0] == 2
    problems = verify_token(reply, DIGEST, openssl_tsa.ca_pem)
    assert len(problems) == 1 and problems[0].startswith("not a granted timestamp: status rejection")


def test_replayed_token_for_another_request_is_refused(openssl_tsa: OpensslTsa) -> None:
    with pytest.raises(TimestampError, match="nonce mismatch"):
        request_timestamp(config(openssl_tsa, path="/replay"), DIGEST)


def test_token_from_an_untrusted_tsa_is_refused(untrusted_tsa: OpensslTsa, openssl_tsa: OpensslTsa) -> None:
    tsa = TsaConfig("impostor", untrusted_tsa.url, openssl_tsa.ca_pem, timeout=5)
    with pytest.raises(TimestampError, match="does not verify: untrusted TSA"):
        request_timestamp(tsa, DIGEST)


def test_not_found_is_a_timestamp_error(openssl_tsa: OpensslTsa) -> None:
    with pytest.raises(TimestampError, match="answered HTTP 404"):
        request_timestamp(config(openssl_tsa, path="/nowhere"), DIGEST)
