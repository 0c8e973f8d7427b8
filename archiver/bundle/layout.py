"""Where things are inside an evidence bundle (a BagIt bag, RFC 8493). One place, read by export and verify.

```
bagit.txt  bag-info.txt  manifest-sha256.txt  manifest-sha512.txt  tagmanifest-sha256.txt  tagmanifest-sha512.txt
data/
  report.html                 the printable exhibit list
  VERIFY.md                   offline verification, step by step
  incident.json               the incident, its sources and their captures
  records.jsonl               every record: bundle file and offset, original file and offset, digests
  warc/<incident>-NNN.warc.gz byte-identical copies of the original records (one file per original file)
  media.json                  the media files and the records they were extracted from
  media/<incident>/<platform>-<item id>-<format>.<ext>
  thumbnails/                 screenshots and video stills shown in the report
  receipts/receipts.json      capture receipts: digest, key, batch, leaf index, Merkle path
  receipts/capture-<id>.json  the canonical receipt, exactly the bytes that were signed and timestamped
  receipts/capture-<id>.sig   its raw 64-byte Ed25519 signature
  timestamps/timestamps.json  batches and the custody checkpoint: statements, signatures, tokens
  timestamps/*.statement.json, *.sig, *.tsr
  tsa/<tsa>-<hash>.pem        the TSA certificate chain of each token (signer first, then its CA)
  keys/archive-key.pub.pem    the archive's Ed25519 public key
  custody/chain.jsonl         the custody segment: full events of the incident, hashes of the others between
  custody/events.jsonl        the incident's events in full
  custody/events.csv          the same, for a spreadsheet
```
"""

from __future__ import annotations

DATA = "data"
REPORT = "data/report.html"
VERIFY = "data/VERIFY.md"
INCIDENT = "data/incident.json"
RECORDS = "data/records.jsonl"
WARC_DIR = "data/warc"
MEDIA_INDEX = "data/media.json"
MEDIA_DIR = "data/media"
THUMBNAILS = "data/thumbnails"
RECEIPTS_DIR = "data/receipts"
RECEIPTS_INDEX = "data/receipts/receipts.json"
TIMESTAMPS_DIR = "data/timestamps"
TIMESTAMPS_INDEX = "data/timestamps/timestamps.json"
TSA_DIR = "data/tsa"
PUBLIC_KEY = "data/keys/archive-key.pub.pem"
CHAIN = "data/custody/chain.jsonl"
EVENTS_JSONL = "data/custody/events.jsonl"
EVENTS_CSV = "data/custody/events.csv"

ALGORITHMS = ("sha256", "sha512")
BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"

# Media types whose file extension we name; anything else keeps the extension of its target URI, or ".bin".
EXTENSIONS = {
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/x-matroska": "mkv",
    "video/quicktime": "mov",
    "video/mp2t": "ts",
    "video/x-flv": "flv",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/webm": "weba",
    "audio/ogg": "ogg",
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "application/pdf": "pdf",
    "text/html": "html",
}


def receipt_file(capture_id: int) -> str:
    return f"{RECEIPTS_DIR}/capture-{capture_id}.json"


def receipt_signature_file(capture_id: int) -> str:
    return f"{RECEIPTS_DIR}/capture-{capture_id}.sig"
