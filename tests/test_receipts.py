"""Capture receipts, their signatures, Merkle-batched RFC 3161 timestamps and custody checkpoints.

Archives are real: pages captured by the capture job from http.server on 127.0.0.1, timestamps from an
``openssl ts`` TSA, signatures checked with the openssl CLI. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from archiver import custody, keys
from archiver.archive import Archive
from archiver.canonical import canonical_json
from archiver.catalogue.integrity_models import CustodyCheckpoint, Receipt, TimestampBatch, TimestampToken
from archiver.catalogue.models import Artifact, Capture, CustodyEvent, WarcFile
from archiver.catalogue.store import SourceRequest
from archiver.catalogue.warcs import artifact_from_ref
from archiver.clock import FixedClock, SequentialIds
from archiver.errors import ArchiverError
from archiver.integrity.batches import batch_statement, checkpoint, pending_count, timestamp_pending
from archiver.integrity.receipts import (
    RECEIPT_TYPE,
    CaptureFacts,
    issue_receipt,
    load_facts,
    record_receipt,
    write_receipt,
)
from archiver.merkle import verify_inclusion
from archiver.timestamps import TsaConfig, parse_token, verify_token
from archiver.warc.reader import iter_records
from archiver.warc.records import RecordRef
from archiver.warc.writer import WarcSink
from tests.support.integrity import (
    Site,
    capture_site,
    recapture,
    site_fixture,  # noqa: F401 - pytest fixture "site"
    with_tsa,
)
from tests.support.tsa import (
    OpensslTsa,
    openssl_ts_verify,
    openssl_tsa_fixture,  # noqa: F401 - pytest fixture "openssl_tsa"
)
from tests.support.warc_files import http_pair, inflate


def _receipts(archive: Archive) -> dict[int, Receipt]:
    with archive.session() as s:
        return {r.capture_id: r for r in s.scalars(select(Receipt))}


def _signer(archive: Archive) -> keys.Signer:
    return keys.load_signer(archive.settings.key_dir)


# --- the receipt ----------------------------------------------------------------------------------------------


def test_receipt_states_the_capture_and_every_record(archive: Archive, site: Site) -> None:
    captures = capture_site(archive, site)
    cid = captures["report.html"]
    receipt = _receipts(archive)[cid]
    doc = json.loads(receipt.canonical)
    assert canonical_json(doc) == receipt.canonical  # stored in canonical form
    assert receipt.sha256 == hashlib.sha256(receipt.canonical).hexdigest()
    assert (doc["type"], doc["version"], doc["signing_key"]) == (RECEIPT_TYPE, 1, _signer(archive).key_id)
    cap = doc["capture"]
    assert cap["id"] == cid and cap["outcome"] == "ok" and cap["http_status"] == 200
    assert cap["final_url"] == site.url("report.html")
    assert (cap["collector"], cap["egress"], cap["method"]) == ("test-collector", "direct", "web")
    assert cap["started_at"].endswith("Z") and cap["started_at"] < cap["ended_at"]
    assert "archiver" in cap["tools"]
    assert doc["source"]["url"] == site.url("report.html")
    assert doc["incidents"] == ["strike-a"]
    with archive.session() as s:
        rows = s.execute(
            select(Artifact, WarcFile.name)
            .join(WarcFile)
            .where(Artifact.capture_id == cid, Artifact.role != "receipt")
            .order_by(WarcFile.name, Artifact.offset)
        ).all()
    # The page, its stylesheet and image: a request and a response each.
    assert len(rows) == 6
    assert doc["records"] == [
        {
            "id": a.record_id,
            "type": a.record_type,
            "target": a.target_uri,
            "warc": name,
            "offset": a.offset,
            "length": a.length,
            "block_sha256": a.block_sha256,
            "payload_sha256": a.payload_sha256,
        }
        for a, name in rows
    ]
    with archive.session() as s:
        signed = s.scalars(select(CustodyEvent).where(CustodyEvent.action == "signed")).all()
    assert {json.loads(e.details)["receipt_sha256"] for e in signed} == {r.sha256 for r in _receipts(archive).values()}


def test_receipt_is_a_metadata_record_in_the_warc(archive: Archive, site: Site) -> None:
    cid = capture_site(archive, site)["video.mp4"]
    receipt = _receipts(archive)[cid]
    with archive.session() as s:
        row, name = s.execute(
            select(Artifact, WarcFile.name).join(WarcFile).where(Artifact.record_id == receipt.record_id)
        ).one()
        response_id = s.scalar(
            select(Artifact.record_id).where(Artifact.capture_id == cid, Artifact.record_type == "response")
        )
    assert (row.role, row.record_type, row.media_type, row.capture_id) == (
        "receipt",
        "metadata",
        "application/json",
        cid,
    )
    path = archive.settings.warc_dir / name
    record = next(r for r in iter_records(path) if r.offset == row.offset)
    assert record.header("Content-Type") == "application/json"
    assert record.target_uri == f"urn:archiver:receipt:{cid}"
    assert record.header("WARC-Refers-To") == response_id
    assert record.header("Archiver-Key-Id") == receipt.key_id
    assert record.header("Archiver-Signature") == f"ed25519:{receipt.signature.hex()}"
    # The record's block is the receipt, byte for byte: its block digest is the receipt's hash.
    assert record.block_sha256 == receipt.sha256 == row.block_sha256
    member = path.read_bytes()[row.offset : row.offset + row.length]
    assert inflate(member).split(b"\r\n\r\n", 1)[1] == receipt.canonical + b"\r\n\r\n"


def test_signature_verifies_with_the_openssl_cli(archive: Archive, site: Site, tmp_path: Path) -> None:
    capture_site(archive, site)
    receipt = next(iter(_receipts(archive).values()))
    (tmp_path / "digest.bin").write_bytes(bytes.fromhex(receipt.sha256))
    (tmp_path / "receipt.sig").write_bytes(receipt.signature)
    pub = archive.settings.key_dir / keys.PUBLIC_KEY_NAME
    args = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin", "-in", "digest.bin"]
    ok = subprocess.run([*args, "-sigfile", "receipt.sig"], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout, ok.stderr
    (tmp_path / "digest.bin").write_bytes(hashlib.sha256(b"another receipt").digest())
    bad = subprocess.run([*args, "-sigfile", "receipt.sig"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0


# --- issuing in the capture's transaction --------------------------------------------------------------------


def _capture_rows(archive: Archive, url: str) -> tuple[int, int]:
    with archive.store() as store:
        src, _ = store.ensure_source(SourceRequest(url=url))
        cap = Capture(
            source_id=src.id,
            method="web",
            started_at=archive.clock.now(),
            outcome="running",
            requested_url=url,
            collector=archive.actor,
            egress="direct",
            tools={"archiver": "test"},
        )
        store.s.add(cap)
        store.s.flush()
        return src.id, cap.id


def _sink(archive: Archive) -> WarcSink:
    return WarcSink(archive.settings.warc_dir, prefix="t", clock=FixedClock(), ids=SequentialIds(), host="h")


def _add_capture_rows(s: Session, capture_id: int, refs: list[RecordRef], warc_id: int) -> None:
    """What the capture job adds in its commit transaction, before the receipt."""
    for ref in refs:
        s.add(artifact_from_ref(ref, capture_id=capture_id, role="page", warc_file_id=warc_id))


def test_receipt_commits_or_rolls_back_with_the_capture(archive: Archive) -> None:
    url = "http://127.0.0.1:9/page"
    _, capture_id = _capture_rows(archive, url)
    sink = _sink(archive)
    refs = sink.write_group(http_pair(sink, url, b"the page"))
    ended = archive.clock.now()
    with archive.session() as s:
        facts = load_facts(
            s,
            capture_id,
            ended_at=ended,
            outcome="ok",
            http_status=200,
            final_url=url,
            extra_tools={"yt-dlp": "2025.1.1"},
        )
    issued = write_receipt(sink, _signer(archive), facts, refs)  # before the transaction: it writes the WARC
    assert json.loads(issued.canonical)["capture"]["tools"] == {"archiver": "test", "yt-dlp": "2025.1.1"}
    assert issued.ref.warc_file == refs[0].warc_file and issued.ref.offset == refs[-1].offset + refs[-1].length
    with archive.session() as s:
        warc = WarcFile(name=issued.ref.warc_file, status="open", opened_at=ended)
        s.add(warc)
    warc_id = warc.id

    def commit(fail: bool) -> None:
        with archive.session() as s:
            _add_capture_rows(s, capture_id, refs, warc_id)
            cap = s.get(Capture, capture_id)
            assert cap is not None
            cap.ended_at, cap.outcome, cap.http_status, cap.final_url = ended, "ok", 200, url
            cap.tools = {**cap.tools, "yt-dlp": "2025.1.1"}
            record_receipt(s, archive.clock, issued, warc_file_id=warc_id, actor="tester")
            if fail:
                raise RuntimeError("the capture's transaction fails after the receipt was added")

    with pytest.raises(RuntimeError):
        commit(fail=True)
    with archive.session() as s:
        assert s.scalar(select(func.count()).select_from(Receipt)) == 0
        assert s.scalar(select(func.count()).select_from(Artifact)) == 0
        assert s.scalar(select(func.count()).where(CustodyEvent.action == "signed")) == 0
    commit(fail=False)
    receipt = _receipts(archive)[capture_id]
    assert receipt.sha256 == issued.sha256 and receipt.record_id == issued.ref.record_id
    sink.close()


def test_record_refuses_a_receipt_the_catalogue_contradicts(archive: Archive) -> None:
    url = "http://127.0.0.1:9/page"
    _, capture_id = _capture_rows(archive, url)
    sink = _sink(archive)
    refs = sink.write_group(http_pair(sink, url, b"the page"))
    with archive.session() as s:
        facts = load_facts(s, capture_id, ended_at=archive.clock.now(), outcome="ok", http_status=200, final_url=url)
        warc = WarcFile(name=refs[0].warc_file, status="open", opened_at=archive.clock.now())
        s.add(warc)
    issued = write_receipt(sink, _signer(archive), facts, refs)
    with pytest.raises(ArchiverError, match=r"capture.ended_at differs"), archive.session() as s:
        _add_capture_rows(s, capture_id, refs, warc.id)
        cap = s.get(Capture, capture_id)
        assert cap is not None
        cap.ended_at, cap.outcome, cap.http_status, cap.final_url = archive.clock.now(), "ok", 200, url
        record_receipt(s, archive.clock, issued, warc_file_id=warc.id, actor="tester")
    assert _receipts(archive) == {}
    sink.close()


def test_issue_receipt_in_one_call(archive: Archive) -> None:
    url = "http://127.0.0.1:9/video"
    _, capture_id = _capture_rows(archive, url)
    with _sink(archive) as sink, archive.session() as s:
        refs = sink.write_group(http_pair(sink, url, b"\x00video bytes"))
        warc = WarcFile(name=refs[0].warc_file, status="open", opened_at=archive.clock.now())
        s.add(warc)
        s.flush()
        _add_capture_rows(s, capture_id, refs, warc.id)
        cap = s.get(Capture, capture_id)
        assert cap is not None
        cap.ended_at, cap.outcome = archive.clock.now(), "ok"
        receipt = issue_receipt(s, sink, _signer(archive), archive.clock, cap, cap.source, [], refs)
    assert json.loads(receipt.canonical)["records"][0]["offset"] == refs[0].offset
    with pytest.raises(ValueError, match="wrote none"):
        write_receipt(_sink(archive), _signer(archive), CaptureFacts.of(cap, cap.source, []), [])


def test_receipt_rows_are_write_once(archive: Archive, site: Site, openssl_tsa: OpensslTsa) -> None:
    capture_site(archive, site)
    with archive.session() as s:
        timestamp_pending(s, archive.clock, with_tsa(archive, openssl_tsa), _signer(archive), actor="t")
    for statement in (
        "UPDATE receipts SET sha256 = 'x'",
        "DELETE FROM receipts",
        "UPDATE receipts SET batch_id = NULL",  # once batched, always batched
        "UPDATE timestamp_tokens SET tsa_name = 'x'",
        "DELETE FROM timestamp_batches",
    ):
        with pytest.raises(DBAPIError, match="write-once"), archive.catalogue.engine.begin() as conn:
            conn.execute(text(statement))


# --- batches ----------------------------------------------------------------------------------------------------


def test_pending_receipts_share_one_timestamp(
    archive: Archive, site: Site, openssl_tsa: OpensslTsa, tmp_path: Path
) -> None:
    capture_site(archive, site)
    with archive.session() as s:
        assert pending_count(s) == 3
    before = len(openssl_tsa.requests)
    with archive.session() as s:
        report = timestamp_pending(s, archive.clock, with_tsa(archive, openssl_tsa), _signer(archive), actor="t")
    assert len(openssl_tsa.requests) == before + 1  # one request for the whole batch
    assert report.timestamped and report.size == 3 and report.pending == 0
    assert [t.ok for t in report.tsas] == [True]
    with archive.session() as s:
        batch = s.scalars(select(TimestampBatch)).one()
        token = s.scalars(select(TimestampToken)).one()
        receipts = s.scalars(select(Receipt).order_by(Receipt.id)).all()
        event = s.scalars(select(CustodyEvent).where(CustodyEvent.action == "timestamped")).one()
        assert pending_count(s) == 0
    # What is timestamped is the statement {"root", "size"}, whose SHA-256 the token's imprint holds.
    statement = canonical_json({"root": batch.root, "size": 3})
    assert statement == batch_statement(batch.root, batch.size)
    digest = hashlib.sha256(statement).digest()
    assert batch.statement_sha256 == token.digest == digest.hex()
    assert parse_token("test-tsa", token.token_der).message_digest == digest
    assert verify_token(token.token_der, digest, openssl_tsa.ca_pem) == []
    assert keys.verify_signature(_signer(archive).public_pem, digest, batch.signature)
    assert "BEGIN CERTIFICATE" in token.certificates
    # Each receipt verifies alone: its leaf index and path lead to the root.
    assert [r.leaf_index for r in receipts] == [0, 1, 2]
    for r in receipts:
        path = [bytes.fromhex(p) for p in r.merkle_path or []]
        assert r.batch_id == batch.id and r.leaf_index is not None
        assert verify_inclusion(bytes.fromhex(r.sha256), r.leaf_index, 3, path, bytes.fromhex(batch.root))
    # ... offline, with the openssl CLI, as VERIFY.md tells a court's technical staff.
    (tmp_path / "batch.tsr").write_bytes(token.token_der)
    result = openssl_ts_verify(tmp_path / "batch.tsr", digest.hex(), openssl_tsa.ca_path)
    assert result.returncode == 0, result.stderr
    details = json.loads(event.details)
    assert event.subject == f"batch:{batch.id}" and details["root"] == batch.root and details["size"] == 3
    # Nothing left: the next call forms no batch and asks no TSA.
    with archive.session() as s:
        again = timestamp_pending(s, archive.clock, with_tsa(archive, openssl_tsa), _signer(archive), actor="t")
    assert not again.timestamped and again.note and len(openssl_tsa.requests) == before + 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_no_tsa_reachable_leaves_receipts_pending_until_the_next_call(
    archive: Archive, site: Site, openssl_tsa: OpensslTsa
) -> None:
    capture_site(archive, site)
    down = [
        TsaConfig("down", f"http://127.0.0.1:{_closed_port()}/", openssl_tsa.ca_pem, timeout=2),
        TsaConfig("broken", openssl_tsa.url_for("/http-500"), openssl_tsa.ca_pem, timeout=2),
        TsaConfig("liar", openssl_tsa.url_for("/replay"), openssl_tsa.ca_pem, timeout=2),
    ]
    with archive.session() as s:
        report = timestamp_pending(s, archive.clock, down, _signer(archive), actor="t")
    assert not report.timestamped and report.pending == 3
    assert [t.ok for t in report.tsas] == [False, False, False]
    assert "cannot reach" in (report.tsas[0].error or "") and "HTTP 500" in (report.tsas[1].error or "")
    with archive.session() as s:
        assert s.scalar(select(func.count()).select_from(TimestampBatch)) == 0
        assert pending_count(s) == 3
    with archive.session() as s:
        no_tsa = timestamp_pending(s, archive.clock, [], _signer(archive), actor="t")
    assert not no_tsa.timestamped and "no TSA" in (no_tsa.note or "")
    # One TSA down and one up: one token is enough, the failure is reported.
    with archive.session() as s:
        retry = timestamp_pending(
            s, archive.clock, [down[0], *with_tsa(archive, openssl_tsa)], _signer(archive), actor="t"
        )
    assert retry.timestamped and retry.size == 3 and retry.pending == 0
    assert [t.ok for t in retry.tsas] == [False, True]
    with archive.session() as s:
        assert s.scalar(select(func.count()).select_from(TimestampToken)) == 1


def test_later_receipts_form_the_next_batch(archive: Archive, site: Site, openssl_tsa: OpensslTsa) -> None:
    captures = capture_site(archive, site)
    tsas = with_tsa(archive, openssl_tsa)
    with archive.session() as s:
        first = timestamp_pending(s, archive.clock, tsas, _signer(archive), actor="t")
    with archive.session() as s:
        source_id = s.get(Capture, captures["report.html"]).source_id  # type: ignore[union-attr]
    recapture(archive, source_id)  # one more capture: one more receipt
    with archive.session() as s:
        second = timestamp_pending(s, archive.clock, tsas, _signer(archive), actor="t")
    assert (first.size, second.size) == (3, 1) and first.batch_id != second.batch_id
    assert len(captures) == 3


# --- checkpoints ------------------------------------------------------------------------------------------------


def test_checkpoint_signs_and_timestamps_the_chain_head(archive: Archive, site: Site, openssl_tsa: OpensslTsa) -> None:
    capture_site(archive, site)
    with archive.session() as s:
        head = custody.check_chain(s)
    with archive.session() as s:
        report = checkpoint(s, archive.clock, _signer(archive), with_tsa(archive, openssl_tsa), actor="t")
    assert (report.seq, report.head_hash) == (head.head_seq, head.head_hash)
    assert report.event_seq == head.head_seq + 1 and [t.ok for t in report.tsas] == [True]
    digest = hashlib.sha256(canonical_json({"seq": head.head_seq, "hash": head.head_hash})).digest()
    with archive.session() as s:
        row = s.scalars(select(CustodyCheckpoint)).one()
        token = s.scalars(select(TimestampToken).where(TimestampToken.checkpoint_id == row.id)).one()
        event = s.get(CustodyEvent, report.event_seq)
        assert custody.check_chain(s).ok
    assert row.statement_sha256 == digest.hex()
    assert keys.verify_signature(_signer(archive).public_pem, digest, row.signature)
    assert verify_token(token.token_der, digest, openssl_tsa.ca_pem) == []
    assert event is not None and event.action == "checkpoint"
    assert json.loads(event.details)["hash"] == head.head_hash
    # Without a TSA the checkpoint is still signed and stored.
    with archive.session() as s:
        unstamped = checkpoint(s, archive.clock, _signer(archive), [], actor="t")
    assert unstamped.tsas == () and unstamped.seq == report.event_seq
