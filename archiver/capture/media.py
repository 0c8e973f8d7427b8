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

import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin

from archiver.capture import httpwire
from archiver.capture.fetch import REDIRECT_STATUSES, Exchange, Fetcher, FetchSettings, exchange_records
from archiver.capture.media_env import (
    Workdir,
    check_ffmpeg,
    file_block,
    file_sha256,
    load_cookies,
    sweep_temp,
    ytdlp_version,
)
from archiver.capture.web import HTML_TYPES, decoded_body, media_type
from archiver.clock import Clock, IdGenerator
from archiver.errors import CaptureError, UrlError
from archiver.urls import identify, kind_of_path, telegram_embed_url
from archiver.warc.block import Block, block_from_bytes
from archiver.warc.records import CONVERSION, METADATA, RESOURCE, RESPONSE, RecordSpec

if TYPE_CHECKING:  # yt-dlp is imported when a media capture runs, not when a job that may need one starts
    from archiver.capture.ytdlp_transport import ExchangeLog, Served, YtdlpRun

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

OK, REMOVED, FAILED, NO_MEDIA = "ok", "removed", "failed", "no-media"
MANIFEST_TYPES = frozenset(
    {"application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl"}
    | {"application/dash+xml", "application/vnd.ms-sstr+xml", "application/f4m+xml"}
)
MAX_IFRAMES = 3  # players tried from a page's iframes when yt-dlp finds nothing on the page itself
# yt-dlp's extractor_args ({"twitter": {"api": ["syndication"]}}) as nested tuples, so plans stay frozen.
ExtractorArgs = tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...]


@dataclass(frozen=True)
class MediaSettings:
    max_filesize: int = 4 << 30  # one file (or HLS segment, range chunk); larger bodies are cut and flagged
    format: str = "bv*+ba/b"  # yt-dlp format selection: best video with best audio, else best muxed
    download_timeout: float = 3600.0  # bounds one HTTP exchange, i.e. one whole direct video
    cookies_file: Path | None = None  # Netscape cookies.txt, loaded read-only (yt-dlp never writes it back)
    subtitles: bool = True
    thumbnails: bool = True
    max_entries: int = 20  # a post with several videos; a channel URL never gets here (media_candidate)


# -- what to give yt-dlp ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One yt-dlp run: the URL it is given, why this form is tried, and extractor arguments."""

    url: str
    why: str
    extractor_args: ExtractorArgs = ()

    def ytdlp_extractor_args(self) -> dict[str, dict[str, list[str]]]:
        return {ie: {k: list(v) for k, v in args} for ie, args in self.extractor_args}


@dataclass(frozen=True)
class MediaPlan:
    platform: str | None
    attempts: tuple[Attempt, ...]  # the first is the primary form; the rest are fallbacks, in order

    @property
    def url(self) -> str:
        return self.attempts[0].url

    @property
    def fallbacks(self) -> tuple[Attempt, ...]:
        return self.attempts[1:]


def _args(ie: str, **kv: list[str]) -> ExtractorArgs:
    return ((ie, tuple((k, tuple(v)) for k, v in sorted(kv.items()))),)


def plan_for(url: str) -> MediaPlan:
    """Which URL form to give yt-dlp for ``url``, and which fallbacks to try when it fails.

    The per-platform table (fallbacks are tried in order while the outcome is ``failed`` or ``no-media``;
    a ``removed`` verdict is evidence and stops the plan):

    ========== ================================ =====================================================
    platform   primary form                     fallbacks
    ========== ================================ =====================================================
    youtube    watch?v=ID (every share, shorts, the same watch URL with the ``tv`` and
               embed and mobile form folded)    ``web_embedded`` player clients
    x          x.com/USER/status/ID (GraphQL)   the syndication view (cdn.syndication.twimg.com)
    telegram   t.me/CHANNEL/ID                  the public embed widget t.me/CHANNEL/ID?embed=1
    facebook   the canonical post/video URL     the video plugin (facebook.com/plugins/video.php)
    vimeo      vimeo.com/ID[/HASH]              the player (player.vimeo.com/video/ID[?h=HASH])
    dailymotion dailymotion.com/video/ID        the embed (dailymotion.com/embed/video/ID)
    others     the URL as cited                 none (but a page's iframes are tried at run time)
    ========== ================================ =====================================================

    Instagram, TikTok and Rumble extractors already fall back to their embed views internally, so their
    canonical URL is the only attempt. Only the generic, direct and HLS paths can be tested offline.
    """
    try:
        ref = identify(url)
    except UrlError:
        return MediaPlan(None, (Attempt(url, "the URL as cited"),))
    canonical, item = ref.canonical_url, ref.item_id
    if ref.platform is None or item is None or ref.kind == "channel":
        return MediaPlan(ref.platform, (Attempt(url, "the URL as cited"),))
    primary = Attempt(canonical, f"canonical {ref.platform} URL")
    fallbacks: list[Attempt] = []
    if ref.platform == "youtube":
        clients = _args("youtube", player_client=["tv", "web_embedded"])
        fallbacks.append(Attempt(canonical, "other YouTube player clients", clients))
    elif ref.platform == "x":
        syndication = _args("twitter", api=["syndication"])
        fallbacks.append(Attempt(canonical, "the syndication view, served without a guest token", syndication))
    elif ref.platform == "telegram" and ref.kind == "social_post" and not item.startswith("c/"):
        fallbacks.append(Attempt(telegram_embed_url(canonical), "the public embed widget of the post"))
    elif ref.platform == "facebook" and ref.kind in ("video", "social_post"):
        plugin = "https://www.facebook.com/plugins/video.php?show_text=0&href=" + quote(canonical, safe="")
        fallbacks.append(Attempt(plugin, "the embeddable video plugin"))
    elif ref.platform == "vimeo":
        _, _, rest = canonical.partition("vimeo.com/")
        vid, _, unlisted = rest.partition("/")
        player = f"https://player.vimeo.com/video/{vid}" + (f"?h={unlisted}" if unlisted else "")
        fallbacks.append(Attempt(player, "the embeddable player"))
    elif ref.platform == "dailymotion":
        fallbacks.append(Attempt(f"https://www.dailymotion.com/embed/video/{item}", "the embeddable player"))
    return MediaPlan(ref.platform, (primary, *fallbacks))


_VIDEO_PLATFORMS = frozenset({"youtube", "x", "facebook", "instagram", "tiktok", "telegram", "vimeo"})
_VIDEO_PLATFORMS |= {"dailymotion", "rumble"}
_PAGE_HINTS = re.compile(
    rb"<video\b|<audio\b|<source\b[^>]*\bsrc\s*=|og:video|twitter:player:stream|\.m3u8\b|\.mpd\b",
    re.IGNORECASE,
)
# A match of _PAGE_HINTS holds one of these (in any case): a page without any is not searched (the search costs
# 20 times more than looking for them in the lowered page).
_HINT_WORDS = (b"<video", b"<audio", b"<source", b"og:video", b"twitter:player:stream", b".m3u8", b".mpd")
_IFRAME = re.compile(rb"<iframe\b[^>]*?\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE)
_PLAYER_WORDS = re.compile(r"player|embed|video|/e/|/v/|stream", re.IGNORECASE)


def _has_page_hint(body: bytes) -> bool:
    lowered = body.lower()
    return any(word in lowered for word in _HINT_WORDS) and _PAGE_HINTS.search(body) is not None


def iframe_sources(page_html: bytes, base: str) -> list[str]:
    out: list[str] = []
    for match in _IFRAME.finditer(page_html):
        src = urljoin(base, html.unescape(match.group(1).decode("utf-8", "replace")).strip())
        if src.startswith(("http://", "https://")) and src not in out:
            out.append(src)
    return out


def media_candidate(url: str, page_media_type: str | None, page_html: bytes | str | None) -> bool:
    """Should yt-dlp be offered this source? Platform posts and videos, direct media (by URL or by the type
    the server gave), and pages with a ``<video>``/``<audio>``, a ``<source src>`` (not ``<picture>``'s
    ``srcset``), ``og:video``, an HLS or DASH link, or an iframe that looks like a video player."""
    try:
        ref = identify(url)
    except UrlError:
        return False
    if ref.platform in _VIDEO_PLATFORMS and ref.kind in ("video", "social_post"):
        return True
    mtype = (page_media_type or "").split(";")[0].strip().lower()
    if ref.kind == "video" or mtype.startswith(("video/", "audio/")) or mtype in MANIFEST_TYPES:
        return True
    if not page_html:
        return False
    body = page_html.encode("utf-8", "replace") if isinstance(page_html, str) else page_html
    if _has_page_hint(body):
        return True
    for src in iframe_sources(body, url):
        try:
            embedded = identify(src)
        except UrlError:
            continue
        if embedded.kind == "video" or (embedded.platform in _VIDEO_PLATFORMS and embedded.kind == "social_post"):
            return True
        if _PLAYER_WORDS.search(src) or kind_of_path(src) == "video":
            return True
    return False


# -- removed or failed -------------------------------------------------------------------------------------

# Platform wording for "this item is gone" (YouTube, X, Facebook, Instagram, TikTok, Telegram, Vimeo).
_REMOVED = re.compile(
    r"video unavailable|this video (?:has been|was) removed|this video is no longer available"
    r"|video (?:has been|was) deleted|(?:post|tweet|video|content|page|media) (?:has been|was) (?:deleted|removed)"
    r"|account (?:has been |was )?(?:suspended|terminated)|(?:suspended|terminated) account"
    r"|private video|this video is private|this account is private"
    r"|(?:post|tweet|status|video|content|page) (?:is |isn't |is not )?(?:unavailable|available no longer)"
    r"|(?:content|page|post|video) (?:isn't|is not) available|removed for violating|copyright (?:claim|grounds)"
    r"|no longer available|user (?:not found|does not exist)|(?:post|video|message) (?:does not|doesn't) exist",
    re.IGNORECASE,
)
# Temporary or our own trouble, even when the text also sounds like removal ("unavailable due to rate limit").
_TRANSIENT = re.compile(
    r"timed? ?out|timeout|rate[- ]limit|too many requests|http error (?:429|5\d\d)|temporarily"
    r"|connection (?:reset|refused|error)|try again later|sign in to confirm|age[- ]restricted"
    r"|not (?:made this video )?available in your country|geo[- ]?restrict",
    re.IGNORECASE,
)
_NO_MEDIA = re.compile(
    r"unsupported url|no video formats found|no video could be found|there(?:'s| is) no video"
    r"|does not contain (?:any )?(?:video|media)|no media found|requested format is not available",
    re.IGNORECASE,
)
GONE_STATUSES = frozenset({404, 410})


def classify_failure(message: str, post_status: int | None, post_url: str | None = None) -> tuple[str, str]:
    """``(outcome, evidence)`` for a yt-dlp run that produced no media.

    ``removed`` when the post itself answered 404/410 (RFC 9110 §15.5.5, §15.5.11) or the platform said the
    item is gone; ``no-media`` when the page simply holds no video; ``failed`` for everything that may pass
    (timeouts, 429, 5xx, extractor breakage), so the source is tried again later.
    """
    text = httpwire.one_line(message).removeprefix("ERROR: ")
    if post_status in GONE_STATUSES:
        return REMOVED, f"HTTP {post_status} on {post_url or 'the post'}: {text}"
    if _TRANSIENT.search(text):
        return FAILED, text
    if _REMOVED.search(text):
        return REMOVED, text
    if _NO_MEDIA.search(text):
        return NO_MEDIA, text
    return FAILED, text or "yt-dlp ended without media and without an error"


# -- what the catalogue keeps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlatformIdentity:
    """Who published what, as the platform showed it at capture time (from yt-dlp's metadata)."""

    platform: str  # youtube, x, telegram ... or the yt-dlp extractor (generic, html5mediaembed)
    extractor: str
    item_id: str
    title: str | None = None
    description: str | None = None
    channel: str | None = None
    channel_id: str | None = None
    uploader: str | None = None
    uploader_id: str | None = None
    upload_time: datetime | None = None  # when the platform gives a timestamp
    upload_date: str | None = None  # YYYY-MM-DD when it gives only a day
    duration: float | None = None
    view_count: int | None = None
    like_count: int | None = None
    webpage_url: str | None = None

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> PlatformIdentity:
        page = _text(info.get("webpage_url"))
        platform = None
        if page:
            try:
                platform = identify(page).platform
            except UrlError:
                platform = None
        extractor = _text(info.get("extractor_key")) or "unknown"
        stamp = info.get("timestamp")
        day = _text(info.get("upload_date"))
        return cls(
            platform=platform or extractor.lower(),
            extractor=extractor,
            item_id=_text(info.get("id")) or "unknown",
            title=_text(info.get("title")),
            description=_text(info.get("description")),
            channel=_text(info.get("channel")),
            channel_id=_text(info.get("channel_id")),
            uploader=_text(info.get("uploader")),
            uploader_id=_text(info.get("uploader_id")),
            upload_time=datetime.fromtimestamp(stamp, UTC) if isinstance(stamp, int | float) else None,
            upload_date=f"{day[:4]}-{day[4:6]}-{day[6:8]}" if day and len(day) == 8 and day.isdigit() else None,
            duration=float(info["duration"]) if isinstance(info.get("duration"), int | float) else None,
            view_count=info["view_count"] if isinstance(info.get("view_count"), int) else None,
            like_count=info["like_count"] if isinstance(info.get("like_count"), int) else None,
            webpage_url=page,
        )


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


@dataclass(frozen=True)
class MediaItem:
    """One downloaded video. ``media_record_id`` is *the* file: the response whose payload is the file, or
    the conversion record when yt-dlp merged, remuxed or concatenated; ``stream_record_ids`` are the
    responses holding the native streams (one file, or every segment / range chunk, in order)."""

    identity: PlatformIdentity
    format_id: str | None
    sha256: str | None
    size: int | None
    media_record_id: str | None
    stream_record_ids: tuple[str, ...]
    info_record_id: str | None
    conversion_record_id: str | None = None


@dataclass
class MediaResult:
    """Everything one media capture did. ``records`` are ready for one ``WarcSink.write_group`` call, in
    order, each with its role (``request``, ``redirect``, ``retry``, ``extractor``, ``manifest``, ``media``,
    ``subtitle``, ``thumbnail``, ``conversion``, ``metadata``) and media type. Close it to free the spools."""

    url: str
    outcome: str  # ok | removed | failed | no-media
    exchanges: list[Exchange]
    records: list[tuple[str, str | None, RecordSpec]]
    items: list[MediaItem]
    attempts: list[dict[str, str]]  # each attempt: url, why, outcome, evidence
    conversions: list[dict[str, str]]  # tool, version, arguments, inputs, output, output_sha256, target
    tools: dict[str, str]
    error: str | None = None
    evidence: str | None = None
    _blocks: list[Block] = field(default_factory=list, repr=False)

    @property
    def identity(self) -> PlatformIdentity | None:
        return self.items[0].identity if self.items else None

    @property
    def extra_records(self) -> list[tuple[str, str | None, RecordSpec]]:
        """The records made from local files (conversion, metadata, resource), after the exchanges'."""
        return [r for r in self.records if r[2].type in (CONVERSION, METADATA, RESOURCE)]

    def close(self) -> None:
        for ex in self.exchanges:
            ex.close()
        for block in self._blocks:
            block.close()

    def __enter__(self) -> MediaResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the capture ---------------------------------------------------------------------------------------------


class MediaCapturer:
    """Thread-safe: every capture has its own yt-dlp instance, exchange log and temporary directory.

    The Fetcher is built from the web capture's settings (proxy, redaction, per-domain credentials,
    timeouts) with three changes: redirects are followed by the transport, one hop per call, so that the
    cookie jar is asked per hop; bodies may be as large as ``max_filesize``; and one exchange may take as
    long as ``download_timeout``.
    """

    def __init__(
        self,
        fetch_settings: FetchSettings,
        settings: MediaSettings,
        *,
        temp_parent: Path,
        clock: Clock,
        ids: IdGenerator,
    ) -> None:
        self.settings = settings
        self.ffmpeg = check_ffmpeg()  # ToolMissingError here, before any capture starts
        self.tools = {"yt-dlp": ytdlp_version(), "ffmpeg": self.ffmpeg.version}
        self.temp_parent = Path(temp_parent)
        self._ids = ids
        self._max_redirects = fetch_settings.max_redirects
        self._redact = fetch_settings.redact_headers
        media_fetch = replace(
            fetch_settings,
            max_redirects=0,
            max_body=settings.max_filesize,
            total_timeout=max(fetch_settings.total_timeout, settings.download_timeout),
        )
        self.fetcher = Fetcher(media_fetch, clock, ids)
        self._cookies = load_cookies(settings.cookies_file)
        # Values that must never appear in info.json: cookies and credential headers sent by domain.
        redact = {name.lower() for name in fetch_settings.redact_headers}
        secrets = {c.value for c in self._cookies if c.value}
        for headers in [fetch_settings.extra_headers, *fetch_settings.headers_by_domain.values()]:
            secrets |= {v for k, v in headers.items() if k.lower() in redact}
        self._secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def new_record_id(self) -> str:
        return f"<urn:uuid:{self._ids.uuid()}>"

    def close(self) -> None:
        self.fetcher.close()

    def capture(self, url: str) -> MediaResult:
        from archiver.capture.ytdlp_transport import ExchangeLog, run_ytdlp

        plan = plan_for(url)
        log = ExchangeLog()
        attempts = list(plan.attempts)
        tried: list[dict[str, str]] = []
        runs: list[YtdlpRun] = []
        outcome, evidence = FAILED, "nothing was tried"
        try:
            workdir = Workdir(self.temp_parent)
        except OSError as exc:
            raise CaptureError(
                f"cannot make a temporary directory under {self.temp_parent}: {exc}",
                hint="check free disk space and the permissions of the storage directory",
            ) from exc
        try:
            while attempts and len(runs) < len(plan.attempts) + MAX_IFRAMES:
                attempt = attempts.pop(0)
                first = len(log.served)
                run = run_ytdlp(
                    attempt.url,
                    workdir.path / f"attempt-{len(runs)}",
                    log,
                    self.fetcher,
                    max_redirects=self._max_redirects,
                    ffmpeg=self.ffmpeg,
                    cookies=self._cookies,
                    params=self._params(attempt),
                )
                runs.append(run)
                outcome, evidence = self._judge(run, log, first)
                evidence = self._unsecret(evidence)
                tried.append({"url": attempt.url, "why": attempt.why, "outcome": outcome, "evidence": evidence})
                if outcome in (OK, REMOVED):
                    break
                if outcome == NO_MEDIA and len(runs) == 1:
                    attempts += self._iframe_attempts(log, first, {a.url for a in plan.attempts})
            result = self._result(url, log, runs, outcome, evidence, tried)
        except BaseException:
            log.close()
            raise
        finally:
            workdir.remove()
        return result

    def _params(self, attempt: Attempt) -> dict[str, Any]:
        s = self.settings
        return {
            "format": s.format,
            "max_filesize": s.max_filesize,
            "writesubtitles": s.subtitles,
            "subtitleslangs": ["all", "-live_chat"],  # live chat is a websocket/JSON feed, not subtitles
            "writethumbnail": s.thumbnails,
            "playlistend": s.max_entries,
            "extractor_args": attempt.ytdlp_extractor_args(),
        }

    def _judge(self, run: YtdlpRun, log: ExchangeLog, first_served: int) -> tuple[str, str]:
        if run.files():
            return OK, "downloaded"
        post = log.exchanges[log.served[first_served].index] if len(log.served) > first_served else None
        status = post.status if post is not None else None
        message = run.error or run.skipped or "yt-dlp found no media to download"
        return classify_failure(message, status, post.url if post is not None else None)

    def _iframe_attempts(self, log: ExchangeLog, first_served: int, known: set[str]) -> list[Attempt]:
        if len(log.served) <= first_served:
            return []
        page = log.exchanges[log.served[first_served].index]
        if page.status != 200 or media_type(page) not in HTML_TYPES:
            return []
        sources = [s for s in iframe_sources(decoded_body(page), page.url) if s not in known]
        return [Attempt(src, f"iframe on {page.url}") for src in sources[:MAX_IFRAMES]]

    # -- records -------------------------------------------------------------------------------------------

    def _result(
        self,
        url: str,
        log: ExchangeLog,
        runs: list[YtdlpRun],
        outcome: str,
        evidence: str,
        tried: list[dict[str, str]],
    ) -> MediaResult:
        response_ids: dict[int, str] = {}
        exchange_specs: list[tuple[int, RecordSpec]] = []
        for index, ex in enumerate(log.exchanges):
            for spec in exchange_records(ex, self.new_record_id):
                if spec.type == RESPONSE and spec.record_id is not None:
                    response_ids[index] = spec.record_id
                exchange_specs.append((index, spec))
        builder = _RecordBuilder(self, log, response_ids)
        run = runs[-1] if runs else None
        try:
            if run is not None and outcome == OK:
                for entry in run.entries():
                    builder.add_entry(entry, run)
        except BaseException:
            for block in builder.blocks:
                block.close()
            raise
        roles = builder.roles()
        records: list[tuple[str, str | None, RecordSpec]] = []
        for index, spec in exchange_specs:
            if spec.type != RESPONSE:
                records.append(("request", None, spec))
            else:
                records.append((roles[index], media_type(log.exchanges[index]) or None, spec))
        records += builder.extra
        return MediaResult(
            url=url,
            outcome=outcome,
            exchanges=log.exchanges,
            records=records,
            items=builder.items,
            attempts=tried,
            conversions=builder.conversions,
            tools=dict(self.tools),
            error=None if outcome == OK else evidence,
            evidence=evidence if outcome != OK else None,
            _blocks=builder.blocks,
        )

    def scrub(self, info: Any) -> Any:
        """info.json without our credentials: cookies, redacted headers, URL user information, and any
        secret value the platform echoed back."""
        redact = {name.lower() for name in self._redact} | {"cookie"}

        def walk(value: Any, key: str = "") -> Any:
            if isinstance(value, dict):
                if key == "http_headers":
                    return {k: (httpwire.REDACTED if k.lower() in redact else walk(v)) for k, v in value.items()}
                return {
                    k: (httpwire.REDACTED if k.lower() == "cookies" and v else walk(v, k)) for k, v in value.items()
                }
            if isinstance(value, list):
                return [walk(v) for v in value]
            return self._unsecret(value) if isinstance(value, str) else value

        return walk(info)

    def _unsecret(self, text: str) -> str:
        text = re.sub(r"(?i)\b(https?://)[^/?#@\s]*@", r"\1", text)  # RFC 3986 §3.2.1 user information
        for secret in self._secrets:
            text = text.replace(secret, httpwire.REDACTED)
        return text


def _urn(identity: PlatformIdentity, *parts: str) -> str:
    """``urn:archiver:media:<platform>:<id>:<what>``: never the page URL (pywb would replay the sidecar)."""
    safe = [quote(p, safe="-._~") for p in (identity.platform, identity.item_id, *parts)]
    return "urn:archiver:media:" + ":".join(safe)


_EXT_TYPES = {
    "mp4": "video/mp4", "m4v": "video/mp4", "m4a": "audio/mp4", "webm": "video/webm", "mkv": "video/x-matroska",
    "mov": "video/quicktime", "ts": "video/mp2t", "flv": "video/x-flv", "3gp": "video/3gpp", "mp3": "audio/mpeg",
    "ogg": "audio/ogg", "opus": "audio/ogg", "wav": "audio/wav", "vtt": "text/vtt", "srt": "application/x-subrip",
    "ass": "text/x-ssa", "ttml": "application/ttml+xml", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "png": "image/png", "webp": "image/webp", "gif": "image/gif",
}  # fmt: skip


def _file_type(path: Path) -> str:
    return _EXT_TYPES.get(path.suffix.lower().lstrip("."), "application/octet-stream")


def _is_manifest(ex: Exchange) -> bool:
    path = ex.url.split("?", 1)[0].lower()
    return media_type(ex) in MANIFEST_TYPES or path.endswith((".m3u8", ".mpd", ".ism/manifest", ".f4m"))


class _RecordBuilder:
    """Turns one successful run's files into items and extra records, and decides each exchange's role."""

    def __init__(self, capturer: MediaCapturer, log: ExchangeLog, response_ids: dict[int, str]) -> None:
        self.capturer = capturer
        self.log = log
        self.response_ids = response_ids
        self.items: list[MediaItem] = []
        self.extra: list[tuple[str, str | None, RecordSpec]] = []
        self.conversions: list[dict[str, str]] = []
        self.blocks: list[Block] = []
        self._tags: dict[int, str] = {}  # exchanges recognised as a subtitle or thumbnail file

    def roles(self) -> dict[int, str]:
        """Each exchange's role: hops and retries yt-dlp never read, manifests, the media streams (read while
        downloading a format), subtitles and thumbnails, and the rest: what the extractor read."""
        phases: dict[int, set[str]] = {}
        for s in self.log.served:
            phases.setdefault(s.index, set()).add(s.phase)
        out: dict[int, str] = {}
        for index, ex in enumerate(self.log.exchanges):
            read = phases.get(index)
            if read is None:
                out[index] = "redirect" if ex.status in REDIRECT_STATUSES else "retry"
            elif _is_manifest(ex):
                out[index] = "manifest"
            elif index in self._tags:
                out[index] = self._tags[index]
            elif "download" in read:
                out[index] = "media"
            else:
                out[index] = "subtitle" if "subtitle" in read else "extractor"
        return out

    def _payload_match(self, digest: str, candidates: Iterable[int]) -> int | None:
        for index in candidates:
            block = self.log.exchanges[index].response
            if block is not None and block.payload_digest is not None and block.payload_digest.hex == digest:
                return index
        return None

    def add_entry(self, entry: dict[str, Any], run: YtdlpRun) -> None:
        identity = PlatformIdentity.from_info(entry)
        entry_id = _text(entry.get("id"))
        served = [s for s in self.log.served[run.first_served :] if s.entry_id == entry_id]
        for download in entry.get("requested_downloads") or []:
            path = run.existing(download.get("filepath"))
            if path is None:
                continue
            format_id = _text(download.get("format_id"))
            # A single-format item (a bare <video src>) has no format id: its download is tagged None too.
            wanted = set(format_id.split("+")) if format_id else {None}
            streams = [s.index for s in served if s.phase == "download" and s.format_id in wanted]
            inputs = _unique(i for i in streams if not _is_manifest(self.log.exchanges[i]))
            digest, size = file_sha256(path)
            # The file is a response payload byte for byte (one input, or found among the entry's responses).
            same = self._payload_match(digest, inputs or _unique(s.index for s in served)) if len(inputs) <= 1 else None
            if same is not None:
                inputs = [same]
            stream_ids = tuple(self.response_ids[i] for i in inputs if i in self.response_ids)
            conversion_id = None
            if same is not None:
                media_id: str | None = self.response_ids[same]
            else:
                conversion_id = media_id = self._conversion(identity, path, digest, stream_ids, run, entry_id)
            info_id = self._info(identity, entry, media_id)
            self.items.append(
                MediaItem(identity, format_id, digest, size, media_id, stream_ids, info_id, conversion_id)
            )
            self._sidecars(identity, entry, run, served, media_id)

    def _conversion(
        self,
        identity: PlatformIdentity,
        path: Path,
        digest: str,
        inputs: tuple[str, ...],
        run: YtdlpRun,
        entry_id: str | None,
    ) -> str:
        commands = [run.relative(cmd) for who, cmd in self.log.ffmpeg_commands[run.first_command :] if who == entry_id]
        tool = "ffmpeg" if commands else "yt-dlp"
        tools = self.capturer.tools
        arguments = " ; ".join(commands) if commands else f"concatenated {len(inputs)} downloaded parts in order"
        record_id = self.capturer.new_record_id()
        software = f"yt-dlp/{tools['yt-dlp']}" + (f" ffmpeg/{tools['ffmpeg']}" if commands else "")
        headers = [
            # WARC 1.1 §6.8: a conversion refers to the record it was converted from; several inputs (video and
            # audio streams, HLS segments) are all listed in X-Archiver-Inputs.
            *([("WARC-Refers-To", inputs[0]), ("X-Archiver-Inputs", " ".join(inputs))] if inputs else []),
            # Proposed WARC 1.1 annotation field (software that made the conversion, User-Agent syntax).
            ("WARC-Conversion-Software", software),
            ("X-Archiver-Conversion-Command", httpwire.one_line(arguments)),
        ]
        block = file_block(path)
        self.blocks.append(block)
        target = _urn(identity, path.suffix.lstrip(".") or "media")
        spec = RecordSpec(CONVERSION, block, _file_type(path), target, record_id, None, tuple(headers))
        self.extra.append(("conversion", _file_type(path), spec))
        self.conversions.append(
            {
                "tool": tool,
                "version": tools[tool],
                "arguments": arguments,
                "inputs": " ".join(inputs),
                "output": record_id,
                "output_sha256": digest,
                "target": target,
            }
        )
        return record_id

    def _info(self, identity: PlatformIdentity, entry: dict[str, Any], refers_to: str | None) -> str:
        from yt_dlp import YoutubeDL

        info = self.capturer.scrub(YoutubeDL.sanitize_info(dict(entry), remove_private_keys=True))
        body = json.dumps(info, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
        block = block_from_bytes(body)
        self.blocks.append(block)
        record_id = self.capturer.new_record_id()
        headers = (("WARC-Refers-To", refers_to),) if refers_to else ()  # WARC 1.1 §6.6, §5.11
        spec = RecordSpec(METADATA, block, "application/json", _urn(identity, "info.json"), record_id, None, headers)
        self.extra.append(("metadata", "application/json", spec))
        return record_id

    def _sidecars(
        self,
        identity: PlatformIdentity,
        entry: dict[str, Any],
        run: YtdlpRun,
        served: list[Served],
        media_id: str | None,
    ) -> None:
        files: list[tuple[str, str, Any]] = []
        for lang, sub in (entry.get("requested_subtitles") or {}).items():
            files.append(("subtitle", f"subtitle:{lang}", sub.get("filepath")))
        for thumb in entry.get("thumbnails") or []:
            files.append(("thumbnail", f"thumbnail:{thumb.get('id', '0')}", thumb.get("filepath")))
        candidates = _unique(s.index for s in served)
        candidates += [i for i in range(len(self.log.exchanges)) if i not in candidates]
        for role, name, filepath in files:
            path = run.existing(filepath)
            if path is None:
                continue
            digest, _ = file_sha256(path)
            same = self._payload_match(digest, candidates)
            if same is not None:
                self._tags[same] = role  # already stored, byte for byte, as that response's payload
                continue
            block = file_block(path)
            self.blocks.append(block)
            headers = (("WARC-Concurrent-To", media_id),) if media_id else ()
            target = _urn(identity, f"{name}.{path.suffix.lstrip('.')}")
            spec = RecordSpec(RESOURCE, block, _file_type(path), target, self.capturer.new_record_id(), None, headers)
            self.extra.append((role, _file_type(path), spec))


def _unique(indices: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(indices))
