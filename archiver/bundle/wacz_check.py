"""Structural checks of a WACZ 1.1.1 file, ours or anyone's: what ``wacz validate`` checks and what it misses.

``wacz validate`` (py-wacz) does not fail when ``pages/pages.jsonl`` is missing and does not look inside the
index, so these checks also require the pages list with its header, and that every CDXJ line points at a
gzip member of a WARC file in ``archive/``. Problems are data, as everywhere in verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from archiver.integrity import Problem

REQUIRED = ("datapackage.json", "datapackage-digest.json", "indexes/index.cdxj", "pages/pages.jsonl")
GZIP_MAGIC = b"\x1f\x8b\x08"


def check_wacz(path: Path) -> list[Problem]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        return [Problem("wacz-unreadable", str(path), "a zip file", str(exc))]
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        problems = [Problem("wacz-missing", name, "present", "none") for name in REQUIRED if name not in infos]
        warcs = [n for n in infos if n.startswith("archive/") and n.endswith((".warc.gz", ".warc"))]
        if not warcs:
            problems.append(Problem("wacz-missing", "archive/", "at least one WARC file", "none"))
        for name in warcs:
            if infos[name].compress_type != zipfile.ZIP_STORED:
                problems.append(Problem("wacz-compression", name, "STORED (seekable)", "compressed"))
        if problems:
            return problems
        package_bytes = zf.read("datapackage.json")
        try:
            package = json.loads(package_bytes)
            digest = json.loads(zf.read("datapackage-digest.json"))
        except ValueError as exc:
            return [Problem("wacz-json", "datapackage.json", "JSON", str(exc))]
        if package.get("wacz_version") != "1.1.1":
            problems.append(Problem("wacz-version", "datapackage.json", "1.1.1", str(package.get("wacz_version"))))
        listed = {r.get("path"): r for r in package.get("resources", [])}
        for name, info in infos.items():
            if name in ("datapackage.json", "datapackage-digest.json") or info.is_dir():
                continue
            res = listed.pop(name, None)
            if res is None:
                problems.append(Problem("wacz-unlisted", name, "a resource of datapackage.json", "none"))
                continue
            h = hashlib.sha256()
            with zf.open(info) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if res.get("hash") != f"sha256:{h.hexdigest()}" or res.get("bytes") != info.file_size:
                problems.append(Problem("wacz-hash", name, res.get("hash"), f"sha256:{h.hexdigest()}"))
        problems += [Problem("wacz-missing", str(p), "the resource listed", "none") for p in listed]
        problems += _digest(package_bytes, package, digest)
        problems += _pages(zf.read("pages/pages.jsonl"))
        problems += _index(zf, zf.read("indexes/index.cdxj"), set(warcs))
    return problems


def _digest(package_bytes: bytes, package: dict[str, Any], digest: dict[str, Any]) -> list[Problem]:
    want = f"sha256:{hashlib.sha256(package_bytes).hexdigest()}"
    if digest.get("hash") != want:
        return [Problem("wacz-digest", "datapackage-digest.json", want, str(digest.get("hash")))]
    signed = digest.get("signedData")
    if not isinstance(signed, dict):
        return []
    problems = []
    if signed.get("hash") != want or signed.get("created") != package.get("created"):
        problems.append(
            Problem("wacz-signed-data", "datapackage-digest.json", "hash and created of the package", "others")
        )
    if signed.get("signatureAlgorithm") == "Ed25519":
        try:
            key = load_der_public_key(base64.b64decode(signed["publicKey"]))
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            key.verify(base64.b64decode(signed["signature"]), str(signed["hash"]).encode("utf-8"))
        except (KeyError, ValueError, TypeError, InvalidSignature) as exc:
            problems.append(
                Problem("wacz-signature", "datapackage-digest.json", "a valid Ed25519 signature", repr(exc))
            )
    return problems


def _pages(data: bytes) -> list[Problem]:
    lines = data.decode("utf-8", "replace").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
        pages = [json.loads(x) for x in lines[1:] if x.strip()]
    except ValueError as exc:
        return [Problem("wacz-pages", "pages/pages.jsonl", "JSON lines", str(exc))]
    if header.get("format") != "json-pages-1.0":
        return [Problem("wacz-pages", "pages/pages.jsonl", "a json-pages-1.0 header line", str(header)[:80])]
    return [Problem("wacz-pages", "pages/pages.jsonl", "url and ts", json.dumps(p)[:80]) for p in pages
            if not p.get("url") or not p.get("ts")]  # fmt: skip


def _index(zf: zipfile.ZipFile, data: bytes, warcs: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    lines = data.decode("utf-8").splitlines()
    if lines != sorted(lines, key=lambda s: s.encode("utf-8")):
        problems.append(Problem("wacz-index-order", "indexes/index.cdxj", "lines sorted", "unsorted"))
    for n, line in enumerate(lines, 1):
        where = f"indexes/index.cdxj:{n}"
        try:
            _key, _ts, blob = line.split(" ", 2)
            fields = json.loads(blob)
            name = "archive/" + fields["filename"]
            offset, length = int(fields["offset"]), int(fields["length"])
        except (ValueError, KeyError) as exc:
            problems.append(Problem("wacz-index", where, "<key> <timestamp> <json>", str(exc)))
            continue
        if name not in warcs:
            problems.append(Problem("wacz-index", where, "a WARC file in archive/", name))
            continue
        with zf.open(name) as f:
            f.seek(offset)
            head = f.read(3)
        if head != GZIP_MAGIC or offset + length > zf.getinfo(name).file_size:
            problems.append(Problem("wacz-index", where, f"a gzip member at {offset} in {name}", "none"))
    return problems
