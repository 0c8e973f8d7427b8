"""A real RFC 3161 timestamp authority for tests: ``openssl ts -reply`` behind ``http.server`` on 127.0.0.1.

:func:`make_pki` makes, with the openssl CLI, a root CA and a TSA certificate signed by it (extendedKeyUsage
critical timeStamping, RFC 3161 §2.3) plus an ``openssl.cnf`` whose [tsa] section signs with them.
:class:`OpensslTsa` serves it: every POSTed ``application/timestamp-query`` body is answered by a fresh
``openssl ts -reply`` subprocess. Extra paths produce the failures a client must survive:

- ``/``            a real reply
- ``/reject``      a real openssl *rejection* (that section accepts only SHA-512 imprints)
- ``/replay``      a real, valid token for other data and another nonce (a confused or hostile TSA)
- ``/http-500``    HTTP 500
- ``/garbage``     HTTP 200, ``application/timestamp-reply``, bytes that are not DER

The [tsa] section deliberately has no ``certs =`` line: openssl would then add the CA chain as an unsorted
DER SET OF, which rfc3161-client rejects; with ``cert_req`` set, openssl includes just the signer certificate.

Fixtures ``openssl_tsa`` and ``untrusted_tsa`` (a second, unrelated CA and TSA) are session-scoped. Import
them into the test module that uses them by their function names, ``openssl_tsa_fixture`` and
``untrusted_tsa_fixture``, so that parameters named ``openssl_tsa`` do not shadow an import.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TSA_POLICY_OID = "1.3.6.1.4.1.55555.1.1"  # an arbitrary test policy under an unassigned private arc

_CONFIG = """\
# Test PKI and TSA configuration, written by tests/support/tsa.py
dir = {dir}

[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unused

[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ tsa_ext ]
# RFC 3161 §2.3: the TSA certificate has exactly one extended key usage, timeStamping, marked critical.
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ tsa ]
default_tsa = tsa_main

[ tsa_main ]
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = {policy}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
# no "certs =": see the module docstring

[ tsa_reject ]
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = {policy}
digests = sha512
"""


def _openssl(*args: str | Path, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["openssl", *(str(a) for a in args)], cwd=cwd, input=stdin, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


@dataclass(frozen=True)
class Pki:
    """A root CA and a TSA certificate it issued, with the openssl.cnf that makes ``openssl ts`` use them."""

    directory: Path
    name: str

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_path.read_bytes()

    @property
    def tsa_cert_path(self) -> Path:
        return self.directory / "tsa.crt"

    @property
    def config_path(self) -> Path:
        return self.directory / "openssl.cnf"


def make_pki(directory: Path, name: str = "Test") -> Pki:
    """Create a P-256 root CA and TSA certificate in ``directory`` with the openssl CLI (about 50 ms)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory, name)
    pki.config_path.write_text(_CONFIG.format(dir=directory, policy=TSA_POLICY_OID), encoding="utf-8")
    (directory / "tsaserial").write_text("01\n", encoding="ascii")
    cnf = pki.config_path
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc")
    _openssl("req", "-config", cnf, "-x509", *ec, "-keyout", directory / "ca.key", "-out", pki.ca_path,
             "-days", "3650", "-subj", f"/O={name} Archiver Tests/CN={name} Root CA",
             "-extensions", "ca_ext", "-sha256")  # fmt: skip
    _openssl("req", "-config", cnf, "-new", *ec, "-keyout", directory / "tsa.key",
             "-out", directory / "tsa.csr", "-subj", f"/O={name} Archiver Tests/CN={name} TSA")  # fmt: skip
    _openssl("x509", "-req", "-in", directory / "tsa.csr", "-CA", pki.ca_path, "-CAkey", directory / "ca.key",
             "-CAcreateserial", "-out", pki.tsa_cert_path, "-days", "3650", "-sha256",
             "-extfile", cnf, "-extensions", "tsa_ext")  # fmt: skip
    return pki


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        query = self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        self.server.requests.append((path, self.headers.get("Content-Type", ""), query))
        if path == "/http-500":
            self._send(500, "text/plain", b"internal error\n")
        elif path == "/garbage":
            self._send(200, "application/timestamp-reply", b"this is not DER\n")
        elif path in ("/", "/reject", "/replay"):
            if path == "/replay":
                query = _openssl("ts", "-query", "-digest", hashlib.sha256(b"other data").hexdigest(),
                                 "-sha256", "-cert")  # fmt: skip
            section = "tsa_reject" if path == "/reject" else "tsa_main"
            self._send(200, "application/timestamp-reply", self.server.reply(query, section))
        else:
            self._send(404, "text/plain", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pki: Pki) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pki = pki
        self.requests: list[tuple[str, str, bytes]] = []
        # openssl increments the serial file in place: one reply at a time.
        self._lock = threading.Lock()

    def reply(self, query: bytes, section: str) -> bytes:
        with self._lock, tempfile.TemporaryDirectory() as tmp:
            qpath = Path(tmp) / "request.tsq"
            qpath.write_bytes(query)
            return _openssl("ts", "-reply", "-config", self.pki.config_path, "-section", section,
                            "-queryfile", qpath)  # fmt: skip


class OpensslTsa:
    """A running test TSA. ``url`` answers real replies; ``url_for("/reject")`` etc. the failure modes."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self._server = _Server(pki)
        # A short poll interval, so that close() returns at once rather than after up to half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tsa-{pki.name}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return self.url_for("/")

    def url_for(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    @property
    def requests(self) -> list[tuple[str, str, bytes]]:
        """Every request received: (path, content type, body)."""
        return self._server.requests

    @property
    def ca_pem(self) -> bytes:
        return self.pki.ca_pem

    @property
    def ca_path(self) -> Path:
        return self.pki.ca_path

    @property
    def tsa_cert_path(self) -> Path:
        return self.pki.tsa_cert_path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def openssl_ts_verify(
    token_path: Path, digest_hex: str, ca_path: Path, *, attime: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Check a stored token offline with the openssl CLI, as a court's technical staff would.

    The stored token is the whole DER TimeStampResp (RFC 3161 §2.4.2), so the command that works is::

        openssl ts -verify -digest <sha256 hex of the timestamped data> -in token.tsr -CAfile tsa-ca.pem

    It prints ``Verification: OK`` and exits 0 when the token's message imprint equals the digest, the
    signature is valid and the TSA certificate embedded in the token chains to a certificate in the CA file.
    Years later, when the TSA certificate has expired, add ``-attime <gen_time as Unix seconds>`` so the
    chain is checked at the time the token was made (RFC 3161 §4), as the archiver itself does.
    """
    args = [
        "openssl",
        "ts",
        "-verify",
        "-digest",
        digest_hex,
        "-in",
        str(token_path),
        "-CAfile",
        str(ca_path),
    ]
    if attime is not None:
        args += ["-attime", str(attime)]
    return subprocess.run(args, capture_output=True, text=True, check=False)


@pytest.fixture(scope="session", name="openssl_tsa")
def openssl_tsa_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpensslTsa]:
    tsa = OpensslTsa(make_pki(tmp_path_factory.mktemp("tsa-trusted"), "Trusted"))
    yield tsa
    tsa.close()


@pytest.fixture(scope="session", name="untrusted_tsa")
def untrusted_tsa_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpensslTsa]:
    """A second TSA under a CA of its own: its tokens are valid but not trusted by ``openssl_tsa``'s CA."""
    tsa = OpensslTsa(make_pki(tmp_path_factory.mktemp("tsa-untrusted"), "Untrusted"))
    yield tsa
    tsa.close()
