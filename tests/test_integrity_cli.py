"""The investigator's commands end to end: run (receipts, one timestamp batch), status, verify, lookup, tamper."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from click.testing import CliRunner

from archiver.cli import cli
from tests.support.site import Site
from tests.support.site import site as site
from tests.support.tsa import OpensslTsa, openssl_tsa_fixture

__all__ = ["openssl_tsa_fixture"]
BODY = os.urandom(50_000)


def _invoke(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["--root", str(root), "--collector", "investigator", *args], catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


def test_run_seals_verify_and_lookup_then_tamper(tmp_path: Path, site: Site, openssl_tsa: OpensslTsa) -> None:
    root = tmp_path / "storage"
    assert _invoke(root, "init")[0] == 0
    (root / "tsa-ca.pem").write_bytes(openssl_tsa.ca_pem)
    settings = root / "settings.toml"
    settings.write_text(
        settings.read_text() + f'\n[[tsa]]\nname = "test-tsa"\nurl = "{openssl_tsa.url}"\nca = "tsa-ca.pem"\n'
    )
    video = site.add("/clip.bin", BODY, "application/octet-stream")
    page = site.add("/post.html", "<html><body><p>a post</p><img src='/clip.bin'></body></html>")

    code, out, err = _invoke(root, "capture", page, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["captured"] == 1
    assert summary["integrity"]["timestamped_receipts"] >= 1 and summary["integrity"]["receipts_waiting"] == 0
    code, out, _ = _invoke(root, "status", "--json")
    assert json.loads(out)["receipts_waiting_for_timestamp"] == 0

    code, out, err = _invoke(root, "verify", "--deep", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["deep"]
    expected_checks = {"files", "records", "artifacts", "custody-chain", "checkpoints", "receipts", "merkle-paths"}
    assert expected_checks | {"batches", "signatures", "tokens"} == set(report["checks"])

    held = tmp_path / "held.bin"
    held.write_bytes(BODY)
    code, out, _ = _invoke(root, "lookup", str(held), "--json")
    assert code == 0
    found = json.loads(out)
    assert found["found"] and found["sha256"] == hashlib.sha256(BODY).hexdigest()
    match = found["matches"][0]
    assert match["source_url"] == page and match["target_uri"] == video
    assert match["receipt"]["signature"] == "valid" and match["receipt"]["timestamps"][0]["status"] == "valid"
    code, out, _ = _invoke(root, "lookup", "0" * 64)
    assert code == 1 and "not in this archive" in out

    # Tamper: flip one byte in the middle of a closed WARC (made writable first, as an attacker would).
    warc = next((root / "warcs").glob("*.warc.gz"))
    warc.chmod(0o644)
    data = bytearray(warc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    warc.write_bytes(bytes(data))
    code, out, err = _invoke(root, "verify")
    assert code == 1 and "FAILED" in out and warc.name in err
