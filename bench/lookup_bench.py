"""Lookup speed: one ``lookup`` by SHA-256 in a catalogue of 1,000,000 artifact rows (target: under 50 ms).

Fills a fresh catalogue (SQLite by default, made by the real migrations) with ``--artifacts`` Artifact rows in
100,000 captures of 100,000 sources linked to 1,000 incidents, a receipt per capture in batches of 1,000 with a
token each, and three custody events per source; rows go in through bulk inserts, so their hashes, signatures and
tokens are filler (lookup's query time does not depend on them; verify would reject them). Then it times
:func:`archiver.lookup.lookup` (all its queries: artifacts by payload digest, incidents, receipt, batch, tokens,
custody history) for digests that are held and for digests that are not, each in a fresh session.

Not part of the test run. Usage::

    .venv/bin/python bench/lookup_bench.py                      # 1,000,000 artifacts, SQLite
    .venv/bin/python bench/lookup_bench.py --artifacts 100000
    .venv/bin/python bench/lookup_bench.py --db postgresql+psycopg://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text

from archiver.archive import Archive
from archiver.catalogue.integrity_models import Receipt, TimestampBatch, TimestampToken
from archiver.catalogue.models import (
    Artifact,
    Capture,
    CustodyEvent,
    Incident,
    Source,
    WarcFile,
    incident_sources,
)
from archiver.clock import FixedClock, SequentialIds
from archiver.config import load_settings
from archiver.lookup import lookup

CHUNK = 20_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _hex(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def fill(archive: Archive, artifacts: int, rng: random.Random) -> list[str]:
    """Bulk rows; returns the payload digests stored."""
    captures = max(1, artifacts // 10)
    incidents = max(1, captures // 100)
    digests: list[str] = []
    engine = archive.catalogue.engine

    def put(table: Any, rows: Iterator[dict[str, Any]]) -> None:
        for chunk in _chunks(rows):
            with engine.begin() as conn:
                conn.execute(insert(table), chunk)

    put(
        Incident,
        (
            {
                "id": f"incident-{i}",
                "title": f"Incident {i}",
                "when_start": "2017-04-04",
                "when_precision": "day",
                "when_approximate": False,
                "place_name": "Town",
                "place_admin": [],
                "country": "SY",
                "categories": [],
                "summary": "bench",
                "created_at": T0,
                "updated_at": T0,
            }
            for i in range(incidents)
        ),
    )
    put(
        Source,
        (
            {
                "id": i + 1,
                "identity_key": f"https://example.org/{i}",
                "url": f"https://example.org/{i}",
                "kind": "video",
                "status": "captured",
                "depth": 0,
                "follow_citations": False,
                "created_at": T0,
            }
            for i in range(captures)
        ),
    )
    put(
        incident_sources,
        ({"incident_id": f"incident-{i % incidents}", "source_id": i + 1, "added_at": T0} for i in range(captures)),
    )
    put(
        WarcFile,
        (
            {
                "id": i + 1,
                "name": f"bench-{i:05d}.warc.gz",
                "sha256": _hex(rng),
                "size": 1 << 30,
                "records": artifacts // 100,
                "status": "closed",
            }
            for i in range(100)
        ),
    )
    put(
        Capture,
        (
            {
                "id": i + 1,
                "source_id": i + 1,
                "method": "web",
                "started_at": T0 + timedelta(seconds=i),
                "ended_at": T0 + timedelta(seconds=i, milliseconds=500),
                "outcome": "ok",
                "collector": "bench",
                "egress": "direct",
                "tools": {},
                "details": {},
            }
            for i in range(captures)
        ),
    )

    def artifact_rows() -> Iterator[dict[str, Any]]:
        for i in range(artifacts):
            digest = _hex(rng)
            digests.append(digest)
            yield {
                "id": i + 1,
                "capture_id": i % captures + 1,
                "role": "requisite",
                "record_type": "response",
                "record_id": f"<urn:uuid:{i:032x}>",
                "target_uri": f"https://example.org/{i}",
                "media_type": None,
                "size": 1000,
                "payload_sha256": digest,
                "block_sha256": _hex(rng),
                "warc_file_id": i % 100 + 1,
                "offset": i * 1000,
                "length": 900,
                "record_date": T0,
            }

    put(Artifact, artifact_rows())
    batches = max(1, captures // 1000)
    put(
        TimestampBatch,
        (
            {
                "id": b + 1,
                "root": _hex(rng),
                "size": 1000,
                "statement_sha256": _hex(rng),
                "signature": b"\0" * 64,
                "key_id": "0" * 64,
                "created_at": T0,
            }
            for b in range(batches)
        ),
    )
    put(
        TimestampToken,
        (
            {
                "batch_id": b + 1,
                "tsa_name": "tsa",
                "digest": _hex(rng),
                "token_der": b"\0" * 3000,
                "gen_time": T0,
                "serial": str(b),
                "policy_oid": "1.2.3",
                "certificates": "",
                "created_at": T0,
            }
            for b in range(batches)
        ),
    )
    put(
        Receipt,
        (
            {
                "capture_id": i + 1,
                "version": 1,
                "sha256": _hex(rng),
                "canonical": b"{}" * 1000,
                "signature": b"\0" * 64,
                "key_id": "0" * 64,
                "record_id": f"<urn:receipt:{i}>",
                "created_at": T0,
                "batch_id": i % batches + 1,
                "leaf_index": i // batches,
                "merkle_path": [_hex(rng) for _ in range(10)],
            }
            for i in range(captures)
        ),
    )
    actions = ("source.added", "collected", "stored")
    put(
        CustodyEvent,
        (
            {
                "seq": n + 2,
                "at": T0,
                "actor": "bench",
                "action": actions[n % 3],
                "subject": f"source:{n // 3 + 1}",
                "incident_id": None,
                "details": "{}",
                "prev_hash": "0" * 64,
                "hash": _hex(rng),
            }
            for n in range(captures * 3)
        ),
    )
    return digests


def time_lookups(archive: Archive, queries: list[str]) -> list[float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        with archive.session() as s:
            report = lookup(s, q)
        times.append((time.perf_counter() - started) * 1000)
        assert report.sha256 == q
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--db", default=None, help="catalogue URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lookup-bench-"))
    rng = random.Random(1)
    try:
        settings = load_settings(base / "storage", args.db, collector="bench", env={})
        archive = Archive(settings, clock=FixedClock(), ids=SequentialIds())
        archive.init()
        started = time.perf_counter()
        digests = fill(archive, args.artifacts, rng)
        fill_s = time.perf_counter() - started
        sqlite = archive.catalogue.dialect == "sqlite"
        with archive.catalogue.engine.begin() as conn:
            conn.execute(text("ANALYZE"))  # statistics after a bulk load, as autovacuum would gather in time
            explain = "EXPLAIN QUERY PLAN" if sqlite else "EXPLAIN"
            query = text(f"{explain} SELECT id FROM artifacts WHERE payload_sha256 = :d")
            plan = conn.execute(query, {"d": digests[0]}).all()
        print("plan:", "; ".join(str(row[-1]).strip() for row in plan))
        held = rng.sample(digests, min(args.lookups, len(digests)))
        unknown = [_hex(rng) for _ in range(args.lookups // 3)]
        time_lookups(archive, held[:10])  # warm the connection pool and the page cache
        found = time_lookups(archive, held)
        missing = time_lookups(archive, unknown)
        summary = {"artifacts": args.artifacts, "catalogue": archive.catalogue.dialect, "fill_s": round(fill_s, 1)}
        for name, times in (("held", found), ("unknown", missing)):
            ordered = sorted(times)
            summary[f"{name}_median_ms"] = round(statistics.median(ordered), 2)
            summary[f"{name}_p95_ms"] = round(ordered[int(len(ordered) * 0.95) - 1], 2)
            summary[f"{name}_max_ms"] = round(ordered[-1], 2)
        print(f"{args.artifacts} artifacts in {summary['catalogue']}, filled in {fill_s:.0f} s")
        print(
            f"  digest held:     median {summary['held_median_ms']} ms, p95 {summary['held_p95_ms']} ms, "
            f"max {summary['held_max_ms']} ms (target < 50 ms)"
        )
        print(f"  digest not held: median {summary['unknown_median_ms']} ms, p95 {summary['unknown_p95_ms']} ms")
        print(json.dumps(summary))
        archive.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
