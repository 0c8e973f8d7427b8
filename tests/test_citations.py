"""Cited links of report pages: fixture pages built from the seed reports' facts, with fictional links.

Every cited URL in tests/data/reports/ is made up (TESTVIDEO01, ExampleMediaCenter, example.org ...): the
pages test extraction, they are not sources.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.capture.citations import CONTEXT_LIMIT, Citation, decode_html, extract_citations
from archiver.errors import UrlError

REPORTS = Path(__file__).parent / "data" / "reports"


def _read(name: str) -> bytes:
    return (REPORTS / name).read_bytes()


def _urls(citations: list[Citation]) -> list[str]:
    return [c.url for c in citations]


def _by_url(citations: list[Citation]) -> dict[str, Citation]:
    return {c.url: c for c in citations}


# WordPress-like blog (seed 000: four hospitals hit, 25 March - 2 April 2017) ------------------------------

WP_URL = "https://blog.example.net/2017/04/02/four-hospitals-out-of-service/"
WP_EXPECTED = [
    "https://www.facebook.com/ExampleActivistPage/posts/1000000001",
    "https://m.facebook.com/ExampleHealthDirectorate/posts/1000000002",
    "https://www.facebook.com/ExampleMedicalRelief/photos/a.1000000/1000000003/?type=3",
    "https://youtu.be/TESTVIDEO01",
    "https://www.facebook.com/ExampleMaarraMediaCenter/videos/1000000004/",
    "https://example.org/media/khan-shaykhoun-2017-04-04-full.jpg",
    "https://blog.example.net/2017/03/18/earlier-attacks-on-medical-facilities/",
    "https://example.org/reports/chemical-attack-briefing.pdf",
]


def test_wordpress_blog_body_links_only() -> None:
    citations = extract_citations(_read("wordpress_blog.html"), WP_URL)
    assert _urls(citations) == WP_EXPECTED
    assert [c.position for c in citations] == list(range(len(WP_EXPECTED)))
    found = set(_urls(citations))
    for absent in (
        "https://www.facebook.com/ExampleBlogPage",  # header navigation
        "https://blog.example.net/about/",
        "https://blog.example.net/author/editor/",  # byline
        "https://blog.example.net/category/reports/",  # rel="category tag"
        "https://blog.example.net/tag/hama/",
        "https://blog.example.net/2017/03/10/winter-displacement/",  # Jetpack related posts, inside the body
        "https://blog.example.net/2017/03/30/latamneh/",  # post navigation and sidebar
        "https://example.com/commenter-blog",  # comment author
        "https://example.com/commenter-blog/my-theory",  # comment text
        "https://blog.example.net/wp-login.php",
        "https://www.youtube.com/embed/SIDEBARVID1",  # sidebar widget
        "https://wordpress.org/",  # footer
    ):
        assert not any(url.startswith(absent) for url in found), absent
    assert not any("sharer" in url or "intent" in url for url in found)


def test_wordpress_blog_details() -> None:
    by_url = _by_url(extract_citations(_read("wordpress_blog.html"), WP_URL))
    post = by_url["https://www.facebook.com/ExampleActivistPage/posts/1000000001"]
    assert post.anchor_text == "a post by a local activist"
    assert post.context.startswith("The surgical hospital in Kafranbel was struck several times")
    assert post.classification.key == "facebook:post:1000000001"
    assert post.classification.kind == "social_post"
    assert post.element == "a"
    # the mobile host and tracking parameters are normalised away in the key, not in the stored URL's host
    directorate = by_url["https://m.facebook.com/ExampleHealthDirectorate/posts/1000000002"]
    assert directorate.classification.canonical_url == (
        "https://www.facebook.com/ExampleHealthDirectorate/posts/1000000002"
    )
    # youtu.be and the later youtube.com/watch link are one source, kept at the first position
    video = by_url["https://youtu.be/TESTVIDEO01"]
    assert (video.position, video.anchor_text) == (3, "Footage of the destruction")
    assert video.classification.canonical_url == "https://www.youtube.com/watch?v=TESTVIDEO01"
    # an image wrapped in a link: the alt text is the anchor, the neighbouring paragraph the context
    photo = by_url["https://example.org/media/khan-shaykhoun-2017-04-04-full.jpg"]
    assert photo.anchor_text == "Aftermath photograph, Khan Shaykhoun, 4 April 2017"
    assert photo.classification.kind == "image"
    assert "Maarat al-Numan" in photo.context
    assert by_url["https://example.org/reports/chemical-attack-briefing.pdf"].classification.kind == "document"


# News site with heavy furniture (seed 004: Kafranbel and Kansafra hospitals, November 2019) -------------

NEWS_URL = "https://news.example.com/en/news/2019/11/28/southern-idlib-hospitals-destroyed"
NEWS_EXPECTED = [
    "https://example.org/alquds/2019/11/27/southern-idlib-strikes",
    "https://www.facebook.com/watch/?v=1000000005",
    "https://twitter.com/ExampleCivDef/status/1200000000000000001",
    "https://news.example.com/en/news/2019/11/20/idlib-hospitals-overwhelmed",
    "https://example.org/src/statements/2019-11-25.pdf",
    "https://t.me/s/ExampleLocalNews/4321",
]


def test_news_site_body_links_only() -> None:
    citations = extract_citations(_read("news_site.html"), NEWS_URL)
    assert _urls(citations) == NEWS_EXPECTED
    found = " ".join(_urls(citations))
    for absent in (
        "/en/user/login",
        "/en/user/register",
        "/en/author/",
        "/en/tag/",
        "/en/cookie-policy",
        "https://twitter.com/ExampleChronicle",  # masthead and footer social profiles
        "https://www.facebook.com/ExampleChronicle",
        "https://www.instagram.com/examplechronicle/",
        "https://www.youtube.com/channel/",
        "sharer",
        "intent/tweet",
        "shareArticle",
        "api.whatsapp.com",
        "t.me/share",
        "/en/news/2019/11/01/idlib-bombing-resumes",  # inline "Also read" box
        "/en/news/2019/11/27/aleppo-countryside-shelling",  # related-article cards
        "/en/news/2019/11/28/gulf-summit",  # sidebar
        "ads.example.net",
        "/en/about",
    ):
        assert absent not in found, absent


def test_news_site_details() -> None:
    by_url = _by_url(extract_citations(_read("news_site.html"), NEWS_URL))
    tweet = by_url["https://twitter.com/ExampleCivDef/status/1200000000000000001"]
    assert tweet.classification.key == "x:status:1200000000000000001"
    assert tweet.classification.canonical_url == "https://x.com/ExampleCivDef/status/1200000000000000001"
    statement = by_url["https://example.org/src/statements/2019-11-25.pdf"]
    # the paragraph is longer than the limit: the context is the sentence holding the link
    assert statement.context == (
        "In its statement it warned that up to a million people could flee if the strikes go on, and a local "
        "channel posted lists of the displaced."
    )
    assert by_url["https://t.me/s/ExampleLocalNews/4321"].classification.key == "telegram:post:examplelocalnews/4321"
    assert by_url["https://www.facebook.com/watch/?v=1000000005"].classification.kind == "video"


# Arabic page in windows-1256 (seed 001: Idlib City, Sarmin and the Al-Shuhada camp, 2023) ---------------

AR_URL = "https://arabic.example.net/2023/idlib.html"
AR_EXPECTED = [
    "https://t.me/ExampleDevMinistry/777",
    "https://t.me/ExampleHealthMinistry/2001?single",
    "https://www.facebook.com/ExampleCivilDefence/posts/pfbid0TESTPOSTAAAA",
    "https://www.youtube.com/shorts/TESTVIDEO02",
    "https://example.org/%D8%AA%D9%82%D8%A7%D8%B1%D9%8A%D8%B1/%D8%A5%D8%AF%D9%84%D8%A8-2023",
]


def _check_arabic(citations: list[Citation]) -> None:
    assert _urls(citations) == AR_EXPECTED
    by_url = _by_url(citations)
    ministry = by_url["https://t.me/ExampleDevMinistry/777"]
    assert ministry.anchor_text == "بيان وزارة التنمية"
    assert "مخيم الشهداء" in ministry.context
    assert "حمزة الشبلي" in ministry.context
    assert by_url[AR_EXPECTED[3]].classification.key == "youtube:TESTVIDEO02"
    assert by_url[AR_EXPECTED[4]].anchor_text == "تقرير سابق عن القصف على إدلب"


def test_arabic_windows_1256_declared_in_meta() -> None:
    data = _read("arabic_cp1256.html")
    assert b"charset=windows-1256" in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # the fixture really is windows-1256
    citations = extract_citations(data, AR_URL)
    _check_arabic(citations)
    assert not any("sharer" in url or "/search/label/" in url or url.endswith("/") for url in _urls(citations))


def test_arabic_windows_1256_from_http_charset_only() -> None:
    data = _read("arabic_cp1256.html").replace(b"; charset=windows-1256", b"")
    _check_arabic(extract_citations(data, AR_URL, encoding="windows-1256"))


def test_arabic_windows_1256_undeclared_is_detected() -> None:
    data = _read("arabic_cp1256.html").replace(b"; charset=windows-1256", b"")
    _check_arabic(extract_citations(data, AR_URL))


def test_arabic_windows_1256_mislabelled_as_utf8() -> None:
    data = _read("arabic_cp1256.html").replace(b"charset=windows-1256", b"charset=utf-8")
    _check_arabic(extract_citations(data, AR_URL, encoding="utf-8"))


def test_arabic_as_text() -> None:
    _check_arabic(extract_citations(_read("arabic_cp1256.html").decode("cp1256"), AR_URL))


# Embeds (seed 003: the May 2019 offensive, Hass and Kafranbel) ------------------------------------------

EMBED_URL = "https://liveblog.example.com/2019/05/07/offensive-begins/"
EMBED_EXPECTED = [
    ("https://www.youtube-nocookie.com/embed/TESTVIDEO03", "iframe"),
    ("https://twitter.com/ExampleCivDef/status/1125000000000000001", "blockquote.twitter-tweet"),
    ("https://example.org/media/hass-hospital-aftermath.mp4", "video"),
    ("https://example.org/media/hass-hospital-aftermath.webm", "source"),
    ("https://example.org/media/kafranbel-ambulance-full.jpg", "a"),
    ("https://example.org/state-media/hmeimim-rockets", "a"),
    ("https://www.youtube.com/embed/TESTVIDEO04?rel=0", "iframe"),
    ("https://www.instagram.com/p/TESTPOST05A/", "blockquote.instagram-media"),
    ("https://t.me/ExampleSyriaNews/5555", "script.telegram-post"),
    ("https://www.facebook.com/ExampleMediaCenter/videos/1000000006/", "iframe"),
    ("https://liveblog.example.com/2019/05/06/constant-attacks-northwest/", "a"),
]


def test_embeds_are_citations() -> None:
    citations = extract_citations(_read("embeds.html"), EMBED_URL)
    assert [(c.url, c.element) for c in citations] == EMBED_EXPECTED
    found = " ".join(_urls(citations))
    for absent in (
        "hashtag",  # links inside the tweet are part of the tweet
        "t.co/",
        "SIDEBARVID2",
        "ads.example.net",
        "map-northwest.png",  # a plain image is not a citation
        "ambulance-thumb.jpg",
        "youtu.be/TESTVIDEO03",  # the same video as the iframe above it
        "/category/syria/",
        "liveblog.example.com/syria/",
        "platform.twitter.com",
        "telegram.org/js",
    ):
        assert absent not in found, absent


def test_embed_details() -> None:
    by_url = _by_url(extract_citations(_read("embeds.html"), EMBED_URL))
    iframe = by_url["https://www.youtube-nocookie.com/embed/TESTVIDEO03"]
    assert iframe.anchor_text == "Civilians under rubble in Maarat Harmah (test fixture)"
    assert iframe.context.startswith("Footage posted by a local citizen journalist")  # the figcaption
    assert iframe.classification.key == "youtube:TESTVIDEO03"
    tweet = by_url["https://twitter.com/ExampleCivDef/status/1125000000000000001"]
    assert tweet.context.startswith("More than 900 strikes on homes, markets and hospitals in one week.")
    assert "#Idlib pic.twitter.com/AbCdEfGhIj — Example Civil Defence" in tweet.context
    video = by_url["https://example.org/media/hass-hospital-aftermath.mp4"]
    assert video.classification.kind == "video"
    assert "bunker-buster" in video.context and "does not support" not in video.context
    assert by_url["https://t.me/ExampleSyriaNews/5555"].classification.kind == "social_post"
    plugin = by_url["https://www.facebook.com/ExampleMediaCenter/videos/1000000006/"]
    assert plugin.classification.key == "facebook:video:1000000006"


# <base href> and relative links, on a page without semantic markup (seed 002: Halfaya and Abdin) --------

BASE_URL = "https://archive.example.net/pages/halfaya.html"
BASE_EXPECTED = [
    "https://archive.example.net/syria/2017/04/halfaya-statement.pdf",
    "https://www.youtube.com/watch?t=30s&v=TESTVIDEO06",
    "https://archive.example.net/syria/2017/media/latamneh-child.mp4",
    "https://archive.example.net/sources/shaam-hospital-abdin.html",
    "https://cdn.example.net/clips/abdin-aftermath.webm",
    "https://player.vimeo.com/video/100000001?h=abcdef1234",
]


def test_base_href_resolves_relative_links() -> None:
    citations = extract_citations(_read("base_href.html"), BASE_URL)
    assert _urls(citations) == BASE_EXPECTED
    found = " ".join(_urls(citations))
    for absent in ("index.html", "about.html", "contact.html", "links.html", "copyright.html", "ExampleDoc"):
        assert absent not in found, absent
    assert all(url.startswith("https://") for url in _urls(citations))  # no mailto:, tel:, data:, javascript:
    vimeo = citations[-1]
    assert vimeo.classification.canonical_url == "https://vimeo.com/100000001/abcdef1234"
    assert "four patients were killed" in vimeo.context


def test_without_base_href_links_resolve_against_the_page() -> None:
    data = _read("base_href.html").replace(b'<base href="https://archive.example.net/syria/2017/04/">', b"")
    urls = _urls(extract_citations(data, BASE_URL))
    assert urls[0] == "https://archive.example.net/pages/halfaya-statement.pdf"
    assert "https://archive.example.net/media/latamneh-child.mp4" in urls


# Small pages for the filters -----------------------------------------------------------------------------

_FILLER = "The strike hit the hospital at night and witnesses described the damage in detail. " * 3


def _article(body: str, head: str = "") -> str:
    return f"<html><head>{head}</head><body><article><p>{_FILLER}</p>{body}</article></body></html>"


def test_site_furniture_inside_the_body_is_skipped() -> None:
    html = _article(
        '<p>See <a href="/tag/idlib/">Idlib</a>, <a href="/category/news/">news</a>, <a href="/">home</a>, '
        '<a href="/author/someone/">the author</a>, <a href="/wp-login.php">log in</a>, '
        '<a href="/?s=hospital">search</a>, <a href="/page/2/">older</a>, <a href="#comments">comments</a>, '
        '<a href="https://site.example.net/a/b.html">this page</a>, <a href="/x" rel="tag">a tag</a>, '
        '<a href="https://other.example.org/tag/idlib/">another site\'s tag page</a>, '
        '<a href="https://other.example.org/user/login">its login</a> and '
        '<a href="/2019/05/01/earlier.html">our earlier story</a>.</p>'
    )
    urls = _urls(extract_citations(html, "https://site.example.net/a/b.html"))
    assert urls == ["https://other.example.org/tag/idlib/", "https://site.example.net/2019/05/01/earlier.html"]


def test_non_http_and_malformed_links_are_skipped() -> None:
    html = _article(
        '<p><a href="mailto:a@example.org">mail</a> <a href="javascript:void(0)">js</a> <a href="tel:+1">tel</a> '
        '<a href="data:text/html,x">data</a> <a href="whatsapp://send?text=x">wa</a> <a href="ftp://example.org/f">'
        'ftp</a> <a href="http://[::1">broken</a> <a href="https://user:pw@example.org/">creds</a> <a>no href</a> '
        '<a href="  https://example.org/ok  ">ok</a></p>'
    )
    assert _urls(extract_citations(html, "https://site.example.net/")) == ["https://example.org/ok"]


def test_link_shims_are_unwrapped() -> None:
    html = _article(
        '<p><a href="https://l.facebook.com/l.php?u=https%3A%2F%2Fexample.org%2Freport&amp;h=AT0">report</a> '
        'and <a href="https://www.google.com/url?q=https://youtu.be/TESTVIDEO07&amp;sa=D">video</a></p>'
    )
    citations = extract_citations(html, "https://site.example.net/")
    assert _urls(citations) == ["https://example.org/report", "https://youtu.be/TESTVIDEO07"]
    assert citations[1].classification.key == "youtube:TESTVIDEO07"


def test_long_paragraph_context_is_trimmed_around_the_link() -> None:
    sentences = [f"Sentence number {i} describes one more detail of the attack on the hospital." for i in range(30)]
    sentences[15] = 'The <a href="https://example.org/cited">cited video</a> shows the moment of the strike.'
    html = _article("<p>" + " ".join(sentences) + "</p>")
    (citation,) = extract_citations(html, "https://site.example.net/")
    assert "The cited video shows the moment of the strike." in citation.context
    assert len(citation.context) <= CONTEXT_LIMIT
    assert "Sentence number 0 " not in citation.context


def test_a_huge_sentence_is_cut_to_a_window() -> None:
    words = " ".join(f"word{i}" for i in range(300))
    html = _article(f'<p>{words} <a href="https://example.org/cited">cited</a> {words}</p>')
    (citation,) = extract_citations(html, "https://site.example.net/")
    assert "cited" in citation.context
    assert citation.context.startswith("…") and citation.context.endswith("…")
    assert len(citation.context) <= CONTEXT_LIMIT + 2


def test_xml_declaration_and_empty_pages() -> None:
    html = '<?xml version="1.0" encoding="utf-8"?>' + _article('<p><a href="https://example.org/x">x</a></p>')
    assert _urls(extract_citations(html, "https://site.example.net/")) == ["https://example.org/x"]
    assert extract_citations("", "https://site.example.net/") == []
    assert extract_citations(b"", "https://site.example.net/") == []
    assert extract_citations(b"<html></html>", "https://site.example.net/") == []
    assert extract_citations("<!-- before the root --><article>", "https://site.example.net/") == []


def test_the_page_url_must_be_archivable() -> None:
    with pytest.raises(UrlError, match="scheme 'file'"):
        extract_citations(_article(""), "file:///tmp/report.html")


def test_citation_is_frozen() -> None:
    (citation,) = extract_citations(_article('<p><a href="https://example.org/x">x</a></p>'), "https://s.example/")
    with pytest.raises(dataclasses.FrozenInstanceError):
        citation.url = "https://example.org/y"  # type: ignore[misc]


# Decoding ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "http_charset", "expected"),
    [
        (b"\xef\xbb\xbf<p>caf\xc3\xa9</p>", "windows-1256", "<p>café</p>"),  # a BOM wins over HTTP
        (b"\xff\xfe<\x00p\x00>\x00\xe9\x00", None, "<p>é"),  # UTF-16 only with a BOM
        (b"<meta charset=utf-16><p>\xc3\xa9</p>", None, "<meta charset=utf-16><p>é</p>"),  # ASCII-readable meta
        (b'<meta charset="utf-8"><p>caf\xc3\xa9</p>', None, '<meta charset="utf-8"><p>café</p>'),
        (b'<meta charset="utf-8"><p>caf\xe9</p>', "iso-8859-1", '<meta charset="utf-8"><p>café</p>'),  # HTTP wins
        (b"<p>\x93quoted\x94</p>", "ISO-8859-1", "<p>\u201cquoted\u201d</p>"),  # WHATWG: latin1 is cp1252
        (b"<p>\xc7\xe1\xd3\xe6\xd1\xed\xc9</p>", "windows-1256", "<p>السورية</p>"),
        (b"<p>\xc7\xe1\xd3\xe6\xd1\xed\xc9</p>", "no-such-charset", None),  # unknown label: sniffed instead
    ],
)
def test_decode_html(data: bytes, http_charset: str | None, expected: str | None) -> None:
    text = decode_html(data, http_charset)
    if expected is not None:
        assert text == expected
    else:
        assert isinstance(text, str) and text.startswith("<p>")


_TAGS = [
    "<article>", "</article>", "<p>", "</p>", "<a href='https://example.org/x'>", "<a href='//[::1'>", "</a>",
    "<iframe src='https://youtu.be/TESTVIDEO09'>", "<base href='http://[x'>", "<nav>", "text. ", "\x00", "é",
    "<blockquote class='twitter-tweet'>", "<script data-telegram-post='a/1'>", "<video>", "<source src=''>",
    "<meta charset='utf-16'>", "<?xml version='1.0'?>", "<!-- c -->", "<br>", "<figure>", "<figcaption>",
]  # fmt: skip


# More embed forms and hostile input ----------------------------------------------------------------------


def test_other_embed_forms() -> None:
    html = _article(
        '<div class="fb-post" data-href="https://www.facebook.com/ExampleMediaCenter/posts/1000000009">'
        '<blockquote cite="https://www.facebook.com/ExampleMediaCenter/posts/1000000009" class="fb-xfbml-parse-ignore">'
        '<a href="https://www.facebook.com/ExampleMediaCenter">Example Media Center</a></blockquote></div>'
        '<lite-youtube videoid="TESTVIDEO08" title="Lite embed"></lite-youtube>'
        '<blockquote class="tiktok-embed" cite="https://www.tiktok.com/@exampleuser/video/7000000000000000009" '
        'data-video-id="7000000000000000009"><section><a href="https://www.tiktok.com/@exampleuser">@exampleuser'
        "</a></section></blockquote>"
        '<blockquote cite="https://example.org/statement-2019-05-06">The hospital was hit three times.</blockquote>'
        '<object data="https://example.org/media/briefing.pdf" type="application/pdf"></object>'
        '<audio src="https://example.org/media/radio-call.mp3"></audio>'
    )
    citations = extract_citations(html, "https://site.example.net/a.html")
    assert [(c.url, c.element) for c in citations] == [
        ("https://www.facebook.com/ExampleMediaCenter/posts/1000000009", "div.fb-embed"),
        ("https://www.youtube.com/watch?v=TESTVIDEO08", "lite-youtube"),
        ("https://www.tiktok.com/@exampleuser/video/7000000000000000009", "blockquote.tiktok-embed"),
        ("https://example.org/statement-2019-05-06", "blockquote[cite]"),
        ("https://example.org/media/briefing.pdf", "object"),
        ("https://example.org/media/radio-call.mp3", "audio"),
    ]
    assert citations[1].anchor_text == "Lite embed"
    assert citations[3].context == "The hospital was hit three times."


def test_comments_are_never_taken_for_the_body() -> None:
    comment = "I disagree with this report and here is my long opinion about it. " * 10
    html = (
        "<html><body><article class='post'><p>" + _FILLER + '<a href="https://example.org/cited">source</a></p>'
        "</article><div id='comments'><article class='comment-body'><p>" + comment + '<a href="https://example.com/'
        'spam">my site</a></p></article></div></body></html>'
    )
    assert _urls(extract_citations(html, "https://site.example.net/a.html")) == ["https://example.org/cited"]


def test_an_unusable_base_href_is_ignored() -> None:
    html = _article('<p><a href="other.html">relative</a></p>', head='<base href="javascript:alert(1)">')
    assert _urls(extract_citations(html, "https://site.example.net:8443/dir/a.html")) == [
        "https://site.example.net:8443/dir/other.html"
    ]


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), st.lists(st.sampled_from(_TAGS)).map("".join)))
def test_arbitrary_input_never_raises(page: bytes | str) -> None:
    citations = extract_citations(page, "https://site.example.net/a.html")
    assert all(c.url.startswith(("http://", "https://")) for c in citations)
