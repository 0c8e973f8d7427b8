"""The BagIt tag files of a bundle (RFC 8493), written from digests computed while the payload was written.

``bagit.make_bag`` would move files into ``data/`` in place and read every byte again to hash it; our payload
files are hashed as they are written (:class:`archiver.bundle.streams.HashingFile`), so the manifests are
written here from those digests, in the exact format of RFC 8493 §2.1.3 (``<hex>  <path>``, sorted by path,
with ``%``, CR and LF percent-encoded). The result is validated with the ``bagit`` library itself
(:mod:`archiver.bundle.verify_bundle`) and by the ``bagit.py --validate`` tool in the tests.

``Bagging-Date`` lives in ``bag-info.txt``, a tag file: payload files carry no export time, so exporting an
unchanged incident twice gives identical payload manifests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from archiver.bundle.layout import ALGORITHMS, BAGIT_TXT
from archiver.bundle.streams import FileDigests, Syncer, write_bytes


def encode_path(path: str) -> str:
    """RFC 8493 §2.1.3: percent-encode ``%``, CR and LF in manifest paths."""
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def manifest_text(files: Iterable[FileDigests], algorithm: str) -> bytes:
    lines = [f"{getattr(f, algorithm)}  {encode_path(f.path)}\n" for f in sorted(files, key=lambda f: f.path)]
    return "".join(lines).encode("utf-8")


def bag_info_text(fields: Sequence[tuple[str, str]]) -> bytes:
    """RFC 8493 §2.2.2: ``Label: value`` lines; values are single lines (line breaks become spaces)."""
    lines = []
    for label, value in fields:
        clean = " ".join(value.split())
        lines.append(f"{label}: {clean}\n")
    return "".join(lines).encode("utf-8")


@dataclass(frozen=True)
class TagFiles:
    payload_oxum: str
    tagmanifest_sha256: str  # sha256 of tagmanifest-sha256.txt: what the export's custody event records


def write_tag_files(
    root: Path, payload: Sequence[FileDigests], info: Mapping[str, str], syncer: Syncer | None = None
) -> TagFiles:
    """Write bagit.txt, payload manifests, bag-info.txt (with Payload-Oxum) and tag manifests into ``root``."""
    oxum = f"{sum(f.size for f in payload)}.{len(payload)}"
    tags = [write_bytes(root, "bagit.txt", BAGIT_TXT, syncer)]
    for algorithm in ALGORITHMS:
        tags.append(write_bytes(root, f"manifest-{algorithm}.txt", manifest_text(payload, algorithm), syncer))
    fields = [*info.items(), ("Payload-Oxum", oxum)]
    tags.append(write_bytes(root, "bag-info.txt", bag_info_text(fields), syncer))
    tag_sha256 = ""
    for algorithm in ALGORITHMS:
        text = manifest_text(tags, algorithm)
        written = write_bytes(root, f"tagmanifest-{algorithm}.txt", text, syncer)
        if algorithm == "sha256":
            tag_sha256 = hashlib.sha256(text).hexdigest()
            assert written.sha256 == tag_sha256
    return TagFiles(oxum, tag_sha256)
