"""Bundles for the export and verify-bundle tests: a captured, signed, timestamped archive exported as a bag,
and the edits an attacker holding the bundle could make (with the bag manifests re-hashed afterwards, so that
only the deeper checks can catch them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from archiver.archive import Archive
from archiver.bundle import layout
from archiver.bundle.export import ExportReport, export_bundle
from tests.support.integrity import Built, Site, build
from tests.support.tsa import OpensslTsa
from tests.support.warc_files import deflate, inflate


def built_bundle(archive: Archive, site: Site, tsa: OpensslTsa, out: Path) -> tuple[Built, ExportReport]:
    built = build(archive, site, tsa)
    return built, export_bundle(archive, "strike-a", out)


def rehash(bag: Path) -> None:
    """Rewrite every manifest and tag manifest from the files now in the bag (what a forger would do)."""
    files = sorted(p.relative_to(bag).as_posix() for p in (bag / "data").rglob("*") if p.is_file())
    for algorithm in layout.ALGORITHMS:
        lines = [f"{hashlib.new(algorithm, (bag / f).read_bytes()).hexdigest()}  {f}\n" for f in files]
        (bag / f"manifest-{algorithm}.txt").write_text("".join(lines))
    size = sum((bag / f).stat().st_size for f in files)
    info = (bag / "bag-info.txt").read_text().splitlines()
    info = [line if not line.startswith("Payload-Oxum") else f"Payload-Oxum: {size}.{len(files)}" for line in info]
    (bag / "bag-info.txt").write_text("\n".join(info) + "\n")
    tags = ["bagit.txt", "bag-info.txt", *(f"manifest-{a}.txt" for a in layout.ALGORITHMS)]
    for algorithm in layout.ALGORITHMS:
        lines = [f"{hashlib.new(algorithm, (bag / t).read_bytes()).hexdigest()}  {t}\n" for t in tags]
        (bag / f"tagmanifest-{algorithm}.txt").write_text("".join(lines))


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def records(bag: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (bag / layout.RECORDS).read_text().splitlines()]


def alter_last_record(bag: Path) -> str:
    """Change one byte in the block of the last record of a bundle WARC file and re-gzip it (the last, so no
    other record moves). Returns the record id."""
    entries = records(bag)
    last = max((e for e in entries if e["file"] == entries[-1]["file"]), key=lambda e: int(str(e["offset"])))
    path = bag / str(last["file"])
    data = path.read_bytes()
    offset = int(str(last["offset"]))
    record = inflate(data[offset : offset + int(str(last["length"]))])
    at = record.index(b"\r\n\r\n") + 8  # a byte of the block
    changed = record[:at] + bytes([record[at] ^ 0x01]) + record[at + 1 :]
    path.write_bytes(data[:offset] + deflate(changed))
    return str(last["id"])


def edit_json_line(path: Path, index: int, change: dict[str, object]) -> None:
    lines = path.read_text().splitlines()
    doc = json.loads(lines[index])
    doc["event"].update(change)
    lines[index] = json.dumps(doc, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
