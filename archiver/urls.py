"""URL normalisation and platform identification: where a cited URL becomes a source's identity.

``normalise`` is syntax only (RFC 3986 §6.2.2, plus dropping the tracking parameters nobody needs as
evidence): it never touches the network and is idempotent. ``identify`` knows the platforms that evidence
lives on and maps the many URL shapes of one item (youtu.be/ID, /shorts/ID, m.youtube.com/watch?v=ID ...) to
one ``PlatformRef`` whose ``key`` is what the catalogue uses as a source's unique key.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, unquote, urlsplit

import idna

from archiver.errors import UrlError

Kind = Literal["video", "social_post", "channel", "image", "document", "article", "unknown"]

MAX_URL_LENGTH: Final = 32_768

# RFC 3986 §2.3 unreserved characters: percent-encoding them is never meaningful, so they are decoded.
_UNRESERVED: Final = frozenset(string.ascii_letters + string.digits + "-._~")
_PCHAR: Final = _UNRESERVED | frozenset("!$&'()*+,;=:@")  # RFC 3986 §3.3
_PATH_SAFE: Final = _PCHAR | {"/"}
_QUERY_SAFE: Final = _PCHAR | {"/", "?"}  # RFC 3986 §3.4; §3.5 gives the fragment the same set
_HEX: Final = frozenset(string.hexdigits)
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_RE: Final = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_C0_AND_SPACE: Final = "".join(chr(i) for i in range(0x21))  # WHATWG URL: stripped from both ends
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

_TRACKING_ANYWHERE: Final = frozenset(
    {"fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid", "igsh", "mc_cid"}
    | {"mc_eid", "_ga", "_gl", "ref_src", "ref_url", "_hsenc", "_hsmi", "mkt_tok"}
)
_TRACKING_BY_PLATFORM: Final[dict[str, frozenset[str]]] = {
    "youtube": frozenset({"si", "feature", "pp", "ab_channel"}),
    "facebook": frozenset(
        {"__tn__", "mibextid", "extid", "ref", "refid", "rdid", "sfnsn", "paipv", "eav", "_rdr", "_rdc"}
    ),
    "tiktok": frozenset({"_r", "_t", "is_from_webapp", "sender_device", "sender_web_id", "is_copy_url", "web_id"}),
}
_TRACKING_PREFIXES: Final = ("utm_", "__cft__", "__xts__")
_X_STATUS_PATH: Final = re.compile(r"/(?:[A-Za-z0-9_]{1,50}|i/web|i)/status(?:es)?/\d+(?:/.*)?")

# Registrable domains of each platform; subdomains belong to the platform too.
_PLATFORM_DOMAINS: Final[dict[str, str]] = {
    **dict.fromkeys(("youtube.com", "youtu.be", "youtube-nocookie.com"), "youtube"),
    **dict.fromkeys(("twitter.com", "x.com", "fxtwitter.com", "vxtwitter.com", "fixupx.com", "fixvx.com"), "x"),
    **dict.fromkeys(("t.co", "twimg.com"), "x"),
    **dict.fromkeys(("facebook.com", "fb.com", "fb.watch"), "facebook"),
    **dict.fromkeys(("instagram.com", "instagr.am"), "instagram"),
    "tiktok.com": "tiktok",
    **dict.fromkeys(("t.me", "telegram.me", "telegram.dog"), "telegram"),
    "vimeo.com": "vimeo",
    **dict.fromkeys(("dailymotion.com", "dai.ly"), "dailymotion"),
    "rumble.com": "rumble",
}


def _redact(text: str) -> str:
    """Quote a URL in an error message without its user information (which may hold a password)."""
    shown = re.sub(r"//[^/?#]*@", "//***@", text)
    return repr(shown if len(shown) <= 120 else shown[:117] + "...")


def _normalise_escapes(text: str, safe: frozenset[str]) -> str:
    """RFC 3986 §6.2.2.2: decode escaped unreserved characters, uppercase other escapes, escape the unsafe."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        escape = text[i + 1 : i + 3]
        if ch == "%" and len(escape) == 2 and set(escape) <= _HEX:
            decoded = chr(int(escape, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + escape.upper())
            i += 3
            continue
        if ch in safe:
            out.append(ch)
        else:  # a stray "%" lands here too and becomes "%25"
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, for an absolute path."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, seg in enumerate(segments):
        if seg in (".", ".."):
            if seg == ".." and out:
                out.pop()
            if i == len(segments) - 1:
                out.append("")  # "/a/b/.." is the directory "/a/"
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _normalise_path(path: str) -> str:
    return _remove_dot_segments(_normalise_escapes(path or "/", _PATH_SAFE))


def platform_of_host(host: str) -> str | None:
    """The platform a (lowercase, ASCII) host belongs to, if any."""
    labels = host.split(".")
    for i in range(len(labels) - 1):
        platform = _PLATFORM_DOMAINS.get(".".join(labels[i:]))
        if platform is not None:
            return platform
    return None


def _is_tracking(key: str, value: str, platform: str | None, is_x_status: bool) -> bool:
    if key in _TRACKING_ANYWHERE or key.startswith(_TRACKING_PREFIXES):
        return True
    if key == "feature" and value == "share":
        return True
    if platform is not None and key in _TRACKING_BY_PLATFORM.get(platform, ()):
        return True
    # On a status URL these say which share sheet was used: "?s=20&t=AbC..." (not the tweet).
    return is_x_status and key in ("s", "t")


def _normalise_query(query: str, platform: str | None, path: str) -> str:
    is_x_status = platform == "x" and _X_STATUS_PATH.fullmatch(path) is not None
    pairs: list[tuple[str, str, str]] = []
    for piece in query.split("&"):
        if not piece:
            continue
        key, sep, value = piece.partition("=")
        key, value = _normalise_escapes(key, _QUERY_SAFE), _normalise_escapes(value, _QUERY_SAFE)
        if not _is_tracking(unquote(key).lower(), unquote(value), platform, is_x_status):
            pairs.append((key, sep, value))
    pairs.sort(key=lambda pair: pair[0])  # stable: repeated keys keep their order, which servers may rely on
    return "&".join(k + sep + v for k, sep, v in pairs)


def _normalise_host(raw: str, text: str) -> str:
    if raw.startswith("["):
        inner = unquote(raw[1:-1]) if raw.endswith("]") else ""
        if "%" in inner:
            raise UrlError(f"IPv6 zone identifiers are not supported in URLs: {_redact(text)}")
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError as exc:
            raise UrlError(f"malformed IPv6 host in {_redact(text)}") from exc
    host = unquote(raw)  # WHATWG host parsing percent-decodes the host
    if host.endswith("."):
        host = host[:-1]  # the root label is implicit in a URL
    if not host:
        raise UrlError(f"URL {_redact(text)} has no host")
    if host.isascii():
        host = host.lower()
    else:
        try:  # IDNA 2008 with UTS #46 mapping, as browsers do
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise UrlError(f"malformed host in {_redact(text)}: {exc}") from exc
    if not _HOST_RE.fullmatch(host):
        raise UrlError(f"malformed host in {_redact(text)}")
    return host


def normalise(url: str) -> str:
    """The one spelling of ``url`` that the archive stores. Raises UrlError for what cannot be archived."""
    try:
        return _normalise(url)
    except UrlError:
        raise
    except (ValueError, UnicodeError) as exc:  # urlsplit and codecs on hostile text
        # exc's own text may quote the netloc, password included: it stays in the chain, not the message
        raise UrlError(f"malformed URL {_redact(url)}") from exc


def _normalise(url: str) -> str:
    text = url.strip(_C0_AND_SPACE).replace("\t", "").replace("\n", "").replace("\r", "")
    if len(text) > MAX_URL_LENGTH:
        raise UrlError(f"URL is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme:
        raise UrlError(f"URL {_redact(text)} has no scheme (expected http:// or https://)")
    if scheme not in _DEFAULT_PORTS:
        raise UrlError(f"scheme {scheme!r} is not supported (only http and https URLs can be archived)")
    if not parts.netloc:
        raise UrlError(f"URL {_redact(text)} has no host")
    if "@" in parts.netloc:
        raise UrlError(
            "URL contains user credentials (user:password@host); they must never be stored",
            hint="remove the user information from the URL and supply credentials another way",
        )
    raw_host, port_text = parts.netloc, ""
    if raw_host.startswith("["):
        end = raw_host.find("]")
        raw_host, rest = raw_host[: end + 1], raw_host[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UrlError(f"malformed host in {_redact(text)}")
        port_text = rest[1:]
    elif ":" in raw_host:
        raw_host, _, port_text = raw_host.rpartition(":")
    host = _normalise_host(raw_host, text)
    netloc = host
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
            raise UrlError(f"invalid port {port_text!r} in {_redact(text)}")
        if int(port_text) != _DEFAULT_PORTS[scheme]:
            netloc = f"{host}:{int(port_text)}"
    platform = platform_of_host(host)
    path, query, fragment = _normalise_path(parts.path), parts.query, parts.fragment
    if fragment.startswith("!") and platform in ("x", "facebook"):
        if path == "/":
            # Old AJAX URLs (twitter.com/#!/user/status/1) kept the identity in the fragment: make it the path.
            inner = urlsplit("//h" + ("" if fragment[1:].startswith("/") else "/") + fragment[1:])
            path, query = _normalise_path(inner.path), "&".join(q for q in (query, inner.query) if q)
        fragment = ""
    query = _normalise_query(query, platform, path)
    # Fragments are client-side and dropped, except hash-bang ones, which AJAX sites used to name the content.
    fragment = _normalise_escapes(fragment, _QUERY_SAFE) if fragment.startswith("!") else ""
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")


def host_of(url: str) -> str:
    """The normalised host of ``url`` (no port)."""
    netloc = urlsplit(normalise(url)).netloc
    return netloc if netloc.endswith("]") else netloc.rpartition(":")[0] or netloc


def same_site(a: str, b: str) -> bool:
    """Whether two hosts are the same site, ignoring ``www.`` and subdomains of one another."""
    a, b = a.removeprefix("www."), b.removeprefix("www.")
    return a == b or a.endswith("." + b) or b.endswith("." + a)


# Link shims (host, path, parameter holding the target); Facebook's embed plugins wrap the embedded post the
# same way, and the post is what a report embedding it cites.
_REDIRECTORS: Final[frozenset[tuple[str, str, str]]] = frozenset(
    {("l.facebook.com", "/l.php", "u"), ("lm.facebook.com", "/l.php", "u"), ("www.google.com", "/url", "q")}
    | {("www.google.com", "/url", "url"), ("www.youtube.com", "/redirect", "q"), ("href.li", "/", "")}
    | {("www.facebook.com", "/plugins/post.php", "href"), ("www.facebook.com", "/plugins/video.php", "href")}
)


def unwrap_redirect(url: str) -> str:
    """The target of a known link shim (l.facebook.com/l.php?u=..., google.com/url?q=...), normalised.

    Returns ``normalise(url)`` when it is not a shim or its target is not archivable.
    """
    current = normalise(url)
    for _ in range(3):  # shims wrapped in shims, but never loop
        parts = urlsplit(current)
        params = {p for host, path, p in _REDIRECTORS if host == parts.netloc and path == parts.path}
        if not params:
            return current
        target = parts.query if "" in params else ""  # href.li/?https://... puts the whole target there
        for piece in parts.query.split("&"):
            key, _, value = piece.partition("=")
            if key in params:
                target = unquote(value)
        try:
            current = normalise(target)
        except UrlError:
            return current
    return current


_SHARE_INTENTS: Final = re.compile(
    r"https://(?:[a-z0-9-]+\.)?(?:facebook\.com/(?:sharer|share\.php|dialog/(?:share|feed))"
    r"|(?:twitter|x)\.com/(?:intent/|share(?:$|[/?]))|linkedin\.com/(?:sharearticle|sharing/|cws/share)"
    r"|reddit\.com/submit|pinterest\.[a-z.]+/pin/create|tumblr\.com/(?:share|widgets/share)"
    r"|(?:api|web)\.whatsapp\.com/send|wa\.me/|(?:t|telegram)\.me/share|vk\.com/share\.php"
    r"|plus\.google\.com/share|getpocket\.com/(?:save|edit)|addtoany\.com/(?:add_to|share)"
    r"|news\.ycombinator\.com/submitlink|buffer\.com/add|mail\.google\.com/mail)",
    re.IGNORECASE,
)


def is_share_intent(url: str) -> bool:
    """Whether ``url`` is a "share this page" button target rather than content."""
    try:
        return _SHARE_INTENTS.match(normalise(url).replace("http://", "https://", 1)) is not None
    except UrlError:
        return False


@dataclass(frozen=True)
class PlatformRef:
    """What a URL points at. ``key`` is the catalogue's unique key: one item, one source."""

    platform: str | None  # youtube, x, facebook, instagram, tiktok, telegram, vimeo, dailymotion, rumble
    kind: Kind
    item_id: str | None
    canonical_url: str
    key: str


@dataclass(frozen=True)
class _Rule:
    hosts: frozenset[str]
    pattern: re.Pattern[str]  # matched in full against "path" or "path?query" of a normalised URL
    kind: Kind
    key: str  # str.format templates over the pattern's named groups and ``host``
    canonical: str
    item: str = "{id}"
    fold: tuple[str, ...] = ()  # groups the platform compares case-insensitively (user and channel names)


_ANY_QUERY = r"(?:\?.*)?"
_TAIL = r"(?:/[^?]*)?" + _ANY_QUERY  # trailing path segments (…/photo/1, /videos) and any query


def _param(name: str, value: str, group: str = "id") -> str:
    """A lookahead finding ``name=value`` anywhere in a query (normalised queries are sorted, not fixed)."""
    return rf"(?=(?:.*&)?{re.escape(name)}=(?P<{group}>{value})(?:&|$))"


def _hosts(*names: str) -> frozenset[str]:
    return frozenset(names)


def _reserved(*names: str) -> str:
    return r"(?!(?i:" + "|".join(re.escape(n) for n in names) + r"|[^/?]*\.php)(?:[/?]|$))"


_YT = _hosts("youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com")
_YT = _YT | _hosts("youtube-nocookie.com", "www.youtube-nocookie.com")
_X = _hosts("twitter.com", "www.twitter.com", "mobile.twitter.com", "m.twitter.com", "x.com", "www.x.com")
_X = _X | _hosts("mobile.x.com", "fxtwitter.com", "vxtwitter.com", "fixupx.com", "fixvx.com", "d.fxtwitter.com")
_FB = _hosts("facebook.com", "www.facebook.com", "m.facebook.com", "mbasic.facebook.com", "web.facebook.com")
_FB = _FB | _hosts("touch.facebook.com", "mobile.facebook.com", "fb.com", "www.fb.com")
_IG = _hosts("instagram.com", "www.instagram.com", "m.instagram.com", "instagr.am", "www.instagr.am")
_TT = _hosts("tiktok.com", "www.tiktok.com", "m.tiktok.com")
_TG = _hosts("t.me", "www.t.me", "telegram.me", "www.telegram.me", "telegram.dog")
_DM = _hosts("dailymotion.com", "www.dailymotion.com")
_YT_ID = r"(?P<id>[A-Za-z0-9_-]{11})"
_FB_POST = r"(?P<id>pfbid[A-Za-z0-9]+|\d+)"
_TG_CHANNEL = r"(?P<ch>[A-Za-z][A-Za-z0-9_]{3,31})"
_TG_RESERVED = _reserved("joinchat", "addstickers", "addemoji", "addtheme", "addlist", "share", "proxy", "socks")
_TG_RESERVED += _reserved("login", "setlanguage", "confirmphone", "invoice", "boost", "contact", "giftcode")
_X_RESERVED = _reserved("i", "home", "explore", "search", "settings", "messages", "notifications", "hashtag")
_X_RESERVED += _reserved("intent", "share", "login", "logout", "signup", "tos", "privacy", "compose", "about")
_FB_RESERVED = _reserved("watch", "reel", "reels", "groups", "events", "pages", "pg", "share", "sharer")
_FB_RESERVED += _reserved("dialog", "login", "plugins", "hashtag", "marketplace", "gaming", "help", "policies")
_FB_RESERVED += _reserved("privacy", "settings", "search", "photo", "media", "stories", "notes", "business")
_IG_RESERVED = _reserved("p", "reel", "reels", "tv", "stories", "explore", "accounts", "direct", "about", "legal")
_IG_RESERVED += _reserved("developer", "web", "graphql", "api", "static", "emails", "challenge", "privacy")


def _rule(hosts: frozenset[str], pattern: str, kind: Kind, key: str, canonical: str, **extra: str) -> _Rule:
    fold = tuple(extra.pop("fold", "").split())
    return _Rule(hosts, re.compile(pattern), kind, key, canonical, fold=fold, **extra)


_WATCH = "https://www.youtube.com/watch?v={id}"
_FB_POST_ID = _FB_POST[7:-1]  # the same id pattern without its group, for query lookaheads
_VIMEO = _hosts("vimeo.com", "www.vimeo.com")
_RUMBLE = _hosts("rumble.com", "www.rumble.com")
_Q = _ANY_QUERY
# Order matters: the first rule whose hosts and pattern match wins, so specific forms come before profiles.
# fmt: off
_RULES: Final = (
    # YouTube: every player, share and mobile form of a video is the watch page of its 11-character id.
    _rule(_hosts("youtu.be", "www.youtu.be"), rf"/{_YT_ID}/?{_Q}", "video", "youtube:{id}", _WATCH),
    _rule(_YT, r"/watch/?\?" + _param("v", _YT_ID[7:-1]) + ".*", "video", "youtube:{id}", _WATCH),
    _rule(_YT, rf"/(?:shorts|embed|live|v|e)/{_YT_ID}/?{_Q}", "video", "youtube:{id}", _WATCH),
    _rule(_YT, r"/playlist\?" + _param("list", r"[A-Za-z0-9_-]+") + ".*", "unknown",
          "youtube:playlist:{id}", "https://www.youtube.com/playlist?list={id}"),
    _rule(_YT, rf"/channel/(?P<id>UC[A-Za-z0-9_-]{{22}}){_TAIL}", "channel",
          "youtube:channel:{id}", "https://www.youtube.com/channel/{id}"),
    _rule(_YT, rf"/@(?P<id>[^/?]+){_TAIL}", "channel",
          "youtube:@{id}", "https://www.youtube.com/@{id}", fold="id"),
    _rule(_YT, rf"/(?P<ns>c|user)/(?P<id>[^/?]+){_TAIL}", "channel",
          "youtube:{ns}:{id}", "https://www.youtube.com/{ns}/{id}", fold="id"),
    # X / Twitter: the status id alone names the post; the user name is kept in the canonical URL as evidence.
    _rule(_X, rf"/i(?:/web)?/status/(?P<id>\d{{1,20}}){_TAIL}", "social_post",
          "x:status:{id}", "https://x.com/i/status/{id}"),
    _rule(_X, rf"/(?P<user>[A-Za-z0-9_]{{1,50}})/status(?:es)?/(?P<id>\d{{1,20}}){_TAIL}", "social_post",
          "x:status:{id}", "https://x.com/{user}/status/{id}"),
    _rule(_X, rf"/{_X_RESERVED}(?P<id>[A-Za-z0-9_]{{1,15}})/?{_Q}", "channel",
          "x:user:{id}", "https://x.com/{id}", fold="id"),
    # Facebook: a post, video or photo has one numeric (or pfbid) id whatever path or host shows it.
    _rule(_FB, rf"/groups/(?P<group>[^/?]+)/(?:posts|permalink)/{_FB_POST}/?{_Q}", "social_post",
          "facebook:post:{id}", "https://www.facebook.com/groups/{group}/posts/{id}"),
    _rule(_FB, r"/(?:permalink|story)\.php\?" + _param("story_fbid", _FB_POST_ID)
          + _param("id", r"\d+", "owner") + ".*", "social_post",
          "facebook:post:{id}", "https://www.facebook.com/permalink.php?id={owner}&story_fbid={id}"),
    _rule(_FB, r"/(?:permalink|story)\.php\?" + _param("story_fbid", _FB_POST_ID) + ".*", "social_post",
          "facebook:post:{id}", "https://www.facebook.com/permalink.php?story_fbid={id}"),
    _rule(_FB, rf"/{_FB_RESERVED}(?P<page>[^/?]+)/posts/{_FB_POST}/?{_Q}", "social_post",
          "facebook:post:{id}", "https://www.facebook.com/{page}/posts/{id}"),
    _rule(_FB, r"/(?:watch/?|video\.php)\?" + _param("v", r"\d+") + ".*", "video",
          "facebook:video:{id}", "https://www.facebook.com/watch/?v={id}"),
    _rule(_FB, rf"/(?P<page>[^/?]+)/videos/(?:[^/?]+/)?(?P<id>\d+)/?{_Q}", "video",
          "facebook:video:{id}", "https://www.facebook.com/{page}/videos/{id}"),
    _rule(_FB, rf"/reels?/(?P<id>\d+)/?{_Q}", "video",
          "facebook:video:{id}", "https://www.facebook.com/reel/{id}"),
    _rule(_FB, r"/photo(?:\.php|/)?\?" + _param("fbid", r"\d+") + ".*", "image",
          "facebook:photo:{id}", "https://www.facebook.com/photo/?fbid={id}"),
    _rule(_FB, rf"/[^/?]+/photos/(?:[^/?]+/)?(?P<id>\d+)/?{_Q}", "image",
          "facebook:photo:{id}", "https://www.facebook.com/photo/?fbid={id}"),
    _rule(_FB, rf"/share/(?P<t>[vr])/(?P<id>[A-Za-z0-9]+)/?{_Q}", "video",
          "facebook:share:{id}", "https://www.facebook.com/share/{t}/{id}/"),
    _rule(_FB, rf"/share/(?:p/)?(?P<id>[A-Za-z0-9]+)/?{_Q}", "social_post",
          "facebook:share:{id}", "https://www.facebook.com/share/p/{id}/"),
    # fb.watch short links cannot be resolved offline: the short code is its own key.
    _rule(_hosts("fb.watch", "www.fb.watch"), rf"/(?P<id>[A-Za-z0-9_-]+)/?{_Q}", "video",
          "facebook:fbwatch:{id}", "https://fb.watch/{id}/"),
    _rule(_FB, r"/profile\.php\?" + _param("id", r"\d+") + ".*", "channel",
          "facebook:page:{id}", "https://www.facebook.com/profile.php?id={id}"),
    _rule(_FB, rf"/{_FB_RESERVED}(?P<id>[^/?]+)/?{_Q}", "channel",
          "facebook:page:{id}", "https://www.facebook.com/{id}", fold="id"),
    # Instagram: the shortcode names the media whether it is shown as a post, a reel or IGTV.
    _rule(_IG, rf"/(?:[A-Za-z0-9_.]{{1,30}}/)?p/(?P<id>[A-Za-z0-9_-]{{5,}})/?{_Q}", "social_post",
          "instagram:media:{id}", "https://www.instagram.com/p/{id}/"),
    _rule(_IG, rf"/(?:[A-Za-z0-9_.]{{1,30}}/)?reels?/(?P<id>[A-Za-z0-9_-]{{5,}})/?{_Q}", "video",
          "instagram:media:{id}", "https://www.instagram.com/reel/{id}/"),
    _rule(_IG, rf"/tv/(?P<id>[A-Za-z0-9_-]{{5,}})/?{_Q}", "video",
          "instagram:media:{id}", "https://www.instagram.com/tv/{id}/"),
    _rule(_IG, rf"/stories/(?P<user>[A-Za-z0-9_.]+)/(?P<id>\d+)/?{_Q}", "social_post",
          "instagram:story:{id}", "https://www.instagram.com/stories/{user}/{id}/"),
    _rule(_IG, rf"/{_IG_RESERVED}(?P<id>[A-Za-z0-9_.]{{1,30}})/?{_Q}", "channel",
          "instagram:user:{id}", "https://www.instagram.com/{id}/", fold="id"),
    # TikTok: numeric item ids; vm./vt. and /t/ short links cannot be resolved offline and keep their code.
    _rule(_TT, rf"/@(?P<user>[A-Za-z0-9_.-]+)/video/(?P<id>\d+)/?{_Q}", "video",
          "tiktok:video:{id}", "https://www.tiktok.com/@{user}/video/{id}"),
    _rule(_TT, rf"/@(?P<user>[A-Za-z0-9_.-]+)/photo/(?P<id>\d+)/?{_Q}", "social_post",
          "tiktok:photo:{id}", "https://www.tiktok.com/@{user}/photo/{id}"),
    _rule(_TT, rf"/(?:embed(?:/v2)?|v)/(?P<id>\d+)(?:\.html)?/?{_Q}", "video",
          "tiktok:video:{id}", "https://www.tiktok.com/embed/v2/{id}"),
    _rule(_TT, rf"/t/(?P<id>[A-Za-z0-9]+)/?{_Q}", "video",
          "tiktok:short:{id}", "https://www.tiktok.com/t/{id}/"),
    _rule(_hosts("vm.tiktok.com", "vt.tiktok.com"), rf"/(?P<id>[A-Za-z0-9]+)/?{_Q}", "video",
          "tiktok:short:{id}", "https://{host}/{id}/"),
    _rule(_TT, rf"/@(?P<id>[A-Za-z0-9_.-]+)/?{_Q}", "channel",
          "tiktok:user:{id}", "https://www.tiktok.com/@{id}", fold="id"),
    # Telegram: channel/message; channel names are case-insensitive; /s/, ?embed=1 and ?single are views.
    _rule(_TG, rf"/c/(?P<ch>\d+)/(?P<id>\d+)/?{_Q}", "social_post",
          "telegram:post:c/{ch}/{id}", "https://t.me/c/{ch}/{id}", item="c/{ch}/{id}"),
    _rule(_TG, rf"/(?:s/)?{_TG_RESERVED}{_TG_CHANNEL}/(?:\d+/)?(?P<id>\d+)/?{_Q}", "social_post",
          "telegram:post:{ch}/{id}", "https://t.me/{ch}/{id}", item="{ch}/{id}", fold="ch"),
    _rule(_TG, rf"/(?:s/)?{_TG_RESERVED}{_TG_CHANNEL}/?{_Q}", "channel",
          "telegram:channel:{ch}", "https://t.me/{ch}", item="{ch}", fold="ch"),
    # Vimeo: unlisted videos need their hash in the URL, so the canonical form keeps it.
    _rule(_VIMEO, rf"/(?P<id>\d+)/(?P<h>[0-9a-f]{{6,20}})/?{_Q}", "video",
          "vimeo:video:{id}", "https://vimeo.com/{id}/{h}"),
    _rule(_VIMEO, r"/(?:channels/[^/?]+/|groups/[^/?]+/videos/|(?:album|showcase)/\d+/video/)?"
          rf"(?P<id>\d+)/?{_Q}", "video", "vimeo:video:{id}", "https://vimeo.com/{id}"),
    _rule(_hosts("player.vimeo.com"), r"/video/(?P<id>\d+)/?\?" + _param("h", "[0-9a-f]{6,20}", "h") + ".*",
          "video", "vimeo:video:{id}", "https://vimeo.com/{id}/{h}"),
    _rule(_hosts("player.vimeo.com"), rf"/video/(?P<id>\d+)/?{_Q}", "video",
          "vimeo:video:{id}", "https://vimeo.com/{id}"),
    # Dailymotion: ids start with "x"; old URLs append "_slug".
    _rule(_DM, rf"/(?:embed/)?video/(?P<id>x[0-9A-Za-z]+)(?:_[^/?]*)?/?{_Q}", "video",
          "dailymotion:video:{id}", "https://www.dailymotion.com/video/{id}"),
    _rule(_hosts("dai.ly"), rf"/(?P<id>x[0-9A-Za-z]+)/?{_Q}", "video",
          "dailymotion:video:{id}", "https://www.dailymotion.com/video/{id}"),
    _rule(_hosts("geo.dailymotion.com"),
          r"/player(?:/[A-Za-z0-9]+)?\.html\?" + _param("video", "x[0-9A-Za-z]+") + ".*", "video",
          "dailymotion:video:{id}", "https://www.dailymotion.com/video/{id}"),
    # Rumble: embed ids are not page ids, so an embed is its own key.
    _rule(_RUMBLE, rf"/embed/(?P<id>v[0-9a-z]+)/?{_Q}", "video",
          "rumble:embed:{id}", "https://rumble.com/embed/{id}/"),
    _rule(_RUMBLE, rf"/(?P<page>(?P<id>v[0-9a-z]+)(?:-[^/?]*)?\.html){_Q}", "video",
          "rumble:video:{id}", "https://rumble.com/{page}"),
)
# fmt: on


_EXTENSION_KINDS: Final[dict[str, Kind]] = {
    **dict.fromkeys(("mp4", "webm", "m3u8", "mov", "mkv", "avi", "m4v", "mpd", "ogv", "3gp", "flv"), "video"),
    **dict.fromkeys(("jpg", "jpeg", "png", "gif", "webp", "avif", "bmp", "tif", "tiff", "heic"), "image"),
    **dict.fromkeys(("pdf", "doc", "docx", "odt", "rtf", "xls", "xlsx", "ods", "ppt", "pptx"), "document"),
}


def kind_of_path(path: str) -> Kind | None:
    """Classify by file extension (".../clip.MP4" is a video), or None when the path has none we know."""
    last = unquote(path.rsplit("/", 1)[-1])
    stem, dot, ext = last.rpartition(".")
    return _EXTENSION_KINDS.get(ext.lower()) if dot and stem else None


def _identify_normalised(url: str) -> PlatformRef:
    parts = urlsplit(url)
    host = parts.netloc
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    for rule in _RULES:
        if host not in rule.hosts:
            continue
        match = rule.pattern.fullmatch(target)
        if match is None:
            continue
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        folded = {k: (v.lower() if k in rule.fold else v) for k, v in groups.items()}
        platform = platform_of_host(host)
        return PlatformRef(
            platform=platform,
            kind=rule.kind,
            item_id=rule.item.format(**groups),
            canonical_url=rule.canonical.format(host=host, **groups),
            key=rule.key.format(host=host, **folded),
        )
    platform = platform_of_host(host)
    kind = kind_of_path(parts.path) or ("unknown" if platform or parts.path == "/" else "article")
    return PlatformRef(platform=platform, kind=kind, item_id=None, canonical_url=url, key=url)


@functools.lru_cache(maxsize=1024)
def identify(url: str) -> PlatformRef:
    """What ``url`` points at: platform, kind, item id, the canonical URL and the catalogue key.

    Remembered for the last 1,024 URLs (a capture asks about its URL several times; the answer is immutable and
    depends on nothing else). A URL that raises is not remembered.
    """
    return _identify_normalised(normalise(url))


def identity_key(url: str) -> str:
    """The catalogue's unique key for the item ``url`` names (``youtube:ID``, ``x:status:ID`` or the URL)."""
    return identify(url).key


def telegram_embed_url(url: str) -> str:
    """The embeddable widget page of a public Telegram post (served when the post page itself is bare)."""
    ref = identify(url)
    if ref.platform != "telegram" or ref.kind != "social_post":
        raise UrlError(f"not a Telegram post URL: {_redact(url)}")
    return ref.canonical_url + "?embed=1&mode=tme"


def telegram_preview_url(url: str) -> str:
    """The public channel preview (t.me/s/...) centred on a post; it exists only for public channels."""
    ref = identify(url)
    path = urlsplit(ref.canonical_url).path
    if ref.platform != "telegram" or ref.kind != "social_post" or path.startswith("/c/"):
        raise UrlError(f"not a public Telegram post URL: {_redact(url)}")
    return "https://t.me/s" + path


def oembed_url(url: str) -> str | None:
    """The platform's oEmbed endpoint for ``url`` (metadata that survives when a page needs a browser)."""
    ref = identify(url)
    target = quote(ref.canonical_url, safe="")
    endpoints = {
        "youtube": "https://www.youtube.com/oembed?format=json&url=",
        "x": "https://publish.twitter.com/oembed?url=",
        "vimeo": "https://vimeo.com/api/oembed.json?url=",
        "dailymotion": "https://www.dailymotion.com/services/oembed?url=",
        "tiktok": "https://www.tiktok.com/oembed?url=",
    }
    if ref.platform not in endpoints or ref.item_id is None or ref.kind == "channel":
        return None
    return endpoints[ref.platform] + target


__all__ = [
    "MAX_URL_LENGTH",
    "Kind",
    "PlatformRef",
    "host_of",
    "identify",
    "identity_key",
    "is_share_intent",
    "normalise",
    "oembed_url",
    "platform_of_host",
    "same_site",
    "telegram_embed_url",
    "telegram_preview_url",
    "unwrap_redirect",
]
