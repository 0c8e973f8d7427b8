"""``verify``: a real captured, signed and timestamped archive verifies; each kind of tampering is named precisely.

Tampering is done as an attacker with file-system and database access would: WARC bytes edited and re-gzipped,
files cut or deleted, catalogue rows edited after dropping the write-once triggers, tokens swapped.
"""

from __future__ import annotations

import json
import string
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from archiver import custody
from archiver.archive import Archive
from archiver.catalogue.integrity_models import Receipt, TimestampBatch, TimestampToken
from archiver.catalogue.models import Artifact, Capture, CustodyEvent, WarcFile
from archiver.catalogue.store import SourceRequest
from archiver.errors import NotFoundError
from archiver.integrity import Problem
from archiver.integrity.batches import batch_statement
from archiver.keys import PUBLIC_KEY_NAME
from archiver.timestamps import TsaConfig, request_timestamp
from archiver.verify import VerifyReport, hash_file, verify_archive
from tests.support.integrity import (
    Built,
    Site,
    build,
    capture_site,
    issue_pending_receipts,
    recapture,
    site_fixture,  # noqa: F401 - pytest fixture "site"
    tamper,
)
from tests.support.tsa import (
    OpensslTsa,
    openssl_tsa_fixture,  # noqa: F401 - pytest fixture "openssl_tsa"
    untrusted_tsa_fixture,  # noqa: F401 - pytest fixture "untrusted_tsa"
)
from tests.support.warc_files import http_pair, inflate

ALL_CHECKS = {
    "files",
    "records",
    "artifacts",
    "custody-chain",
    "checkpoints",
    "receipts",
    "signatures",
    "merkle-paths",
    "batches",
    "tokens",
}


@pytest.fixture
def built(archive: Archive, site: Site, openssl_tsa: OpensslTsa) -> Built:
    return build(archive, site, openssl_tsa)


def _errors(report: VerifyReport) -> set[tuple[str, str]]:
    return {(p.kind, p.subject) for p in report.errors}


def _kinds(report: VerifyReport) -> set[str]:
    return {p.kind for p in report.errors}


def _artifact(archive: Archive, capture_id: int, record_type: str = "response") -> tuple[Artifact, Path]:
    with archive.session() as s:
        art, name = s.execute(
            select(Artifact, WarcFile.name)
            .join(WarcFile)
            .where(Artifact.capture_id == capture_id, Artifact.record_type == record_type)
            .order_by(Artifact.id)
        ).first()  # type: ignore[misc]
    return art, archive.settings.warc_dir / name


def _same_length_member(record: bytes, length: int) -> bytes | None:
    """A gzip member holding ``record`` exactly ``length`` bytes long, so that later records keep their offsets:
    try compression settings, padding the gzip header (FCOMMENT or FEXTRA, RFC 1952 §2.3.1) if shorter."""
    # The sink's own settings first (level 6, default memLevel 8), then others.
    for level, mem in ((6, 8), (9, 9), (1, 8)):
        for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED):
            comp = zlib.compressobj(level, zlib.DEFLATED, 31, mem, strategy)
            member = comp.compress(record) + comp.flush()
            pad = length - len(member)
            if pad == 0:
                return member
            head = bytearray(member[:10])
            if pad == 1:
                head[3] |= 0x10  # FLG.FCOMMENT: an empty, zero-terminated comment
                return bytes(head) + b"\x00" + member[10:]
            if pad >= 2:
                head[3] |= 0x04  # FLG.FEXTRA: XLEN and XLEN bytes
                return bytes(head) + (pad - 2).to_bytes(2, "little") + b"\x00" * (pad - 2) + member[10:]
    return None


def _rewrite(path: Path, offset: int, length: int, changes: Iterable[Callable[[bytes], bytes]]) -> bytes:
    """Re-gzip the record at ``offset`` with the first of ``changes`` that fits its member; returns the record."""
    data = path.read_bytes()
    original = inflate(data[offset : offset + length])
    for change in changes:
        record = change(original)
        member = _same_length_member(record, length)
        if member is not None:
            path.chmod(0o644)
            path.write_bytes(data[:offset] + member + data[offset + length :])
            return record
    raise AssertionError("no change fits the original gzip member")


def _replace(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    return lambda r: r.replace(old, new, 1)


def _flip_at(i: int) -> Callable[[bytes], bytes]:
    return lambda r: r[:i] + bytes([r[i] ^ 0x01]) + r[i + 1 :]


# --- a sound archive ------------------------------------------------------------------------------------------


def test_a_sound_archive_verifies_and_the_check_is_logged(archive: Archive, built: Built) -> None:
    seen: list[tuple[str, Any]] = []
    quick = verify_archive(archive, progress=lambda kind, data: seen.append((kind, data)))
    assert quick.ok and quick.problems == ()
    assert quick.checks == ("files",)  # no claim of a check that did not run
    with archive.session() as s:
        rows = s.scalars(select(WarcFile)).all()  # the capture run's file and the receipts' file
    assert quick.counts == {"files": 1, "bytes": sum(r.size or 0 for r in rows)}  # receipts beside their records
    assert all(("file", r.name) in seen for r in rows)
    deep = verify_archive(archive, deep=True)
    assert deep.ok and deep.problems == (), [str(p) for p in deep.problems]
    assert set(deep.checks) == ALL_CHECKS
    assert deep.counts["receipts"] == 3 and deep.counts["merkle_paths"] == 3 and deep.counts["batches"] == 1
    assert deep.counts["tokens"] == 2 and deep.counts["checkpoints"] == 1 and deep.counts["signatures"] == 5
    # Every record but the files' warcinfo records is catalogued.
    assert deep.counts["records"] == deep.counts["artifacts"] + deep.counts["files"]
    with archive.session() as s:
        events = s.scalars(select(CustodyEvent).where(CustodyEvent.action == "verified").order_by(CustodyEvent.seq))
        first, second = events.all()
        assert custody.check_chain(s).ok
    assert (first.seq, second.seq) == (quick.event_seq, deep.event_seq)
    details = json.loads(second.details)
    assert details["outcome"] == "ok" and details["deep"] is True and set(details["checks"]) == ALL_CHECKS
    assert details["counts"]["receipts"] == 3


def test_hash_file_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    data = bytes(range(256)) * 40_000  # over two buffers
    (tmp_path / "f").write_bytes(data)
    assert hash_file(tmp_path / "f") == hash_file(tmp_path / "f", len(data))
    assert hash_file(tmp_path / "f").sha256 == hashlib.sha256(data).hexdigest()
    assert hash_file(tmp_path / "f", 5).sha256 is None  # a size mismatch is known without reading


# --- WARC files -------------------------------------------------------------------------------------------------


def test_edited_payload_is_named(archive: Archive, built: Built) -> None:
    art, path = _artifact(archive, built.captures["video.mp4"])
    # The attacker changes one byte of the video and re-gzips the record (same member length).
    _rewrite(path, art.offset, art.length, (_flip_at(-i) for i in range(100, 5000, 7)))
    assert _kinds(verify_archive(archive)) == {"file-hash"}
    deep = verify_archive(archive, deep=True)
    where = f"record:{art.record_id} ({path.name} @ {art.offset})"
    assert _errors(deep) == {
        ("file-hash", f"file:{path.name}"),
        ("record-block-digest", where),
        ("record-payload-digest", where),
        ("artifact-block-sha256", f"artifact:{art.id}"),
        ("artifact-payload-sha256", f"artifact:{art.id}"),
    }


def test_edited_header_is_named(archive: Archive, built: Built, site: Site) -> None:
    art, path = _artifact(archive, built.captures["video.mp4"])
    url = site.url("video.mp4").encode()
    # "video/mp4" repeats the Content-Type that follows, so the re-gzipped record is no longer than it was.
    forged = [url.replace(b"video.mp4", b"video/mp4"), url.replace(b"video", b"vidoe")]
    forged += [url[:-1] + c.encode() for c in string.ascii_letters if c != "4"]
    _rewrite(path, art.offset, art.length, (_replace(url, f) for f in forged))
    deep = verify_archive(archive, deep=True)
    assert _errors(deep) == {("file-hash", f"file:{path.name}"), ("artifact-target-uri", f"artifact:{art.id}")}
    (problem,) = [p for p in deep.errors if p.kind == "artifact-target-uri"]
    assert problem.expected == site.url("video.mp4") and problem.found in {f.decode() for f in forged}


def test_flipped_byte_in_a_gzip_member_is_named(archive: Archive, built: Built) -> None:
    art, path = _artifact(archive, built.captures["video.mp4"])
    data = bytearray(path.read_bytes())
    data[art.offset + art.length // 2] ^= 0x40  # inside the deflate stream
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    deep = verify_archive(archive, deep=True)
    assert ("file-hash", f"file:{path.name}") in _errors(deep)
    # zlib fails before the record's header is read: the record is named after its Artifact row.
    assert _errors(deep) == {
        ("file-hash", f"file:{path.name}"),
        ("record-bad-gzip", f"record:{art.record_id} ({path.name} @ {art.offset})"),
    }
    # The reader resynchronises on the next member: every other record is still read, and sound.
    assert deep.counts["records"] >= 13


def test_truncated_file_is_named(archive: Archive, built: Built) -> None:
    with archive.session() as s:
        row = s.scalars(select(WarcFile).order_by(WarcFile.id)).first()
        assert row is not None
        last = s.scalars(
            select(Artifact).where(Artifact.warc_file_id == row.id).order_by(Artifact.offset.desc())
        ).first()
    assert last is not None and row.size is not None
    path = archive.settings.warc_dir / row.name
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.truncate(row.size - 50)
    quick = verify_archive(archive)
    assert [(p.kind, p.expected, p.found) for p in quick.errors] == [
        ("file-size", f"{row.size} bytes", f"{row.size - 50} bytes")
    ]
    deep = verify_archive(archive, deep=True)
    assert _errors(deep) == {
        ("file-size", f"file:{row.name}"),
        ("record-truncated", f"record:{last.record_id} ({row.name} @ {last.offset})"),
    }


def test_deleted_file_is_named_among_others(archive: Archive, built: Built) -> None:
    with archive.session() as s:
        source_id = s.get(Capture, built.captures["other.html"]).source_id  # type: ignore[union-attr]
    recapture(archive, source_id)  # a second run: a second file
    with archive.session() as s:
        first, *others = s.scalars(select(WarcFile).order_by(WarcFile.id)).all()
    assert len(others) == 1
    (archive.settings.warc_dir / first.name).unlink()
    quick = verify_archive(archive)
    assert _errors(quick) == {("file-missing", f"file:{first.name}")}
    assert quick.counts["files"] == 1  # the file still there was hashed; the missing one is the error
    deep = verify_archive(archive, deep=True)
    assert _kinds(deep) == {"file-missing"}  # its records are not reported one by one


# --- catalogue rows -----------------------------------------------------------------------------------------------


def test_edited_artifact_hash_is_named(archive: Archive, built: Built) -> None:
    art, _ = _artifact(archive, built.captures["video.mp4"])
    tamper(archive, "UPDATE artifacts SET payload_sha256 = :h WHERE id = :id", h="0" * 64, id=art.id)
    # The files are untouched: the file-level check has nothing to say, and does not pretend otherwise.
    assert verify_archive(archive).ok
    deep = verify_archive(archive, deep=True)
    assert _kinds(deep) == {"artifact-payload-sha256", "receipt-content"}
    (content,) = [p for p in deep.errors if p.kind == "receipt-content"]
    assert content.subject == f"receipt:{built.captures['video.mp4']}"
    assert content.expected is not None and content.expected.endswith(f'.payload_sha256 = "{"0" * 64}"')
    assert content.found is not None and str(art.payload_sha256) in content.found


def test_edited_custody_event_is_named(archive: Archive, built: Built) -> None:
    tamper(archive, "UPDATE custody_events SET actor = 'mallory' WHERE seq = 5")
    deep = verify_archive(archive, deep=True)
    assert _errors(deep) == {("custody-hash", "event:5")}


def test_deleted_custody_event_is_named(archive: Archive, built: Built) -> None:
    tamper(archive, "DELETE FROM custody_events WHERE seq = 5")
    deep = verify_archive(archive, deep=True)
    assert _errors(deep) == {("custody-gap", "event:6"), ("custody-prev-hash", "event:6")}


def test_cut_chain_head_is_caught_by_the_checkpoint(archive: Archive, built: Built) -> None:
    # Deleting the newest events leaves a chain that is valid in itself ...
    tamper(archive, "DELETE FROM custody_events WHERE seq >= :seq", seq=built.checkpoint.seq)
    with archive.session() as s:
        assert custody.check_chain(s).ok
    # ... but not the checkpoint, which names a later event.
    deep = verify_archive(archive, deep=True)
    assert _errors(deep) == {("checkpoint-chain-cut", f"checkpoint:{built.checkpoint.checkpoint_id}")}


def test_swapped_receipt_is_named(archive: Archive, built: Built) -> None:
    a, b = built.captures["report.html"], built.captures["other.html"]
    _swap_contents(archive, a, b)
    deep = verify_archive(archive, deep=True)
    for cid in (a, b):
        assert ("receipt-content", f"receipt:{cid}") in _errors(deep)
    # Each row now holds a genuine, validly signed receipt: of another capture, in another leaf.
    assert _kinds(deep) == {"receipt-content", "receipt-incident", "receipt-merkle", "receipt-record"}


def _swap_contents(archive: Archive, a: int, b: int) -> None:
    """Swap what the receipt rows of captures ``a`` and ``b`` hold."""
    cols = ("sha256", "canonical", "signature", "record_id")
    sets = ", ".join(f"{c} = (SELECT {c} FROM swap WHERE swap.capture_id = :other)" for c in cols)
    tamper(
        archive,
        f"CREATE TEMP TABLE swap AS SELECT capture_id, {', '.join(cols)} FROM receipts WHERE capture_id IN ({a}, {b})",
        "UPDATE receipts SET sha256 = 'swap' || capture_id WHERE capture_id IN (:a, :b)",
        f"UPDATE receipts SET {sets.replace(':other', str(b))} WHERE capture_id = :a",
        f"UPDATE receipts SET {sets.replace(':other', str(a))} WHERE capture_id = :b",
        a=a,
        b=b,
    )


# --- timestamps and trust -----------------------------------------------------------------------------------------


def _batch_token(archive: Archive) -> tuple[TimestampBatch, TimestampToken]:
    with archive.session() as s:
        return s.scalars(select(TimestampBatch)).one(), s.scalars(
            select(TimestampToken).where(TimestampToken.batch_id.is_not(None))
        ).one()


def test_token_for_other_data_is_named(archive: Archive, built: Built, openssl_tsa: OpensslTsa) -> None:
    _, token = _batch_token(archive)
    other = request_timestamp(TsaConfig("t", openssl_tsa.url, openssl_tsa.ca_pem, 5), b"\x01" * 32)
    tamper(archive, "UPDATE timestamp_tokens SET token_der = :der WHERE id = :id", der=other.der, id=token.id)
    deep = verify_archive(archive, deep=True)
    # The row's genTime may also disagree with the substitute token's, when they were made in different seconds.
    assert ("token-other-data", f"token:{token.id}") in _errors(deep)
    assert _errors(deep) <= {("token-other-data", f"token:{token.id}"), ("token-gen-time", f"token:{token.id}")}


def test_token_from_an_untrusted_tsa_is_named(archive: Archive, built: Built, untrusted_tsa: OpensslTsa) -> None:
    import hashlib

    batch, token = _batch_token(archive)
    digest = hashlib.sha256(batch_statement(batch.root, batch.size)).digest()
    # A valid token for exactly this batch, from a TSA the archive does not trust.
    forged = request_timestamp(TsaConfig("u", untrusted_tsa.url, untrusted_tsa.ca_pem, 5), digest)
    tamper(archive, "UPDATE timestamp_tokens SET token_der = :der WHERE id = :id", der=forged.der, id=token.id)
    deep = verify_archive(archive, deep=True)
    assert ("token-untrusted", f"token:{token.id}") in _errors(deep)
    assert _errors(deep) <= {("token-untrusted", f"token:{token.id}"), ("token-gen-time", f"token:{token.id}")}


def test_checks_that_cannot_run_are_not_claimed(archive: Archive, built: Built) -> None:
    import dataclasses

    archive.settings = dataclasses.replace(archive.settings, tsas=())
    no_tsa = verify_archive(archive, deep=True)
    assert no_tsa.ok and "tokens" not in no_tsa.checks and "tokens" not in no_tsa.counts
    assert [p.kind for p in no_tsa.warnings] == ["tokens-unchecked"]
    (archive.settings.key_dir / PUBLIC_KEY_NAME).unlink()
    no_key = verify_archive(archive, deep=True)
    assert "signatures" not in no_key.checks and _kinds(no_key) == {"key-missing"}


# --- scope and what is not an error -------------------------------------------------------------------------------


def test_incident_scope(archive: Archive, built: Built) -> None:
    report = verify_archive(archive, incident="strike-b", deep=True)
    assert report.ok and report.scope == "incident:strike-b"
    assert report.counts["receipts"] == 1 and report.counts["files"] == 1  # its records and its receipt, in one file
    with archive.session() as s:
        event = s.get(CustodyEvent, report.event_seq)
    assert event is not None and (event.subject, event.incident_id) == ("incident:strike-b", "strike-b")
    with pytest.raises(NotFoundError):
        verify_archive(archive, incident="no-such-incident")


def test_receipt_incidents_may_grow_but_not_shrink(archive: Archive, built: Built, site: Site) -> None:
    with archive.store() as store:  # a later manifest cites a captured source from another incident
        store.add_source("strike-b", SourceRequest(url=site.url("video.mp4")))
    assert verify_archive(archive, deep=True).ok
    tamper(archive, "DELETE FROM incident_sources WHERE incident_id = 'strike-a'")
    deep = verify_archive(archive, deep=True)
    assert _kinds(deep) == {"receipt-incident"}
    assert {p.subject for p in deep.errors} == {f"receipt:{c}" for k, c in built.captures.items() if k != "other.html"}


def test_deleted_receipt_is_named(archive: Archive, built: Built) -> None:
    cid = built.captures["other.html"]
    tamper(archive, "DELETE FROM receipts WHERE capture_id = :c", c=cid)
    deep = verify_archive(archive, deep=True)
    # The custody log says it was signed; its batch lacks a leaf. (Its WARC record is still on disk.)
    assert _errors(deep) == {("receipt-missing", f"receipt:{cid}"), ("batch-size", f"batch:{built.batch.batch_id}")}


def test_captures_from_before_receipts_are_a_warning(archive: Archive, site: Site) -> None:
    """A capture stored by a version without receipts (rows and records, no receipt) is a warning, not an error;
    issuing its receipt afterwards turns the warning into 'waiting for a timestamp'."""
    from tests.test_receipts import _add_capture_rows, _capture_rows, _sink

    url = site.url("page.html")
    _, capture_id = _capture_rows(archive, url)
    sink = _sink(archive)
    refs = sink.write_group(http_pair(sink, url, b"captured before receipts existed"))
    closed = sink.close()
    assert closed is not None
    with archive.session() as s:
        warc = WarcFile(name=closed.name, sha256=closed.sha256, size=closed.size, records=closed.records,
                        opened_at=closed.opened_at, closed_at=closed.closed_at, status="closed")  # fmt: skip
        s.add(warc)
        s.flush()
        _add_capture_rows(s, capture_id, refs, warc.id)
        cap = s.get(Capture, capture_id)
        assert cap is not None
        cap.outcome, cap.ended_at = "ok", archive.clock.now()
    report = verify_archive(archive, deep=True)
    kinds = [p.kind for p in report.warnings]
    assert report.ok and sorted(kinds) == ["receipt-none", "tokens-unchecked"]  # no TSA configured here
    issue_pending_receipts(archive)
    assert {p.kind for p in verify_archive(archive, deep=True).warnings} == {"receipt-pending", "tokens-unchecked"}


def test_pending_receipts_and_stray_files_are_warnings(archive: Archive, site: Site) -> None:
    capture_site(archive, site)
    (archive.settings.warc_dir / "stray.warc.gz").write_bytes(b"")
    report = verify_archive(archive, deep=True)
    assert report.ok
    warnings = sorted((p.kind, p.subject) for p in report.warnings)
    assert warnings.count(("file-uncatalogued", "file:stray.warc.gz")) == 1
    assert sum(1 for k, _ in warnings if k == "receipt-pending") == 3
    assert all(isinstance(p, Problem) and str(p).endswith("(warning)") for p in report.warnings)


def test_report_as_dict_is_json(archive: Archive, built: Built) -> None:
    tamper(archive, "UPDATE custody_events SET actor = 'mallory' WHERE seq = 3")
    data = verify_archive(archive, deep=True).as_dict()
    assert json.loads(json.dumps(data))["ok"] is False
    assert data["problems"][0]["kind"] == "custody-hash"
    with archive.session() as s:
        receipts = s.scalars(select(Receipt)).all()
    assert len(receipts) == 3
