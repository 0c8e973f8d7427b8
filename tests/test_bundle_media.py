"""Media in a bundle: the downloaded video extracted in its native format from its WARC record, named from ids,
with a still for the report, and checked by verify-bundle."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from archiver.archive import Archive
from archiver.bundle import layout
from archiver.bundle.export import export_bundle
from archiver.bundle.verify_bundle import verify_bundle
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.manifest import parse_text
from tests.support.bundle import rehash
from tests.support.media_site import MediaSite, media_site

__all__ = ["media_site"]  # a fixture, used by name

MANIFEST = """\
version: 1
incidents:
  - id: hospital-strike
    title: Hospital strike
    when: {{start: 2017-04-04}}
    place: {{name: Hama, country: SY}}
    summary: A video of the strike.
    sources:
      - url: {url}
        kind: video
"""


@pytest.mark.slow
def test_media_extracted_in_native_format(sqlite_archive: Archive, media_site: MediaSite, tmp_path: Path) -> None:
    specs = parse_text(MANIFEST.format(url=media_site.url("/video-src.html")), "m.yaml", date(2026, 11, 1))
    with sqlite_archive.store() as store:
        store.load(specs)
    settings = FetchSettings(connect_timeout=2, read_timeout=5, total_timeout=30, retries=0)
    CaptureJob(sqlite_archive, workers=2, fetch_settings=settings, gate=HostGate(4, 0.0)).run()
    bag = Path(export_bundle(sqlite_archive, "hospital-strike", tmp_path / "b").path)
    (item,) = json.loads((bag / layout.MEDIA_INDEX).read_text())
    assert item["file"].startswith(f"{layout.MEDIA_DIR}/hospital-strike/") and item["file"].endswith(".mp4")
    assert item["sha256"] == media_site.file_sha256("clip.mp4")
    assert (bag / item["file"]).read_bytes() == (media_site.media_dir / "clip.mp4").read_bytes()
    stills = list((bag / layout.THUMBNAILS).glob("*.jpg"))
    assert stills and stills[0].read_bytes().startswith(b"\xff\xd8")
    assert "data:image/jpeg;base64," in (bag / layout.REPORT).read_text()
    assert verify_bundle(bag).ok
    # A changed media byte with the bag manifests re-hashed is still caught against its record.
    media = bag / item["file"]
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 1
    media.write_bytes(bytes(data))
    rehash(bag)
    report = verify_bundle(bag)
    assert {"media-sha256", "media-record"} <= {p.kind for p in report.problems}
