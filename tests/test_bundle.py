"""``archiver export`` and ``verify-bundle``: a real captured, signed and timestamped incident exported as a BagIt
bag, verified offline by our checker and by standard tools, and every kind of tampering named."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import bagit
import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from archiver import custody
from archiver.archive import Archive
from archiver.bundle import layout
from archiver.bundle.export import export_bundle
from archiver.bundle.verify_bundle import BundleReport, verify_bundle
from archiver.catalogue.models import CustodyEvent
from archiver.cli import cli
from archiver.errors import BundleError
from tests.support.bundle import alter_last_record, built_bundle, edit_json_line, flip_byte, records, rehash
from tests.support.integrity import Site, site_fixture  # noqa: F401 - pytest fixture "site"
from tests.support.tsa import OpensslTsa, openssl_tsa_fixture  # noqa: F401 - pytest fixture "openssl_tsa"

ALL_CHECKS = ["bag", "records", "receipts", "signatures", "merkle-paths", "batches", "tokens", "custody-chain", "media"]


def kinds(report: BundleReport) -> set[str]:
    return {p.kind for p in report.problems}


def test_exported_bundle_verifies_offline(
    archive: Archive, site: Site, openssl_tsa: OpensslTsa, tmp_path: Path
) -> None:
    _, report = built_bundle(archive, site, openssl_tsa, tmp_path / "bundle")
    bag = Path(report.path)
    result = verify_bundle(bag)
    assert result.ok, [str(p) for p in result.problems]
    assert list(result.checks) == ALL_CHECKS
    assert result.counts["receipts"] == 2 and result.counts["tokens"] >= 2 and result.counts["merkle_paths"] == 2
    # The standard tools agree: bagit-python's full validation and sha256sum.
    bagit.Bag(str(bag)).validate()
    done = subprocess.run(["sha256sum", "--quiet", "-c", "manifest-sha256.txt"], cwd=bag, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    info = (bag / "bag-info.txt").read_text()
    for label in ("Source-Organization", "External-Identifier: strike-a", "Bagging-Date: 2026-11-01",
                  "Payload-Oxum", "Bag-Software-Agent: evidence-archiver/"):  # fmt: skip
        assert label in info
    assert (bag / "manifest-sha512.txt").exists() and (bag / "tagmanifest-sha512.txt").exists()
    # Every receipt-listed record is in the bundle; receipts name records of the original files.
    listed = {str(r["id"]) for r in records(bag)}
    for receipt in json.loads((bag / layout.RECEIPTS_INDEX).read_text()):
        doc = json.loads((bag / receipt["file"]).read_bytes())
        assert {r["id"] for r in doc["records"]} <= listed
    # The export is a custody event recording the tag manifest's hash.
    with archive.session() as s:
        event = s.scalars(select(CustodyEvent).where(CustodyEvent.action == "exported")).one()
        assert json.loads(event.details)["tagmanifest_sha256"] == report.digest
        assert custody.check_chain(s).ok
    assert report.digest == __import__("hashlib").sha256((bag / "tagmanifest-sha256.txt").read_bytes()).hexdigest()


def test_export_twice_gives_identical_payload(sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa,
                                              tmp_path: Path) -> None:  # fmt: skip
    _, first = built_bundle(sqlite_archive, site, openssl_tsa, tmp_path / "one")
    second = export_bundle(sqlite_archive, "strike-a", tmp_path / "two")
    a, b = Path(first.path), Path(second.path)
    for name in ("manifest-sha256.txt", "manifest-sha512.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert first.event_seq + 1 == second.event_seq


def test_custody_segment_hides_other_incidents(sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa,
                                               tmp_path: Path) -> None:  # fmt: skip
    _, report = built_bundle(sqlite_archive, site, openssl_tsa, tmp_path / "b")
    bag = Path(report.path)
    chain = [json.loads(x) for x in (bag / layout.CHAIN).read_text().splitlines()]
    seqs = [e["seq"] for e in chain]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    hidden = [e for e in chain if "event" not in e]
    assert hidden and all(set(e) == {"seq", "prev_hash", "hash"} for e in hidden)
    text_all = "".join(
        p.read_text(errors="replace") for p in (bag / "data").rglob("*") if p.is_file() and p.suffix != ".gz"
    )
    assert "strike-b" not in text_all and "other.html" not in text_all
    csv_lines = (bag / layout.EVENTS_CSV).read_text().splitlines()
    assert csv_lines[0].startswith("seq,at,actor,action") and len(csv_lines) == 1 + len(chain) - len(hidden)
    timestamps = json.loads((bag / layout.TIMESTAMPS_INDEX).read_text())
    assert timestamps["checkpoint"]["seq"] == seqs[-1]


def test_existing_output_needs_force(
    sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep").write_text("precious")
    with pytest.raises(BundleError, match="already exists"):
        built_bundle(sqlite_archive, site, openssl_tsa, out)
    assert (out / "keep").read_text() == "precious"
    export_bundle(sqlite_archive, "strike-a", out, force=True)
    assert not (out / "keep").exists() and verify_bundle(out).ok
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial or old left


def test_zip_bundle_verifies_and_is_deterministic(sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa,
                                                  tmp_path: Path) -> None:  # fmt: skip
    built_bundle(sqlite_archive, site, openssl_tsa, tmp_path / "dir")
    one = export_bundle(sqlite_archive, "strike-a", tmp_path / "one.zip", as_zip=True)
    two = export_bundle(sqlite_archive, "strike-a", tmp_path / "two.zip", as_zip=True)
    assert one.format == "bagit-zip" and verify_bundle(Path(one.path)).ok
    assert Path(one.path).read_bytes().replace(b"one/", b"two/") == Path(two.path).read_bytes()


def _tamper_cases() -> list[tuple[str, str]]:
    return [
        ("payload-byte", "bag-checksum"),
        ("warc-record", "record-block-digest"),
        ("receipt-field", "receipt-hash"),
        ("signature", "receipt-signature"),
        ("token", "token"),
        ("custody-event", "custody-hash"),
        ("delete-file", "bag-missing-file"),
        ("add-file", "bag-unexpected-file"),
        ("media-index", "media-record"),
    ]


@pytest.mark.parametrize(("change", "expected"), _tamper_cases())
def test_each_kind_of_tampering_is_named(sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa, tmp_path: Path,
                                        change: str, expected: str) -> None:  # fmt: skip
    _, report = built_bundle(sqlite_archive, site, openssl_tsa, tmp_path / "b")
    bag = Path(report.path)
    assert verify_bundle(bag).ok
    subject = ""
    if change == "payload-byte":
        subject = layout.REPORT
        flip_byte(bag / subject, 100)
    elif change == "warc-record":
        subject = alter_last_record(bag)
        rehash(bag)
    elif change == "receipt-field":
        subject = layout.receipt_file(1)
        path = bag / subject
        path.write_bytes(path.read_bytes().replace(b'"outcome":"ok"', b'"outcome":"no"'))
        rehash(bag)
    elif change == "signature":
        subject = layout.receipt_signature_file(1)
        flip_byte(bag / subject, 5)
        rehash(bag)
    elif change == "token":
        token = sorted((bag / layout.TIMESTAMPS_DIR).glob("batch-*.tsr"))[0]
        subject = token.relative_to(bag).as_posix()
        flip_byte(token, len(token.read_bytes()) - 10)  # inside the TSA's signature
        rehash(bag)
    elif change == "custody-event":
        subject = layout.CHAIN
        edit_json_line(bag / subject, 0, {"actor": "someone else"})
        rehash(bag)
    elif change == "delete-file":
        subject = layout.receipt_file(2)
        (bag / subject).unlink()
    elif change == "add-file":
        subject = "data/extra.txt"
        (bag / subject).write_text("planted")
    elif change == "media-index":
        subject = layout.REPORT  # the file the forged media index names
        entries = [r for r in records(bag) if r["type"] == "response"]
        fake = [{"file": layout.REPORT, "record": entries[0]["id"], "sha256": "0" * 64}]
        (bag / layout.MEDIA_INDEX).write_text(json.dumps(fake))
        rehash(bag)
    result = verify_bundle(bag)
    assert not result.ok
    assert any(p.kind.startswith(expected) for p in result.problems), [str(p) for p in result.problems]
    assert any(subject in p.subject for p in result.problems if p.kind.startswith(expected)), [
        str(p) for p in result.problems
    ]


def test_report_is_self_contained_and_escaped(sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa,
                                              tmp_path: Path) -> None:  # fmt: skip
    from tests.support.integrity import build

    build(sqlite_archive, site, openssl_tsa)
    with sqlite_archive.catalogue.engine.begin() as conn:
        conn.execute(text("UPDATE sources SET title = '<script>alert(1)</script> & \"x\"' WHERE id = 1"))
    bag = Path(export_bundle(sqlite_archive, "strike-a", tmp_path / "b").path)
    page = (bag / layout.REPORT).read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;" in page
    assert "http://" not in page.split("<body>")[0] and ' src="http' not in page and "<link" not in page
    assert "Strike A" in page and "online" in page and "Receipt SHA-256" in page and "Chain of custody" in page
    verify = (bag / layout.VERIFY).read_text()
    assert "openssl ts -verify" in verify and "sha256sum -c" in verify and "archiver verify-bundle" in verify


def test_cli_export_and_verify_bundle(
    sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa, tmp_path: Path
) -> None:
    from tests.support.integrity import build

    build(sqlite_archive, site, openssl_tsa)
    root = ["--root", str(sqlite_archive.settings.root), "--collector", "test-collector"]
    runner = CliRunner()
    out = tmp_path / "ks.zip"
    done = runner.invoke(cli, [*root, "export", "--incident", "strike-a", "--out", str(out), "--zip", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["format"] == "bagit-zip"
    again = runner.invoke(cli, [*root, "export", "--incident", "strike-a", "--out", str(out), "--zip"])
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output
    ok = runner.invoke(cli, ["verify-bundle", "--json", str(out)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    missing = runner.invoke(cli, [*root, "export", "--incident", "nope", "--out", str(tmp_path / "x")])
    assert missing.exit_code == 3 and "no incident" in missing.output
