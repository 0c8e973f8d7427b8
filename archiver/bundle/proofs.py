"""Receipts, signatures, Merkle paths, batch statements and RFC 3161 tokens of a bundle, checked from its files.

The same rules as :mod:`archiver.integrity.checks` (which checks catalogue rows), applied to what a bundle
carries: the pure parts are shared (:func:`archiver.keys.verify_signature`, :func:`archiver.merkle.verify_inclusion`,
:func:`archiver.integrity.batches.batch_statement` and ``checkpoint_statement``,
:func:`archiver.timestamps.verify_token`). Receipts list records by their place in the *original* WARC files;
in a bundle the records live elsewhere, so they are matched by record id against the records read from the
bundle's own WARC files, and must carry the block and payload digests the receipt states.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archiver.canonical import canonical_json
from archiver.integrity import Problem
from archiver.integrity.batches import batch_statement, checkpoint_statement
from archiver.keys import verify_signature
from archiver.merkle import verify_inclusion
from archiver.timestamps import verify_token
from archiver.warc.reader import StoredRecord

# verify_token's problems start with their kind (see archiver.timestamps.verify_token).
_TOKEN_KINDS = (
    ("malformed token", "token-malformed"),
    ("not a granted timestamp", "token-malformed"),
    ("token for other data", "token-other-data"),
    ("untrusted TSA", "token-untrusted"),
    ("no trusted TSA certificate", "token-untrusted"),
    ("signature invalid", "token-signature"),
)


def _read(root: Path, rel: object, problems: list[Problem]) -> bytes | None:
    try:
        return (root / str(rel)).read_bytes()
    except OSError:
        problems.append(Problem("file-missing", str(rel), "the file", "none"))
        return None


def _signed(
    kind: str, subject: str, digest: bytes, sig: bytes | None, key: str | None, public: bytes | None, key_id: str | None
) -> list[Problem]:
    if public is None or sig is None:
        return []
    if key_id is not None and key != key_id:
        return [Problem(f"{kind}-key", subject, f"signed by the bundled key {key_id}", f"key {key}")]
    if not verify_signature(public, digest, sig):
        return [Problem(f"{kind}-signature", subject, "a valid Ed25519 signature by the bundled key", "invalid")]
    return []


def check_receipts(
    root: Path,
    index: Any,
    records: Mapping[str, StoredRecord],
    public: bytes | None,
    key_id: str | None,
    problems: list[Problem],
    counts: dict[str, int],
) -> None:
    entries = index if isinstance(index, list) else []
    counts["receipts"] = len(entries)
    for entry in entries:
        rel = str(entry.get("file"))
        body = _read(root, rel, problems)
        sig = _read(root, entry.get("signature"), problems)
        if body is None:
            continue
        digest = hashlib.sha256(body).digest()
        if digest.hex() != entry.get("sha256"):
            problems.append(Problem("receipt-hash", rel, entry.get("sha256"), digest.hex()))
        problems += _signed("receipt", str(entry.get("signature")), digest, sig, entry.get("key_id"), public, key_id)
        try:
            doc = json.loads(body)
            if canonical_json(doc) != body:
                raise ValueError("not in canonical form")
            listed = doc["records"]
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(Problem("receipt-content", rel, "a canonical JSON receipt", str(exc)))
            continue
        own = records.get(str(entry.get("record")))
        if own is None:
            problems.append(Problem("receipt-record", rel, f"its WARC record {entry.get('record')}", "none"))
        elif own.block_sha256 != digest.hex():
            problems.append(Problem("receipt-record", rel, f"record block sha256:{digest.hex()}", own.block_sha256))
        for item in listed if isinstance(listed, list) else []:
            _check_listed(rel, item, records, problems)


def _check_listed(rel: str, item: Mapping[str, Any], records: Mapping[str, StoredRecord], out: list[Problem]) -> None:
    rid = str(item.get("id"))
    rec = records.get(rid)
    subject = f"{rel} record {rid}"
    if rec is None:
        out.append(Problem("receipt-record-missing", subject, "the record in the bundle's WARC files", "none"))
        return
    payload = rec.payload_sha256 if rec.header("WARC-Payload-Digest") is not None else None
    for kind, want, got in (
        ("receipt-record-type", item.get("type"), rec.record_type),
        ("receipt-record-target", item.get("target"), rec.target_uri),
        ("receipt-record-block", item.get("block_sha256"), rec.block_sha256),
        ("receipt-record-payload", item.get("payload_sha256"), payload),
    ):
        if want != got:
            out.append(Problem(kind, subject, None if want is None else str(want), None if got is None else str(got)))


def _tokens(
    stem: str, tokens: Any, digest: bytes, root: Path, tsa_ca: bytes | None, out: list[Problem], counts: dict[str, int]
) -> None:
    if not tokens:
        out.append(Problem("timestamp-missing", stem, "at least one RFC 3161 token", "none"))
        return
    for t in tokens:
        rel = str(t.get("file"))
        der = _read(root, rel, out)
        trusted = tsa_ca if tsa_ca is not None else _read(root, t.get("certificates"), out)
        if der is None:
            continue
        counts["tokens"] = counts.get("tokens", 0) + 1
        for text in verify_token(der, digest, trusted or b""):
            kind = next((k for prefix, k in _TOKEN_KINDS if text.startswith(prefix)), "token-invalid")
            out.append(Problem(kind, rel, f"a trusted token for {digest.hex()}", text))


def check_timestamps(
    root: Path,
    index: Any,
    receipts: Any,
    public: bytes | None,
    key_id: str | None,
    tsa_ca: bytes | None,
    problems: list[Problem],
    counts: dict[str, int],
) -> None:
    batches = {b.get("id"): b for b in index.get("batches", [])} if isinstance(index, dict) else {}
    counts["batches"] = len(batches)
    for bid, b in sorted(batches.items(), key=lambda kv: str(kv[0])):
        rel = str(b.get("statement"))
        statement = _read(root, rel, problems)
        if statement is None:
            continue
        try:
            expected = batch_statement(str(b["root"]), int(b["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem("batch-statement", rel, "a root and a size", str(exc)))
            continue
        if statement != expected:
            problems.append(Problem("batch-statement", rel, expected.decode(), statement.decode("utf-8", "replace")))
        digest = hashlib.sha256(statement).digest()
        if digest.hex() != b.get("statement_sha256"):
            problems.append(Problem("batch-statement", rel, b.get("statement_sha256"), digest.hex()))
        sig = _read(root, b.get("signature"), problems)
        problems += _signed("batch", str(b.get("signature")), digest, sig, b.get("key_id"), public, key_id)
        _tokens(f"batch {bid}", b.get("tokens"), digest, root, tsa_ca, problems, counts)
    merkle = 0
    for r in receipts if isinstance(receipts, list) else []:
        rel = str(r.get("file"))
        batch = batches.get(r.get("batch"))
        if r.get("batch") is None:
            problems.append(Problem("receipt-pending", rel, "a timestamp", "waiting for the next batch", "warning"))
            continue
        if batch is None:
            problems.append(Problem("receipt-merkle", rel, f"batch {r.get('batch')} in the bundle", "none"))
            continue
        merkle += 1
        try:
            path = [bytes.fromhex(p) for p in r.get("merkle_path") or []]
            leaf = bytes.fromhex(str(r.get("sha256")))
            ok = verify_inclusion(leaf, int(r["leaf_index"]), int(batch["size"]), path, bytes.fromhex(batch["root"]))
        except (ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            want = f"leaf {r.get('leaf_index')} of batch {r.get('batch')} root {batch.get('root')}"
            problems.append(Problem("receipt-merkle", rel, want, "a path that does not lead to that root"))
    counts["merkle_paths"] = merkle
    cp = index.get("checkpoint") if isinstance(index, dict) else None
    if isinstance(cp, dict):
        rel = str(cp.get("statement"))
        statement = _read(root, rel, problems)
        if statement is None:
            return
        try:
            expected = checkpoint_statement(int(cp["seq"]), str(cp["hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem("checkpoint-statement", rel, "a seq and a hash", str(exc)))
            return
        if statement != expected:
            problems.append(
                Problem("checkpoint-statement", rel, expected.decode(), statement.decode("utf-8", "replace"))
            )
        digest = hashlib.sha256(statement).digest()
        sig = _read(root, cp.get("signature"), problems)
        problems += _signed("checkpoint", str(cp.get("signature")), digest, sig, cp.get("key_id"), public, key_id)
        if cp.get("tokens"):
            _tokens("checkpoint", cp.get("tokens"), digest, root, tsa_ca, problems, counts)
