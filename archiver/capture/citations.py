"""Cited links of a report page: the URLs its article body points at, which become new sources.

Only the article body counts: navigation, share bars, comment forms, related-article lists and the site's own
author/tag/category pages are not citations. The body is found from semantic markup (``itemprop=articleBody``,
WordPress ``entry-content``, ``<article>``, ``<main>``); when a page has none, trafilatura decides which links
belong to the main text. Embedded media (iframes, ``<video>``, tweet and Instagram blockquotes, Telegram
widgets) are taken too: on a report page the embed is usually the evidence itself.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit

import charset_normalizer
import lxml.html  # type: ignore[import-untyped, unused-ignore]  # lxml ships no stubs
from lxml import etree  # type: ignore[import-untyped, unused-ignore]

from archiver.errors import UrlError
from archiver.urls import PlatformRef, identify, is_share_intent, normalise, same_site, unwrap_redirect

log = logging.getLogger(__name__)

CONTEXT_LIMIT: Final = 300
_MIN_BODY_TEXT: Final = 150  # characters: less than this is a teaser card, not an article body

# WHATWG Encoding §4.2: labels browsers decode differently from their names.
_ENCODING_ALIASES: Final = {
    **dict.fromkeys(("iso-8859-1", "latin1", "us-ascii", "ascii"), "cp1252"),
    **{"iso-8859-9": "cp1254", "tis-620": "cp874", "gb2312": "gb18030", "gbk": "gb18030"},
}
_META_CHARSET: Final = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_WIDE_ENCODINGS: Final = ["utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le"]
_BOMS: Final = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))

_BODY_CLASSES: Final = (
    "entry-content", "post-content", "post-body", "article-body", "article-content", "article__body",
    "story-body", "story-content", "td-post-content", "single-content", "post-entry",
)  # fmt: skip
_BODY_XPATHS: Final = (
    "//*[@itemprop='articleBody']",
    " | ".join(f"//*[contains(concat(' ', normalize-space(@class), ' '), ' {c} ')]" for c in _BODY_CLASSES),
    "//article",
    "//main | //*[@role='main']",
)
_ALWAYS_DROP: Final = frozenset(
    {"nav", "aside", "footer", "header", "form", "button", "select", "textarea"}
    | {"style", "noscript", "template", "svg", "menu", "dialog"}
)
_BOILERPLATE_ANCESTORS: Final = frozenset({"nav", "aside", "footer", "header"})
_NOT_BODY_WORDS: Final = frozenset({"comment", "comments", "respond", "related", "relatedposts", "sidebar", "widget"})
_BOILERPLATE_ROLES: Final = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "form"})
_BOILERPLATE_WORDS: Final = frozenset(
    {"nav", "navbar", "navigation", "menu", "breadcrumb", "breadcrumbs", "sidebar", "widget", "footer", "share"}
    | {"sharing", "social", "sharedaddy", "addtoany", "related", "relatedposts", "recommended", "comments"}
    | {"comment", "respond", "newsletter", "subscribe", "cookie", "consent", "advert", "ads", "ad", "promo"}
    | {"sponsored", "pagination", "pager", "tags", "categories", "byline", "author", "meta", "login", "signup"}
    | {"popup", "modal", "outbrain", "taboola", "toolbar", "print"}
)
_SKIP_RELS: Final = frozenset({"tag", "category", "author", "ugc", "next", "prev", "search"})
_LOGIN_PATH: Final = re.compile(
    r"/(?:wp-login\.php|login|log-in|signin|sign-in|signup|sign-up|register|logout|my-account"
    r"|(?:user|users|account|accounts)/(?:login|register|signin))(?:[/.?]|$)",
    re.IGNORECASE,
)
_TAXONOMY_PATH: Final = re.compile(
    r"/(?:author|authors|tag|tags|category|categories|topic|topics|label|search|feed|page/\d+|wp-admin|wp-json"
    r"|comments/feed)(?:/|$)",
    re.IGNORECASE,
)
_TAXONOMY_QUERY: Final = re.compile(r"(?:^|&)(?:s|cat|tag|author|replytocom|share|print)=", re.IGNORECASE)
_BLOCKS: Final = frozenset(
    {"p", "li", "dd", "dt", "td", "th", "blockquote", "figcaption", "figure", "pre", "caption", "address"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "div", "section", "article", "main", "body", "table"}
)
_SENTENCE_END: Final = re.compile(r"(?<=[.!?؟。…])\s+")
_WS: Final = re.compile(r"\s+")


@dataclass(frozen=True)
class Citation:
    """One link or embed in a report's article body."""

    url: str  # normalised (and unwrapped from link shims)
    anchor_text: str
    context: str  # the sentence or paragraph around it, at most about CONTEXT_LIMIT characters
    classification: PlatformRef
    position: int  # 0-based order in the article, after duplicates are collapsed
    element: str  # what cited it: "a", "iframe", "video", "source", "blockquote.twitter-tweet", ...


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().lower()
    try:
        return codecs.lookup(_ENCODING_ALIASES.get(label, label)).name
    except LookupError:
        return None


def decode_html(data: bytes, http_charset: str | None = None) -> str:
    """Decode a page as a browser would: BOM, then the HTTP charset, then ``<meta charset>``, then a guess.

    HTML §13.2.3.2 (encoding sniffing). A declared encoding that does not decode cleanly is skipped rather than
    trusted: mislabelled Arabic pages (windows-1256 served as UTF-8) are common.
    """
    candidates: list[str | None] = [enc for bom, enc in _BOMS if data.startswith(bom)]
    meta = _META_CHARSET.search(data[:8192])
    meta_codec = _codec(meta.group(1).decode("ascii") if meta else None)
    if meta_codec is not None and meta_codec.startswith(("utf-16", "utf-32")):
        meta_codec = "utf-8"  # HTML §13.2.3.2: a <meta> that could be read as ASCII is not UTF-16
    candidates += [_codec(http_charset), meta_codec]
    for codec in candidates:
        if codec is None:
            continue
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            log.debug("page does not decode as declared %s", codec)
    # HTML is never UTF-16/32 without a BOM (WHATWG Encoding §6), though a short sample can look like it.
    best = charset_normalizer.from_bytes(data, cp_exclusion=_WIDE_ENCODINGS).best()
    return str(best) if best is not None else data.decode("utf-8", errors="replace")


def _text_and_offset(root: lxml.html.HtmlElement, target: lxml.html.HtmlElement | None = None) -> tuple[str, int]:
    """The text of ``root`` with white space collapsed and block boundaries kept as spaces (so that a tweet's
    last word and the "— author" line after it do not run together), and where ``target`` starts in it."""
    pieces: list[str] = []
    offset = -1

    def visit(node: lxml.html.HtmlElement) -> None:
        nonlocal offset
        if node is target:
            offset = len(_WS.sub(" ", "".join(pieces)).lstrip())
        block = node.tag in _BLOCKS or node.tag == "br"
        pieces.append(" " if block else "")
        pieces.append(node.text or "")
        for child in node:
            if isinstance(child.tag, str):
                visit(child)
            pieces.append(child.tail or "")
        pieces.append(" " if block else "")

    visit(root)
    return _WS.sub(" ", "".join(pieces)).strip(), max(offset, 0)


def _text(el: lxml.html.HtmlElement) -> str:
    return _text_and_offset(el)[0]


def _words(el: lxml.html.HtmlElement) -> set[str]:
    names = f"{el.get('class', '')} {el.get('id', '')}".lower().split()
    return {part for name in names for part in re.split(r"[-_]", name) if part} | set(names)


def _is_boilerplate(el: lxml.html.HtmlElement) -> bool:
    return (
        el.tag in _ALWAYS_DROP
        or el.get("role", "").lower() in _BOILERPLATE_ROLES
        or bool(_words(el) & _BOILERPLATE_WORDS)
    )


def _not_a_body(el: lxml.html.HtmlElement) -> bool:
    """Whether a body candidate is a comment, a related-posts card or a widget, or sits in navigation or a
    sidebar. Ancestors are judged by their tags only: a class such as "has-sidebar" on a page wrapper says
    nothing about the content it wraps."""
    return bool(_words(el) & _NOT_BODY_WORDS) or any(a.tag in _BOILERPLATE_ANCESTORS for a in el.iterancestors())


def _find_body(root: lxml.html.HtmlElement) -> lxml.html.HtmlElement | None:
    for xpath in _BODY_XPATHS:
        found = [el for el in root.xpath(xpath) if not _not_a_body(el)]
        if found:
            best: lxml.html.HtmlElement = max(found, key=lambda el: len(_text(el)))
            if len(_text(best)) >= _MIN_BODY_TEXT:
                return best
    return None


def _clean(container: lxml.html.HtmlElement) -> None:
    """Remove boilerplate inside the body; a class-matched block holding most of the text is kept, since a
    wrapper named "content-with-share" is still the content."""
    total = len(_text(container)) or 1

    def prune(el: lxml.html.HtmlElement) -> None:
        for child in list(el):
            if not isinstance(child.tag, str):
                continue
            stray_script = child.tag == "script" and child.get("data-telegram-post") is None
            if stray_script or (
                _is_boilerplate(child) and (child.tag in _ALWAYS_DROP or len(_text(child)) < 0.5 * total)
            ):
                child.drop_tree()
            else:
                prune(child)

    prune(container)


def _parse(text: str) -> lxml.html.HtmlElement | None:
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)  # lxml refuses str input that declares an encoding
    try:
        root: lxml.html.HtmlElement = lxml.html.document_fromstring(text)
    except (etree.ParserError, ValueError):
        return None
    for comment in root.xpath("//comment() | //processing-instruction()"):
        if comment.getparent() is not None:  # one before <html> has no parent and no effect on the body
            comment.drop_tree()
    return root


def _trafilatura_links(container: lxml.html.HtmlElement) -> set[str] | None:
    """The hrefs trafilatura keeps in the main text (as written in the page), or None if it finds no text."""
    import trafilatura  # only pages without semantic markup need it (0.06 s to import)

    html = lxml.html.tostring(container, encoding="unicode")
    xml = trafilatura.extract(html, include_links=True, output_format="xml", include_comments=False)
    if not xml:
        return None
    doc = etree.fromstring(xml.encode("utf-8"))
    return {str(ref.get("target", "")).strip() for ref in doc.iter("ref")}


def _content_area(body: lxml.html.HtmlElement, admitted: set[str] | None) -> lxml.html.HtmlElement:
    """The smallest element holding every link trafilatura kept (with two or more), so that embeds in an
    unmarked menu column are not taken for the article's."""
    links = [a for a in body.iter("a") if admitted and a.get("href", "").strip() in admitted]
    if len(links) < 2:
        return body
    area = links[0]
    while area is not body and not all(any(x is area for x in a.iterancestors()) for a in links[1:]):
        area = area.getparent()
    return area


def _embed_url(el: lxml.html.HtmlElement) -> tuple[str, str] | None:
    """(raw URL, element label) when ``el`` embeds media or a post."""
    tag, cls = el.tag, f" {el.get('class', '')} "
    if tag in ("iframe", "embed", "video", "audio", "source"):
        for attr in ("src", "data-src", "data-lazy-src", "data-url"):
            value = el.get(attr, "").strip()
            if value and not value.startswith("about:"):
                return value, str(tag)
    if tag == "object" and el.get("data"):
        return el.get("data", ""), "object"
    if tag == "lite-youtube" and el.get("videoid"):
        return "https://www.youtube.com/watch?v=" + el.get("videoid", ""), "lite-youtube"
    if tag == "script" and el.get("data-telegram-post"):
        return "https://t.me/" + el.get("data-telegram-post", "").strip("/"), "script.telegram-post"
    if tag == "div" and el.get("data-href") and re.search(r" fb-(?:post|video) ", cls):
        return el.get("data-href", ""), "div.fb-embed"
    if tag == "blockquote":
        if " instagram-media " in cls and el.get("data-instgrm-permalink"):
            return el.get("data-instgrm-permalink", ""), "blockquote.instagram-media"
        if " tiktok-embed " in cls and el.get("cite"):
            return el.get("cite", ""), "blockquote.tiktok-embed"
        if re.search(r" twitter-(?:tweet|video) ", cls):
            for a in reversed(el.xpath(".//a[@href]")):  # the embed code ends with the status link
                if re.search(r"/status(?:es)?/\d+", a.get("href", "")):
                    return a.get("href", ""), "blockquote.twitter-tweet"
        if el.get("cite"):
            return el.get("cite", ""), "blockquote[cite]"
    return None


def _skipped_rel(el: lxml.html.HtmlElement) -> bool:
    """rel="tag", "category", "author", "ugc" (comments), "next"/"prev" (pagination) mark site furniture."""
    return bool(_SKIP_RELS & set(el.get("rel", "").lower().split()))


def _walk(container: lxml.html.HtmlElement) -> Iterator[tuple[lxml.html.HtmlElement, str, str]]:
    """(element, raw URL, label) in document order; an embed's own links are part of the embed."""
    for el in container:
        if not isinstance(el.tag, str):
            continue
        embed = _embed_url(el)
        if embed is not None:
            yield el, embed[0], embed[1]
            if el.tag not in ("video", "audio"):
                continue  # a tweet's hashtags and t.co links, an iframe's fallback: part of the embed
        elif el.tag in ("a", "area") and el.get("href") is not None and not _skipped_rel(el):
            yield el, el.get("href", ""), str(el.tag)
        yield from _walk(el)


def _block_of(el: lxml.html.HtmlElement) -> lxml.html.HtmlElement:
    for ancestor in el.iterancestors():
        if ancestor.tag in _BLOCKS:
            return ancestor
    return el


def _shorten(text: str, start: int, end: int, limit: int = CONTEXT_LIMIT) -> str:
    """The sentences of ``text`` around [start, end), grown while they fit in ``limit``; a window otherwise."""
    if len(text) <= limit:
        return text
    bounds = [0, *(m.end() for m in _SENTENCE_END.finditer(text)), len(text)]
    # the sentence holding [start, end) is bounds[first]..bounds[last]; it is never empty
    first = max(i for i, b in enumerate(bounds[:-1]) if b <= start)
    last = min(i for i, b in enumerate(bounds) if i > first and b >= min(end, len(text)))
    while True:
        grown = False
        if first > 0 and bounds[last] - bounds[first - 1] <= limit:
            first, grown = first - 1, True
        if last < len(bounds) - 1 and bounds[last + 1] - bounds[first] <= limit:
            last, grown = last + 1, True
        if not grown:
            break
    if bounds[last] - bounds[first] <= limit:
        return text[bounds[first] : bounds[last]].strip()
    lo = max(0, min(start - limit // 3, len(text) - limit))
    window = text[lo : lo + limit]
    if lo > 0:
        window = "…" + window.split(" ", 1)[-1]
    if lo + limit < len(text):
        window = window.rsplit(" ", 1)[0] + "…"
    return window.strip()


def _link_context(el: lxml.html.HtmlElement, container: lxml.html.HtmlElement) -> str:
    block = _block_of(el)
    text, start = _text_and_offset(block, el)
    own = _text(el)
    if text in ("", own):  # a paragraph holding only a linked image says nothing: treat it as an embed
        return _embed_context(el, container)
    return _shorten(text, start, start + len(own))


def _embed_context(el: lxml.html.HtmlElement, container: lxml.html.HtmlElement) -> str:
    """A tweet's own text, else the figure caption, else the nearest paragraph before (or after) the embed."""
    if el.tag == "blockquote" and "instagram-media" not in el.get("class", ""):
        return _shorten(_text(el), 0, 0)  # a tweet's text, or the quotation of a <blockquote cite>
    for figure in el.iterancestors("figure"):
        for caption in figure.iter("figcaption"):
            return _shorten(_text(caption), 0, 0)
    node = el
    while node is not container and node.getparent() is not None:  # nearest text first, then outwards
        for preceding, siblings in ((True, node.itersiblings(preceding=True)), (False, node.itersiblings())):
            for sibling in siblings:
                text = _text(sibling) if isinstance(sibling.tag, str) and _embed_url(sibling) is None else ""
                if text:  # the sentence nearest the embed: the end of what precedes it, the start of what follows
                    return _shorten(text, len(text), len(text)) if preceding else _shorten(text, 0, 0)
        node = node.getparent()
    return ""


def _anchor_text(el: lxml.html.HtmlElement, label: str) -> str:
    if label in ("a", "area"):
        text = _text(el)
        if text:
            return text
        for img in el.iter("img"):
            return str(img.get("alt") or img.get("title") or "").strip()
        return str(el.get("title") or el.get("aria-label") or "").strip()
    return str(el.get("title") or el.get("aria-label") or "").strip()


def _is_site_furniture(url: str, page_host: str) -> bool:
    """Login pages anywhere; the site's own author, tag, category, search and home pages."""
    parts = urlsplit(url)
    if _LOGIN_PATH.search(parts.path):
        return True
    if not same_site(parts.hostname or "", page_host):
        return False
    return parts.path == "/" or bool(_TAXONOMY_PATH.search(parts.path) or _TAXONOMY_QUERY.search(parts.query))


def extract_citations(html: bytes | str, base_url: str, *, encoding: str | None = None) -> list[Citation]:
    """The links and embeds in a report page's article body, deduplicated by identity key, in article order.

    ``encoding`` is the charset from the HTTP Content-Type header, if any. Raises UrlError if ``base_url``
    cannot be archived; bad links in the page are skipped.
    """
    page_url = normalise(base_url)
    page_key = identify(page_url).key
    root = _parse(decode_html(html, encoding) if isinstance(html, bytes) else html)
    if root is None:
        return []
    base = page_url
    for base_el in root.iter("base"):  # HTML §4.2.3: the first <base href> wins, resolved against the page
        if base_el.get("href"):
            try:
                base = normalise(urljoin(page_url, base_el.get("href", "").strip()))
            except (UrlError, ValueError):
                log.debug("ignoring unusable <base href> %r", base_el.get("href"))
            break
    container = _find_body(root)
    admitted: set[str] | None = None
    if container is None:  # no semantic markup: trafilatura decides which links are in the main text
        container = root.find("body") if root.find("body") is not None else root
        _clean(container)
        admitted = _trafilatura_links(container)
        container = _content_area(container, admitted)
    else:
        _clean(container)
    page_host = urlsplit(page_url).hostname or ""
    seen: set[str] = set()
    citations: list[Citation] = []
    for el, raw, label in _walk(container):
        raw = raw.strip()
        if not raw or raw.startswith("#") or (label == "a" and admitted is not None and raw not in admitted):
            continue
        try:
            url = unwrap_redirect(urljoin(base, raw))
        except (UrlError, ValueError):
            continue  # mailto:, javascript:, tel:, data: and malformed hrefs are not citations
        if is_share_intent(url) or _is_site_furniture(url, page_host):
            continue
        ref = identify(url)
        if ref.key in seen or ref.key == page_key:
            continue
        seen.add(ref.key)
        context = _link_context(el, container) if label in ("a", "area") else _embed_context(el, container)
        citations.append(Citation(url, _anchor_text(el, label), context, ref, len(citations), label))
    return citations


__all__ = ["CONTEXT_LIMIT", "Citation", "decode_html", "extract_citations"]
