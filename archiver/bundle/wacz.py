"""``archiver export --format wacz``: an incident's captures as a WACZ 1.1.1 file, replayable in ReplayWeb.page
and pywb.

Contents (WACZ 1.1.1): ``archive/*.warc.gz`` (the same byte-identical record copies as a BagIt bundle, one file
per original WARC file, STORED so that replay tools can seek into them), ``indexes/index.cdxj``
(:mod:`archiver.bundle.cdxj`), ``pages/pages.jsonl`` (one page per web capture of a source),
``datapackage.json`` (every resource with its ``sha256:`` hash and size) and ``datapackage-digest.json``.

Signature: ``datapackage-digest.json`` carries ``signedData`` as in the WACZ signing recommendation, with our
archive key instead of an ECDSA key: ``signature`` is the base64 Ed25519 signature (RFC 8032) of the UTF-8
bytes of the ``hash`` string (``"sha256:<hex of datapackage.json>"``), ``publicKey`` the base64 DER
SubjectPublicKeyInfo of the archive key, ``keyId`` its id, ``signatureAlgorithm`` ``"Ed25519"``. Tools that
expect ECDSA P-256 will report the signature as unverifiable; ``openssl pkeyutl -verify -rawin`` checks it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from archiver import SOFTWARE, custody, keys
from archiver.archive import Archive
from archiver.bundle import layout
from archiver.bundle.cdxj import cdxj_line, read_head, sorted_index
from archiver.bundle.contents import IncidentContents, load_contents
from archiver.bundle.export import ExportReport, check_target, replace_into
from archiver.bundle.records import PlacedRecord, write_warcs
from archiver.bundle.streams import Syncer, sync_file
from archiver.bundle.zipsafe import FIXED_TIME, add_file
from archiver.errors import BundleError

WACZ_VERSION = "1.1.1"
INDEXED_TYPES = ("response", "resource", "revisit")


def export_wacz(archive: Archive, incident: str, out: Path, *, force: bool = False) -> ExportReport:
    started = time.monotonic()
    out = out.absolute()
    check_target(out, force)
    with archive.session() as s:
        contents = load_contents(s, incident)
    if not contents.records:
        raise BundleError(f"incident {incident} has no captured records to put in a WACZ")
    signer = keys.load_signer(archive.settings.key_dir)
    tmp = out.with_name(f".{out.name}.partial-{archive.ids.uuid().hex[:12]}")
    zipped = tmp.with_name(tmp.name + ".wacz")
    try:
        tmp.mkdir()
        # The staging folder is removed once zipped: only the WACZ itself is synced.
        staging = Syncer(durable=False)
        written = write_warcs(tmp, archive.settings.warc_dir, contents, syncer=staging)
        staging.finish()
        placed = list(written.placed)
        warcs = [d for d in written.files if d.path.startswith(layout.WARC_DIR + "/")]
        names = {d.path: "archive/" + Path(d.path).name for d in warcs}
        resources: list[dict[str, Any]] = []
        with zipfile.ZipFile(zipped, "x", allowZip64=True) as zf:
            for d in warcs:
                add_file(zf, tmp / d.path, names[d.path])
                resources.append(_resource(names[d.path], d.sha256, d.size))
            index = sorted_index(_index_lines(tmp, placed, names))
            resources.append(_write(zf, "indexes/index.cdxj", index))
            pages = _pages(contents, placed, names)
            resources.append(_write(zf, "pages/pages.jsonl", pages))
            created = archive.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
            package = _package(contents, resources, created)
            _write(zf, "datapackage.json", package)
            package_hash = f"sha256:{hashlib.sha256(package).hexdigest()}"
            _write(zf, "datapackage-digest.json", _digest_document(signer, package_hash, created))
        sync_file(zipped)  # durable before it is renamed into place
        replace_into(zipped, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        zipped.unlink(missing_ok=True)
    details = {
        "bundle": out.name,
        "format": "wacz",
        "datapackage_sha256": package_hash.removeprefix("sha256:"),
        "records": len(contents.records),
    }
    with archive.session() as s:
        event = custody.append(
            s, archive.clock, actor=archive.actor, action="exported", subject=f"incident:{incident}",
            incident=incident, details=details,
        )  # fmt: skip
        seq = event.seq
    size = out.stat().st_size
    return ExportReport(incident, str(out), "wacz", len(resources) + 2, size, len(contents.records), 0, 0,
                        package_hash.removeprefix("sha256:"), "datapackage.json", seq,
                        time.monotonic() - started)  # fmt: skip


def _resource(path: str, sha256: str, size: int) -> dict[str, Any]:
    # Frictionless data package names: lower case letters, digits, '-', '_', '.'.
    name = Path(path).name.lower()
    return {"name": name, "path": path, "hash": f"sha256:{sha256}", "bytes": size}


def _write(zf: zipfile.ZipFile, path: str, data: bytes) -> dict[str, Any]:
    info = zipfile.ZipInfo(path, FIXED_TIME)
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)
    return _resource(path, hashlib.sha256(data).hexdigest(), len(data))


def _index_lines(root: Path, placed: list[PlacedRecord], names: dict[str, str]) -> list[str]:
    lines = []
    for p in placed:
        e = p.entry
        if e.record_type not in INDEXED_TYPES or not (e.target_uri or "").startswith(("http://", "https://")):
            continue
        assert e.target_uri is not None
        head = read_head(root / p.bundle_file, p.bundle_offset)
        filename = names[p.bundle_file].removeprefix("archive/")
        lines.append(cdxj_line(e.target_uri, head, digest=e.payload_sha256, filename=filename,
                               offset=p.bundle_offset, length=e.length))  # fmt: skip
    return lines


def _pages(contents: IncidentContents, placed: list[PlacedRecord], names: dict[str, str]) -> bytes:
    """WACZ pages.jsonl: a header line, then the main page of each successful web capture."""
    lines = [json.dumps({"format": "json-pages-1.0", "id": "pages", "title": "All Pages"})]
    by_capture: dict[int, list[PlacedRecord]] = {}
    for p in placed:
        by_capture.setdefault(p.entry.capture_id, []).append(p)
    for s in contents.sources:
        for c in s.captures:
            if c.outcome != "ok" or c.method != "web":
                continue
            responses = [p for p in by_capture.get(c.id, []) if p.entry.record_type == "response"]
            main = next(
                (p for p in responses if p.entry.target_uri == c.final_url), responses[0] if responses else None
            )
            if main is None or main.entry.target_uri is None or main.entry.record_date is None:
                continue
            ts = main.entry.record_date.strftime("%Y-%m-%dT%H:%M:%SZ")
            page = {"id": f"capture-{c.id}", "url": main.entry.target_uri, "ts": ts, "title": s.title or s.url}
            lines.append(json.dumps(page, ensure_ascii=False, sort_keys=True))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _package(contents: IncidentContents, resources: list[dict[str, Any]], created: str) -> bytes:
    inc = contents.incident
    doc = {
        "profile": "data-package",
        "wacz_version": WACZ_VERSION,
        "title": f"{inc['id']}: {inc['title']}",
        "description": str(inc["summary"]),
        "created": created,
        "modified": created,
        "software": SOFTWARE,
        "resources": resources,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


def _digest_document(signer: keys.Signer, package_hash: str, created: str) -> bytes:
    public = load_pem_public_key(signer.public_pem)
    spki = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    signed = {
        "hash": package_hash,
        "created": created,
        "software": SOFTWARE,
        "signature": base64.b64encode(signer.sign(package_hash.encode("utf-8"))).decode("ascii"),
        "publicKey": base64.b64encode(spki).decode("ascii"),
        "keyId": signer.key_id,
        "signatureAlgorithm": "Ed25519",
    }
    doc = {"path": "datapackage.json", "hash": package_hash, "signedData": signed}
    return json.dumps(doc, indent=2).encode("utf-8")
