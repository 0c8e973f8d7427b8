"""``lookup``: an investigator holds a file and asks whether, where, when and how we captured it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from archiver.archive import Archive
from archiver.errors import NotFoundError
from archiver.lookup import INVALID, UNCHECKED, VALID, lookup, lookup_archive, resolve_query
from archiver.warc.reader import iter_records
from tests.support.integrity import (
    FILES,
    Built,
    Site,
    build,
    capture_site,
    recapture,
    site_fixture,  # noqa: F401 - pytest fixture "site"
    tamper,
)
from tests.support.tsa import (
    OpensslTsa,
    openssl_tsa_fixture,  # noqa: F401 - pytest fixture "openssl_tsa"
)


@pytest.fixture
def built(archive: Archive, site: Site, openssl_tsa: OpensslTsa) -> Built:
    return build(archive, site, openssl_tsa)


def test_a_file_we_hold_is_found_with_its_whole_story(
    archive: Archive, built: Built, site: Site, tmp_path: Path
) -> None:
    held = tmp_path / "from-a-usb-stick.mp4"
    held.write_bytes(FILES["video.mp4"])
    report = lookup_archive(archive, held)
    assert report.found and report.sha256 == hashlib.sha256(FILES["video.mp4"]).hexdigest()
    (match,) = report.matches
    assert match.incidents == ("strike-a",)
    assert match.source_url == site.url("video.mp4") and match.target_uri == site.url("video.mp4")
    assert (match.role, match.record_type, match.media_type) == ("page", "response", "video/mp4")
    assert match.size == len(FILES["video.mp4"]) and match.outcome == "ok"
    assert match.capture_id == built.captures["video.mp4"]
    assert match.capture_started <= match.record_date and match.capture_ended is not None
    # The WARC file, offset and record id lead to the record itself.
    path = archive.settings.warc_dir / match.warc_file
    record = next(r for r in iter_records(path) if r.offset == match.offset)
    assert record.record_id == match.record_id and record.payload_sha256 == report.sha256
    assert record.length == match.length
    # Receipt: signed by the archive key, in a batch whose token verifies against the configured TSA.
    receipt = match.receipt
    assert receipt is not None and not receipt.pending
    assert (receipt.signature, receipt.merkle) == (VALID, VALID)
    (stamp,) = receipt.timestamps
    assert (stamp.tsa, stamp.status) == ("test-tsa", VALID) and stamp.gen_time.tzinfo is not None
    # Custody: the source's events, the WARC file's closing and the batch's timestamp, in order.
    actions = [e.action for e in match.custody]
    assert actions == ["source.added", "collected", "stored", "signed", "warc.closed", "timestamped"]
    assert [e.seq for e in match.custody] == sorted(e.seq for e in match.custody)
    assert match.custody[1].details["capture"] == match.capture_id


def test_a_digest_we_hold_is_found_in_every_form(archive: Archive, built: Built) -> None:
    digest = hashlib.sha256(FILES["style.css"]).hexdigest()
    for query in (digest, digest.upper(), f"sha256:{digest}", f"  {digest}\n"):
        report = lookup_archive(archive, query)
        assert report.found and report.sha256 == digest
        assert report.matches[0].role == "requisite" and report.matches[0].incidents == ("strike-a",)


def test_a_digest_we_do_not_hold_says_so(archive: Archive, built: Built, tmp_path: Path) -> None:
    report = lookup_archive(archive, "ab" * 32)
    assert not report.found and report.matches == ()
    unknown = tmp_path / "never-captured.bin"
    unknown.write_bytes(b"not in the archive")
    assert not lookup_archive(archive, unknown).found
    with pytest.raises(NotFoundError, match="no such file"):
        lookup_archive(archive, tmp_path / "missing.bin")


def test_a_file_captured_twice_lists_both_captures(archive: Archive, site: Site) -> None:
    capture_site(archive, site)
    first = lookup_archive(archive, hashlib.sha256(FILES["other.html"]).hexdigest())
    recapture(archive, first.matches[0].source_id)
    report = lookup_archive(archive, hashlib.sha256(FILES["other.html"]).hexdigest())
    assert len(report.matches) == 2 and report.matches[0].capture_id != report.matches[1].capture_id
    # Not timestamped yet: the receipts say so.
    assert all(m.receipt is not None and m.receipt.pending and m.receipt.timestamps == () for m in report.matches)
    assert all(m.incidents == ("strike-b",) for m in report.matches)


def test_statuses_are_unchecked_without_keys_and_invalid_when_tampered(archive: Archive, built: Built) -> None:
    digest = hashlib.sha256(FILES["video.mp4"]).hexdigest()
    with archive.session() as s:
        bare = lookup(s, digest)
    receipt = bare.matches[0].receipt
    assert receipt is not None and receipt.signature == UNCHECKED
    assert receipt.merkle == VALID and receipt.timestamps[0].status == UNCHECKED
    tamper(archive, "UPDATE receipts SET signature = :sig", sig=b"\x00" * 64)
    receipt = lookup_archive(archive, digest).matches[0].receipt
    assert receipt is not None and receipt.signature == INVALID


def test_resolve_query_prefers_digests(tmp_path: Path) -> None:
    assert resolve_query("A" * 64) == "a" * 64
    f = tmp_path / "x"
    f.write_bytes(b"x")
    assert resolve_query(f) == resolve_query(str(f)) == hashlib.sha256(b"x").hexdigest()
