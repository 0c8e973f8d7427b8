"""Page requisites: what a page needs to replay (images, stylesheets, scripts, fonts, video posters).

Found in the HTML (``img``/``srcset``, ``link rel=stylesheet|icon|preload``, ``script src``, ``video poster``,
inline ``style``) and in stylesheets (``url(...)``, ``@import``). Media bodies (``video src``) are not
requisites: the media capturer handles them, with its own size limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree

CSS_URL = re.compile(rb"""url\(\s*(['"]?)([^'")\s]+)\1\s*\)|@import\s+(['"])([^'"]+)\3""", re.IGNORECASE)
STYLE_ATTR_URL = re.compile(r"""url\(\s*(['"]?)([^'")\s]+)\1\s*\)""", re.IGNORECASE)
LINK_RELS = {"stylesheet", "icon", "shortcut", "apple-touch-icon", "preload", "modulepreload", "manifest"}
MAX_HTML_PARSE = 16 << 20  # bytes of HTML parsed for requisites; the rest of a larger page is ignored


def _http(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def _srcset(value: str) -> Iterable[str]:
    for part in value.split(","):
        candidate = part.strip().split(" ")[0]
        if candidate:
            yield candidate


def _dedupe(base: str, refs: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for ref in refs:
        ref = ref.strip()
        if not ref or ref.startswith(("data:", "#", "javascript:", "about:", "blob:")):
            continue
        absolute = urljoin(base, ref).split("#", 1)[0]
        if _http(absolute) and absolute != base:
            seen.setdefault(absolute, None)
    return list(seen)


def html_requisites(html: bytes, base_url: str) -> list[str]:
    """Absolute URLs of the page's requisites, in document order, without duplicates."""
    if not html.strip():
        return []
    try:
        doc = lxml.html.document_fromstring(html[:MAX_HTML_PARSE])
    except (etree.ParserError, ValueError):
        return []
    base = base_url
    for b in doc.iter("base"):
        href = b.get("href")
        if href:
            base = urljoin(base_url, href)
            break
    refs: list[str] = []
    for el in doc.iter():
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag == "img" or (tag == "input" and (el.get("type") or "").lower() == "image"):
            refs += [el.get("src") or "", *_srcset(el.get("srcset") or "")]
            refs += [el.get("data-src") or "", *_srcset(el.get("data-srcset") or "")]  # common lazy loaders
        elif tag == "source" and el.getparent() is not None and el.getparent().tag == "picture":
            refs += list(_srcset(el.get("srcset") or ""))
        elif tag == "link":
            rels = set((el.get("rel") or "").lower().split())
            if rels & LINK_RELS:
                refs.append(el.get("href") or "")
        elif tag == "script":
            refs.append(el.get("src") or "")
        elif tag == "video":
            refs.append(el.get("poster") or "")
        elif tag == "style" and el.text:
            refs += css_requisites_text(el.text.encode("utf-8", "replace"))
        style = el.get("style") if tag else None
        if style:
            refs += [m.group(2) for m in STYLE_ATTR_URL.finditer(style)]
    return _dedupe(base, refs)


def css_requisites_text(css: bytes) -> list[str]:
    out = []
    for m in CSS_URL.finditer(css):
        raw = m.group(2) or m.group(4)
        if raw:
            out.append(raw.decode("utf-8", "replace"))
    return out


def css_requisites(css: bytes, base_url: str) -> list[str]:
    """Fonts, images and imports a stylesheet refers to, resolved against the stylesheet's own URL."""
    return _dedupe(base_url, css_requisites_text(css))
