"""Capture the video (or audio) behind a URL with yt-dlp, faithfully: every byte it fetched is a WARC record.

The page itself is captured by the web capturer; this module does the media part. yt-dlp runs in-process
(:mod:`archiver.capture.ytdlp_transport`) so each request it makes goes through the archiver's Fetcher and
becomes a request/response pair with the usual SHA-256 digests. What yt-dlp downloaded in native format (a
file, HLS segments, range chunks) *is* those response payloads and is not stored again. Only files made
locally become extra records, all with ``urn:archiver:media:...`` target URIs so that pywb never replays a
sidecar in place of the page:

* the output of an ffmpeg merge or remux, or of fragment concatenation: a ``conversion`` record (WARC 1.1
  §6.8) whose ``WARC-Refers-To`` names its first input and ``X-Archiver-Inputs`` all of them;
* yt-dlp's info.json, credentials removed: a ``metadata`` record (§6.6) referring to the media record;
* subtitles and thumbnails that differ from every downloaded payload: ``resource`` records (§6.3), tied to
  the media by ``WARC-Concurrent-To`` since §5.11 forbids ``WARC-Refers-To`` on resources.

:meth:`MediaCapturer.capture` never raises for platform or network trouble: removal, failure and pages
without media are outcomes, with the evidence text that decided them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from archiver.capture import httpwire
from archiver.capture.fetch import REDIRECT_STATUSES, Exchange, Fetcher, FetchSettings, exchange_records
from archiver.capture.media_plan import Attempt, MediaPlan, classify_failure, iframe_urls, media_candidate, plan_for
from archiver.capture.web import decoded_body, media_type
from archiver.capture.ytdlp_transport import (
    ExchangeLog,
    FfmpegTool,
    RunResult,
    Workdir,
    check_ffmpeg,
    file_block,
    file_sha256,
    load_cookies,
    run_ytdlp,
    sweep_temp,
    ytdlp_version,
)
from archiver.clock import Clock, IdGenerator
from archiver.urls import identify
from archiver.warc.block import Block, block_from_bytes
from archiver.warc.records import CONVERSION, METADATA, RESOURCE, RESPONSE, RecordSpec

__all__ = [
    "Attempt",
    "MediaCapturer",
    "MediaItem",
    "MediaPlan",
    "MediaResult",
    "MediaSettings",
    "PlatformIdentity",
    "check_ffmpeg",
    "classify_failure",
    "media_candidate",
    "plan_for",
    "sweep_temp",
]
