"""``report.html`` and ``VERIFY.md``: what a person reads first in a bundle.

The report is one self-contained, printable HTML file: inline CSS, no script, no remote resource (thumbnails
are ``data:`` URIs), every captured or entered text escaped (:func:`html.escape`), since titles, URLs and
custody details come from the web and from manifests. It holds no export time, so an unchanged incident gives
an identical report. ``VERIFY.md`` lists the offline checks with standard tools and with ``verify-bundle``.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from archiver.bundle.contents import IncidentContents, SourceEntry
from archiver.bundle.payload import MediaFile
from archiver.bundle.segment import Segment
from archiver.clock import utc_iso

MAX_INLINE_IMAGE = 512 * 1024

CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10.5pt; color: #111; margin: 1.5em; }
h1 { font-size: 16pt; margin-bottom: 0.2em; } h2 { font-size: 13pt; border-bottom: 1px solid #888; margin-top: 1.6em; }
h3 { font-size: 11pt; margin: 1em 0 0.3em; }
table { border-collapse: collapse; width: 100%; margin: 0.4em 0; }
th, td { border: 1px solid #bbb; padding: 3px 5px; text-align: left; vertical-align: top; }
th { background: #eee; width: 11em; }
.hash { font-family: "DejaVu Sans Mono", monospace; font-size: 8pt; word-break: break-all; }
.url { word-break: break-all; }
.gone { color: #a00; font-weight: bold; } .online { color: #060; }
.source { page-break-inside: avoid; margin-bottom: 1.2em; }
img.thumb { max-width: 320px; max-height: 240px; border: 1px solid #999; }
@media print { body { margin: 0; } a { color: inherit; text-decoration: none; } }
"""


@dataclass(frozen=True)
class Thumbnail:
    source_id: int
    path: str  # in the bag
    media_type: str
    data: bytes


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _row(label: str, value: str) -> str:
    return f"<tr><th>{_e(label)}</th><td>{value}</td></tr>"


def _status(s: SourceEntry) -> str:
    if s.status == "gone" and s.gone_at is not None:
        return f'<span class="gone">gone since {_e(utc_iso(s.gone_at))}</span>'
    if s.status == "captured":
        seen = f" (last captured {_e(utc_iso(s.last_captured_at))})" if s.last_captured_at else ""
        return f'<span class="online">online</span>{seen}'
    return _e(s.status)


def _image(t: Thumbnail) -> str:
    if len(t.data) > MAX_INLINE_IMAGE:
        return f"<p>Image: {_e(t.path)} ({len(t.data)} bytes, not inlined)</p>"
    uri = f"data:{t.media_type};base64,{base64.b64encode(t.data).decode('ascii')}"
    return f'<p><img class="thumb" alt="{_e(t.path)}" src="{uri}"></p>'


def render_report(
    contents: IncidentContents,
    segment: Segment,
    media: Sequence[MediaFile],
    thumbnails: Mapping[int, Sequence[Thumbnail]],
    receipt_times: Mapping[int, str],
) -> bytes:
    inc = contents.incident
    when, place = inc["when"], inc["place"]
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>Evidence bundle: {_e(inc['id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(inc['title'])}</h1>",
        "<table>",
        _row("Incident id", f"<code>{_e(inc['id'])}</code>"),
        _row("When", _e(" – ".join(v for v in (when["start"], when["end"]) if v) + f" ({when['precision']})")),
        _row("Place", _e(", ".join(str(v) for v in (place["name"], *place["admin"], place["country"]) if v))),
        _row("Summary", _e(inc["summary"])),
        "</table>",
        f"<h2>Sources ({len(contents.sources)})</h2>",
    ]
    receipts = {r.capture_id: r for r in contents.receipts}
    by_capture: dict[int, list[MediaFile]] = {}
    for m in media:
        by_capture.setdefault(m.media.capture_id, []).append(m)
    mains = {}
    for r in contents.records:
        if r.record_type in ("response", "resource") and r.capture_id not in mains and r.role not in ("redirect",):
            mains[r.capture_id] = r
    for s in contents.sources:
        parts.append(f'<div class="source"><h3>Source {s.id}: {_e(s.title or s.url or s.lead)}</h3><table>')
        if s.url:
            parts.append(_row("URL", f'<span class="url">{_e(s.url)}</span>'))
        if s.lead:
            parts.append(_row("Lead (not located)", _e(s.lead)))
        parts.append(_row("Kind / platform", _e(" / ".join(v for v in (s.kind, s.platform, s.item_id) if v))))
        parts.append(_row("Status", _status(s)))
        if s.cited_as:
            parts.append(_row("Cited as", _e(s.cited_as)))
        parts.append("</table>")
        for t in thumbnails.get(s.id, ()):
            parts.append(_image(t))
        for c in s.captures:
            parts.append(f"<table><tr><th>Capture {c.id}</th><td>{_e(c.method)}, {_e(c.outcome)}</td></tr>")
            ended = utc_iso(c.ended_at) if c.ended_at else "not ended"
            parts.append(_row("Captured (UTC)", f"{_e(utc_iso(c.started_at))} to {_e(ended)}"))
            if c.final_url:
                parts.append(_row("Final URL", f'<span class="url">{_e(c.final_url)}</span>'))
            if c.http_status is not None:
                parts.append(_row("HTTP status", _e(c.http_status)))
            if c.error:
                parts.append(_row("Error", _e(c.error)))
            main = mains.get(c.id)
            if main is not None and main.payload_sha256:
                parts.append(_row("Content SHA-256", f'<span class="hash">{_e(main.payload_sha256)}</span>'))
            for m in by_capture.get(c.id, []):
                parts.append(
                    _row(f"Media file ({m.size} bytes)", f"{_e(m.path)}<br><span class=hash>{_e(m.sha256)}</span>")
                )
            rec = receipts.get(c.id)
            if rec is not None:
                stamp = receipt_times.get(c.id, "not yet timestamped")
                parts.append(_row("Receipt SHA-256", f'<span class="hash">{_e(rec.sha256)}</span>'))
                parts.append(_row("Trusted timestamp", _e(stamp)))
            parts.append("</table>")
        parts.append("</div>")
    parts += _custody(segment)
    parts.append("</body></html>\n")
    return "\n".join(parts).encode("utf-8")


def _custody(segment: Segment) -> list[str]:
    events = segment.events
    out = [f"<h2>Chain of custody ({len(events)} events of this incident)</h2>"]
    if not events:
        return [*out, "<p>No custody events.</p>"]
    counts = Counter(str((e.document or {}).get("action")) for e in events)
    first, last = segment.entries[0], segment.entries[-1]
    out += [
        "<table>",
        _row("Actions", _e(", ".join(f"{a} ×{n}" for a, n in sorted(counts.items())))),
        _row("First event", f"{first.seq} at {_e((events[0].document or {}).get('at'))}"),
        _row("Last event", f"{events[-1].seq} at {_e((events[-1].document or {}).get('at'))}"),
        _row("Segment", f"events {first.seq} to {last.seq}; {len(segment.entries) - len(events)} listed by hash only"),
        _row("Segment end hash", f'<span class="hash">{_e(last.hash)}</span>'),
    ]
    cp = segment.checkpoint
    if cp is not None:
        stamps = ", ".join(f"{t.tsa_name} {utc_iso(t.gen_time)}" for t in segment.checkpoint_tokens) or "none"
        out.append(_row("Signed checkpoint", f"event {cp.seq}; timestamps: {_e(stamps)}"))
    out.append("</table><table><tr><th>Seq</th><th>Time (UTC)</th><th>Actor</th><th>Action</th><th>Subject</th></tr>")
    for e in events:
        d = e.document or {}
        cells = (d.get("seq"), d.get("at"), d.get("actor"), d.get("action"), d.get("subject"))
        out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in cells) + "</tr>")
    out.append("</table>")
    return out


def render_verify(contents: IncidentContents, tsa_files: Sequence[str], has_checkpoint: bool) -> bytes:
    inc = safe = str(contents.incident["id"])
    first_receipt = contents.receipts[0].capture_id if contents.receipts else None
    ca = tsa_files[0] if tsa_files else "data/tsa/<tsa>.pem"
    lines = [
        f"# Verifying the evidence bundle of incident `{inc}`",
        "",
        "Everything here works offline, years from now, with standard tools. Run the commands from the bag folder",
        "(the folder holding `bagit.txt`). `archiver verify-bundle` runs every check below at once.",
        "",
        "## 1. Completeness and file digests (BagIt, RFC 8493)",
        "",
        "```sh",
        "bagit.py --validate .                     # the Library of Congress bagit tool",
        "sha256sum -c manifest-sha256.txt          # or: sha512sum -c manifest-sha512.txt",
        "sha256sum -c tagmanifest-sha256.txt",
        "```",
        "",
        "## 2. WARC records",
        "",
        "`data/warc/*.warc.gz` hold byte-identical copies of the archived records (one gzip member each).",
        "`data/records.jsonl` lists each record's place in the bundle and in the original archive, and its",
        "SHA-256 block and payload digests, which equal the `WARC-Block-Digest` and `WARC-Payload-Digest` headers.",
        "Any WARC tool reads them, for example `warcio index data/warc/*.warc.gz`.",
        "",
        "## 3. Capture receipts and signatures (Ed25519)",
        "",
        "Each `data/receipts/capture-<id>.json` is a canonical JSON receipt listing the capture's records and",
        "their digests. Its SHA-256 is what was signed:",
        "",
        "```sh",
        f"r=data/receipts/capture-{first_receipt if first_receipt is not None else '<id>'}",
        "openssl dgst -sha256 -binary $r.json > /tmp/receipt.sha256",
        "openssl pkeyutl -verify -pubin -inkey data/keys/archive-key.pub.pem -rawin \\",
        "    -in /tmp/receipt.sha256 -sigfile $r.sig",
        "```",
        "",
        "## 4. Trusted timestamps (RFC 3161) and Merkle paths",
        "",
        "Receipts are batched: `data/receipts/receipts.json` gives each receipt's leaf index and RFC 6962 audit",
        "path to the batch root. The batch statement `data/timestamps/batch-<id>.statement.json` (the root and",
        "the tree size) is what the TSA timestamped:",
        "",
        "```sh",
        "d=$(sha256sum data/timestamps/batch-<id>.statement.json | cut -d' ' -f1)",
        f"openssl ts -verify -digest $d -in data/timestamps/batch-<id>.token-<n>.tsr -CAfile {ca}",
        "```",
        "",
        "The TSA certificates in `data/tsa/` came with the archive; for independent trust, compare them with the",
        "TSA's published CA certificate, or pass that certificate to `archiver verify-bundle --tsa-ca`.",
        "",
        "## 5. Chain of custody",
        "",
        "`data/custody/chain.jsonl` holds consecutive custody events: this incident's in full, every other one",
        "by its hashes only. Each hash is `sha256(previous hash as 64 hex characters || canonical JSON of the",
        "event)`, canonical JSON having sorted keys, UTF-8 and no spaces. To check event n by hand:",
        "",
        "```sh",
        "printf '%s' \"<prev_hash>\" > /tmp/e; printf '%s' '<canonical JSON of the event>' >> /tmp/e; sha256sum /tmp/e",
        "```",
        "",
    ]
    if has_checkpoint:
        lines += [
            "The segment ends at a signed, timestamped checkpoint of the chain head (`data/timestamps/checkpoint-*`):",
            "its statement names the last event's sequence number and hash.",
            "",
        ]
    lines += [
        "The export of this bundle is itself a custody event (`exported`, recording the SHA-256 of",
        "`tagmanifest-sha256.txt`). It is appended after the bag is complete, so it is not in this segment.",
        "",
        "## 6. All at once",
        "",
        "```sh",
        f"archiver verify-bundle .        # or the zip: archiver verify-bundle {safe}.zip",
        "archiver verify-bundle --json . > verification.json",
        "```",
        "",
        f"Files: {len(contents.warc_files)} WARC file(s), {len(contents.records)} records,",
        f"{len(contents.receipts)} receipt(s), {len(contents.batches)} timestamp batch(es).",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


__all__ = ["Thumbnail", "render_report", "render_verify"]
