"""``archiver export``: one incident as a self-contained BagIt evidence bundle (directory or zip).

The bag is built in a temporary folder next to the target (same file system), then renamed into place, so a
crash never leaves half a bundle under the final name; an existing target is replaced only with ``force``,
and only after the new bundle is complete. The export is then appended to the custody log as ``exported``
with the SHA-256 of ``tagmanifest-sha256.txt``, which fixes every file of the bag; being appended after the bag
is complete, that event is not inside the bag's own custody segment (see :mod:`archiver.bundle.segment`).

Every byte is read once and written once: records are copied and the media payloads taken from them in one
pass (:mod:`archiver.bundle.records`), SHA-256 and SHA-512 computed as files are written, on threads that use
every core (:mod:`archiver.bundle.streams`); video stills are made while the copy goes on
(:mod:`archiver.bundle.stills`), and each file is synced in the background and waited for once, before the
rename. bench/export_bench.py measures it against ``cp -r`` and the hashing tools.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver import SOFTWARE, custody
from archiver.archive import Archive
from archiver.bundle import layout
from archiver.bundle.bag import write_tag_files
from archiver.bundle.contents import IncidentContents, RecordEntry, load_contents, source_document
from archiver.bundle.payload import (
    MediaFile,
    json_bytes,
    plan_media,
    write_custody,
    write_media_index,
    write_receipts,
    write_timestamps,
)
from archiver.bundle.records import Extract, Extracted, write_warcs
from archiver.bundle.report import Thumbnail, render_report, render_verify
from archiver.bundle.segment import Segment, load_segment
from archiver.bundle.stills import Stills
from archiver.bundle.streams import FileDigests, Syncer, sync_dir, sync_file, write_bytes
from archiver.bundle.zipsafe import write_zip
from archiver.clock import utc_iso
from archiver.errors import BundleError
from archiver.keys import PUBLIC_KEY_NAME


@dataclass(frozen=True)
class ExportReport:
    incident: str
    path: str
    format: str  # bagit | bagit-zip | wacz
    files: int
    bytes: int
    records: int
    media: int
    receipts: int
    digest: str  # sha256 of ``digest_of``, which fixes every other file of the bundle
    digest_of: str  # tagmanifest-sha256.txt (BagIt) or datapackage.json (WACZ)
    event_seq: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def bag_info(archive: Archive, contents: IncidentContents) -> dict[str, str]:
    """RFC 8493 §2.2.2 reserved labels; organisation and contact from ``[bundle]`` in settings.toml."""
    section = archive.settings.raw.get("bundle", {})
    section = section if isinstance(section, dict) else {}
    info = {"Source-Organization": str(section.get("source_organization") or archive.settings.collector)}
    for key, label in (("contact_name", "Contact-Name"), ("contact_email", "Contact-Email"),
                       ("contact_phone", "Contact-Phone")):  # fmt: skip
        if section.get(key):
            info[label] = str(section[key])
    info["External-Identifier"] = str(contents.incident["id"])
    info["External-Description"] = (
        f"Evidence bundle of incident {contents.incident['id']}: {contents.incident['title']}"
    )
    info["Bagging-Date"] = archive.clock.now().date().isoformat()
    info["Bag-Software-Agent"] = SOFTWARE
    return info


def check_target(out: Path, force: bool) -> None:
    if not out.parent.is_dir():
        raise BundleError(f"{out.parent} is not a directory", hint="create it first")
    if (out.exists() or out.is_symlink()) and not force:
        raise BundleError(f"{out} already exists", hint="choose another path, or pass --force to replace it")


def replace_into(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; an old ``out`` is moved aside first and removed afterwards."""
    old = out.with_name(f".{out.name}.old-{time.monotonic_ns()}")
    had_old = out.exists() or out.is_symlink()
    if had_old:
        out.rename(old)
    tmp.rename(out)
    sync_dir(out.parent)  # the new name is durable before the export is logged
    if had_old:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def export_bundle(
    archive: Archive, incident: str, out: Path, *, as_zip: bool = False, force: bool = False
) -> ExportReport:
    """Write the bundle of ``incident`` to ``out`` (a new directory, or a zip with ``as_zip``)."""
    started = time.monotonic()
    out = out.absolute()
    check_target(out, force)
    with archive.session() as s:
        contents = load_contents(s, incident)
        segment = load_segment(s, incident)
    tmp = out.with_name(f".{out.name}.partial-{archive.ids.uuid().hex[:12]}")
    top = out.name[: -len(".zip")] if as_zip and out.name.endswith(".zip") else out.name
    bag = tmp / top if as_zip else tmp
    # A zip's staging folder is removed once zipped: only the zip itself is synced (by write_zip).
    syncer = Syncer(durable=not as_zip)
    try:
        bag.mkdir(parents=True)
        try:
            payload = build_payload(archive, bag, contents, segment, syncer)
            tags = write_tag_files(bag, payload, bag_info(archive, contents), syncer)
            syncer.finish({p.parent for p in bag.rglob("*") if p.is_file()} | {bag})
        finally:
            syncer.close()
        if as_zip:
            zipped = tmp.with_name(tmp.name + ".zip")
            try:
                write_zip(bag, zipped, top)
                sync_file(zipped)  # durable before it is renamed into place
                replace_into(zipped, out)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    zipped.unlink()
            shutil.rmtree(tmp)
        else:
            replace_into(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fmt = "bagit-zip" if as_zip else "bagit"
    details = {
        "bundle": out.name,
        "format": fmt,
        "tagmanifest_sha256": tags.tagmanifest_sha256,
        "payload_oxum": tags.payload_oxum,
        "records": len(contents.records),
        "media": len(contents.media),
        "receipts": len(contents.receipts),
        "custody_segment": [segment.entries[0].seq, segment.entries[-1].seq] if segment.entries else None,
    }
    with archive.session() as s:
        event = custody.append(
            s, archive.clock, actor=archive.actor, action="exported", subject=f"incident:{incident}",
            incident=incident, details=details,
        )  # fmt: skip
        seq = event.seq
    size, files = (int(p) for p in tags.payload_oxum.split("."))
    return ExportReport(incident, str(out), fmt, files, size, len(contents.records), len(contents.media),
                        len(contents.receipts), tags.tagmanifest_sha256, "tagmanifest-sha256.txt", seq,
                        time.monotonic() - started)  # fmt: skip


def build_payload(
    archive: Archive, bag: Path, contents: IncidentContents, segment: Segment, syncer: Syncer
) -> list[FileDigests]:
    warc_dir = archive.settings.warc_dir
    media_plan = plan_media(contents)
    shots = screenshots(contents)
    videos = {path for _, r, path in media_plan if (r.media_type or "").startswith("video/")}
    extracts = [Extract(r, path) for _, r, path in media_plan] + [Extract(r, path) for r, path, _ in shots]
    with Stills(bag) as stills:

        def extracted(path: str, _done: Extracted) -> None:
            if path in videos:
                stills.submit(path)  # while the copy goes on

        warcs = write_warcs(bag, warc_dir, contents, extracts=extracts, syncer=syncer, on_extracted=extracted)
        files = list(warcs.files)
        digests = {path: e.digests for path, e in warcs.extracted.items()}
        written, media = write_media_index(bag, media_plan, digests, syncer)
        files += written
        files += write_receipts(bag, contents, syncer)
        files += write_timestamps(bag, contents, segment, syncer)
        files += write_custody(bag, segment, syncer)
        key = (archive.settings.key_dir / PUBLIC_KEY_NAME).read_bytes()
        files.append(write_bytes(bag, layout.PUBLIC_KEY, key, syncer))
        incident = {**contents.incident, "sources": [source_document(s) for s in contents.sources]}
        files.append(write_bytes(bag, layout.INCIDENT, json_bytes(incident), syncer))
        thumbs, thumb_files = thumbnails(bag, shots, digests, media, stills, syncer)
    files += thumb_files
    times = receipt_times(contents)
    files.append(write_bytes(bag, layout.REPORT, render_report(contents, segment, media, thumbs, times), syncer))
    tsa = sorted({f.path for f in files if f.path.startswith(layout.TSA_DIR + "/")})
    verify = render_verify(contents, tsa, segment.checkpoint is not None)
    files.append(write_bytes(bag, layout.VERIFY, verify, syncer))
    return files


def receipt_times(contents: IncidentContents) -> dict[int, str]:
    by_batch = {b.id: b for b in contents.batches}
    out = {}
    for r in contents.receipts:
        batch = by_batch.get(r.batch_id) if r.batch_id is not None else None
        if batch is not None and batch.tokens:
            out[r.capture_id] = "; ".join(f"{utc_iso(t.gen_time)} by {t.tsa_name}" for t in batch.tokens)
    return out


def screenshots(contents: IncidentContents) -> list[tuple[RecordEntry, str, int]]:
    """The screenshots the archive holds (role ``screenshot``): record, path in the bag, source."""
    source_of = {c.id: s.id for s in contents.sources for c in s.captures}
    out: list[tuple[RecordEntry, str, int]] = []
    used: set[str] = set()
    for r in contents.records:
        if r.role != "screenshot" or r.capture_id not in source_of:
            continue
        ext = layout.EXTENSIONS.get((r.media_type or "").split(";")[0].strip(), "png")
        rel, n = f"{layout.THUMBNAILS}/screenshot-capture-{r.capture_id}.{ext}", 2
        while rel in used:
            rel, n = f"{layout.THUMBNAILS}/screenshot-capture-{r.capture_id}-{n}.{ext}", n + 1
        used.add(rel)
        out.append((r, rel, source_of[r.capture_id]))
    return out


def thumbnails(
    bag: Path,
    shots: list[tuple[RecordEntry, str, int]],
    extracted: Mapping[str, FileDigests],
    media: list[MediaFile],
    stills: Stills,
    syncer: Syncer,
) -> tuple[dict[int, list[Thumbnail]], list[FileDigests]]:
    """Screenshots (extracted with the records) and the still of each video (see :mod:`archiver.bundle.stills`)."""
    out: dict[int, list[Thumbnail]] = {}
    files: list[FileDigests] = []
    for r, rel, source in shots:
        files.append(extracted[rel])
        out.setdefault(source, []).append(Thumbnail(source, rel, r.media_type or "image/png", (bag / rel).read_bytes()))
    made = stills.results([m.path for m in media])
    for m in media:
        data = made.get(m.path)
        if data:
            rel = f"{layout.THUMBNAILS}/{Path(m.path).stem}.jpg"
            files.append(write_bytes(bag, rel, data, syncer))
            out.setdefault(m.media.source_id, []).append(Thumbnail(m.media.source_id, rel, "image/jpeg", data))
    return out, files
