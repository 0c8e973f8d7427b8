"""URL normalisation and platform identification: tables of real URL shapes, error cases, properties.

Ids are those of well-known public items (dQw4w9WgXcQ, jNQXAC9IVRw, jack/status/20, vimeo 76979871,
dailymotion x7tgad0) or plainly made up (AAAAAAAAAAA, 1000000001). Nothing here touches the network.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.errors import UrlError
from archiver.urls import (
    PlatformRef,
    host_of,
    identify,
    identity_key,
    is_share_intent,
    kind_of_path,
    normalise,
    oembed_url,
    platform_of_host,
    same_site,
    telegram_embed_url,
    telegram_preview_url,
    unwrap_redirect,
)

NORMALISE = [
    ("HTTP://WWW.Example.COM/", "http://www.example.com/"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:80/a", "http://example.com/a"),
    ("http://example.com:0080/", "http://example.com/"),
    ("https://example.com:8443/a", "https://example.com:8443/a"),
    ("https://example.com:/a", "https://example.com/a"),
    ("https://example.com/a/./b/../c", "https://example.com/a/c"),
    ("https://example.com/a/b/..", "https://example.com/a/"),
    ("https://example.com/../../x", "https://example.com/x"),
    ("https://example.com/%7Euser/%41%62c/%2e%2E/d", "https://example.com/~user/d"),
    ("https://example.com/a%2fb%3fc%c3%a9", "https://example.com/a%2Fb%3Fc%C3%A9"),
    ("https://example.com/path with space", "https://example.com/path%20with%20space"),
    ("https://example.com/100%", "https://example.com/100%25"),
    ("https://example.com/%zz", "https://example.com/%25zz"),
    ("https://example.com/إدلب", "https://example.com/%D8%A5%D8%AF%D9%84%D8%A8"),
    ("https://example.com/?b=2&a=1&c", "https://example.com/?a=1&b=2&c"),
    ("https://example.com/?b=1&a=2&b=0", "https://example.com/?a=2&b=1&b=0"),
    ("https://example.com/?q=a+b&r=%e2%82%ac&s=%41", "https://example.com/?q=a+b&r=%E2%82%AC&s=A"),
    ("https://example.com/?utm_source=x&utm_medium=y&id=5", "https://example.com/?id=5"),
    ("https://example.com/?UTM_Campaign=x&utm%5Fterm=y", "https://example.com/"),
    ("https://example.com/?fbclid=IwAR0&gclid=x&igshid=y&mc_cid=1&mc_eid=2&_ga=3", "https://example.com/"),
    ("https://example.com/?ref_src=twsrc%5Etfw&ref_url=https%3A%2F%2Fexample.org", "https://example.com/"),
    ("https://example.com/a?feature=share&x=1", "https://example.com/a?x=1"),
    ("https://example.com/a?feature=player&x=1", "https://example.com/a?feature=player&x=1"),
    ("https://example.com/a?si=keep&t=keep&s=keep", "https://example.com/a?s=keep&si=keep&t=keep"),
    ("https://example.com/a?", "https://example.com/a"),
    ("https://example.com/a?&&", "https://example.com/a"),
    ("https://example.com/a#section-2", "https://example.com/a"),
    ("https://example.com/app#!/report/5", "https://example.com/app#!/report/5"),
    ("https://twitter.com/#!/jack/status/20", "https://twitter.com/jack/status/20"),
    ("https://twitter.com/#!jack", "https://twitter.com/jack"),
    ("https://twitter.com/jack#!/other", "https://twitter.com/jack"),
    ("https://www.facebook.com/#!/ExamplePage?sk=wall", "https://www.facebook.com/ExamplePage?sk=wall"),
    ("https://BÜCHER.example/straße", "https://xn--bcher-kva.example/stra%C3%9Fe"),
    ("https://пример.рф/", "https://xn--e1afmkfd.xn--p1ai/"),
    ("https://ex%41mple.com/", "https://example.com/"),
    ("https://example.com./a", "https://example.com/a"),
    ("  https://example.com/a\n", "https://example.com/a"),
    ("https://exam\tple.com/a\r\nb", "https://example.com/ab"),
    ("https://[2001:DB8::0001]:8080/", "https://[2001:db8::1]:8080/"),
    ("http://127.0.0.1:8000/x", "http://127.0.0.1:8000/x"),
    ("https://my_site.example.com/", "https://my_site.example.com/"),
    (
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ&feature=youtu.be&si=abc&ab_channel=RickAstley&pp=ygU",
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    ),
    ("https://youtu.be/dQw4w9WgXcQ?si=AbCd&t=42", "https://youtu.be/dQw4w9WgXcQ?t=42"),
    ("https://x.com/jack/status/20?s=20&t=AbCdEf", "https://x.com/jack/status/20"),
    ("https://x.com/search?q=idlib&s=1", "https://x.com/search?q=idlib&s=1"),
    (
        "https://www.facebook.com/P/posts/1?__cft__[0]=AZ&__tn__=%2CO-R&mibextid=Nif5oz",
        "https://www.facebook.com/P/posts/1",
    ),
    (
        "https://www.tiktok.com/@u/video/1?is_from_webapp=1&sender_device=pc&lang=en",
        "https://www.tiktok.com/@u/video/1?lang=en",
    ),
]


@pytest.mark.parametrize(("url", "expected"), NORMALISE)
def test_normalise(url: str, expected: str) -> None:
    assert normalise(url) == expected
    assert normalise(expected) == expected


ERRORS = [
    ("ftp://example.com/file", "scheme 'ftp' is not supported"),
    ("mailto:someone@example.com", "scheme 'mailto' is not supported"),
    ("javascript:alert(1)", "scheme 'javascript' is not supported"),
    ("file:///etc/passwd", "scheme 'file' is not supported"),
    ("whatsapp://send?text=hi", "scheme 'whatsapp' is not supported"),
    ("example.com/path", "has no scheme"),
    ("//example.com/path", "has no scheme"),
    ("", "has no scheme"),
    ("https://", "has no host"),
    ("http:///path", "has no host"),
    ("https://./", "has no host"),
    ("https://user:secret@example.com/", "credentials"),
    ("https://user@example.com/", "credentials"),
    ("https://:secret@example.com/", "credentials"),
    ("http://[::1/", "malformed URL"),
    ("http://[fe80::1%25eth0]/", "zone identifiers"),
    ("http://[not-ipv6]/", "malformed"),
    ("https://exa mple.com/", "malformed host"),
    ("https://a..b/", "malformed host"),
    ("https://-leading.example/", "malformed host"),
    ("https://" + "a" * 64 + ".com/", "malformed host"),
    ("https://١٢٣.com/", "malformed host"),
    ("https://example.com:99999/", "invalid port"),
    ("https://example.com:8o/", "invalid port"),
    ("https://example.com:80:80/", "malformed host"),
    ("http://example.com/" + "x" * 40_000, "longer than"),
]


@pytest.mark.parametrize(("url", "message"), ERRORS)
def test_normalise_refuses(url: str, message: str) -> None:
    with pytest.raises(UrlError, match=message.replace("[", r"\[")):
        normalise(url)


@pytest.mark.parametrize(
    "url", ["https://user:secret@example.com/", "https://user:secret@[::1/", "https://user:secret@exa mple/"]
)
def test_errors_never_repeat_a_password(url: str) -> None:
    with pytest.raises(UrlError) as caught:
        normalise(url)
    assert "secret" not in str(caught.value)
    assert "secret" not in (caught.value.hint or "")


def _ref(platform: str | None, kind: str, item_id: str | None, key: str, canonical: str) -> dict[str, object]:
    return {"platform": platform, "kind": kind, "item_id": item_id, "key": key, "canonical_url": canonical}


YT = "https://www.youtube.com/watch?v="
FBP = "https://www.facebook.com/ExampleMediaCenter"
PLATFORMS = [
    # YouTube: every form of one video is one key
    (YT + "dQw4w9WgXcQ", _ref("youtube", "video", "dQw4w9WgXcQ", "youtube:dQw4w9WgXcQ", YT + "dQw4w9WgXcQ")),
    ("https://youtube.com/watch?v=dQw4w9WgXcQ&feature=share", _ref("youtube", "video", "dQw4w9WgXcQ",
     "youtube:dQw4w9WgXcQ", YT + "dQw4w9WgXcQ")),
    ("https://m.youtube.com/watch?v=dQw4w9WgXcQ&t=42s", _ref("youtube", "video", "dQw4w9WgXcQ",
     "youtube:dQw4w9WgXcQ", YT + "dQw4w9WgXcQ")),
    ("https://www.youtube.com/watch?app=desktop&v=dQw4w9WgXcQ", _ref("youtube", "video", "dQw4w9WgXcQ",
     "youtube:dQw4w9WgXcQ", YT + "dQw4w9WgXcQ")),
    ("https://youtu.be/dQw4w9WgXcQ", _ref("youtube", "video", "dQw4w9WgXcQ", "youtube:dQw4w9WgXcQ",
     YT + "dQw4w9WgXcQ")),
    ("https://youtu.be/dQw4w9WgXcQ?si=AbCdEfGhIjKlMnOp", _ref("youtube", "video", "dQw4w9WgXcQ",
     "youtube:dQw4w9WgXcQ", YT + "dQw4w9WgXcQ")),
    ("https://music.youtube.com/watch?v=dQw4w9WgXcQ&list=RDAMVM", _ref("youtube", "video", "dQw4w9WgXcQ",
     "youtube:dQw4w9WgXcQ", YT + "dQw4w9WgXcQ")),
    ("https://www.youtube.com/shorts/AAAAAAAAAAA", _ref("youtube", "video", "AAAAAAAAAAA",
     "youtube:AAAAAAAAAAA", YT + "AAAAAAAAAAA")),
    ("https://www.youtube.com/live/AAAAAAAAAAA?feature=shared", _ref("youtube", "video", "AAAAAAAAAAA",
     "youtube:AAAAAAAAAAA", YT + "AAAAAAAAAAA")),
    ("https://www.youtube.com/embed/jNQXAC9IVRw?autoplay=1", _ref("youtube", "video", "jNQXAC9IVRw",
     "youtube:jNQXAC9IVRw", YT + "jNQXAC9IVRw")),
    ("https://www.youtube-nocookie.com/embed/jNQXAC9IVRw", _ref("youtube", "video", "jNQXAC9IVRw",
     "youtube:jNQXAC9IVRw", YT + "jNQXAC9IVRw")),
    ("https://www.youtube.com/v/jNQXAC9IVRw", _ref("youtube", "video", "jNQXAC9IVRw", "youtube:jNQXAC9IVRw",
     YT + "jNQXAC9IVRw")),
    ("https://www.youtube.com/channel/UCAAAAAAAAAAAAAAAAAAAAAA/videos", _ref("youtube", "channel",
     "UCAAAAAAAAAAAAAAAAAAAAAA", "youtube:channel:UCAAAAAAAAAAAAAAAAAAAAAA",
     "https://www.youtube.com/channel/UCAAAAAAAAAAAAAAAAAAAAAA")),
    ("https://www.youtube.com/@ExampleChannel/videos", _ref("youtube", "channel", "ExampleChannel",
     "youtube:@examplechannel", "https://www.youtube.com/@ExampleChannel")),
    ("https://www.youtube.com/user/ExampleUser", _ref("youtube", "channel", "ExampleUser",
     "youtube:user:exampleuser", "https://www.youtube.com/user/ExampleUser")),
    ("https://www.youtube.com/playlist?list=PLAAAAAAAAAAAAAAAA", _ref("youtube", "unknown", "PLAAAAAAAAAAAAAAAA",
     "youtube:playlist:PLAAAAAAAAAAAAAAAA", "https://www.youtube.com/playlist?list=PLAAAAAAAAAAAAAAAA")),
    ("https://www.youtube.com/about", _ref("youtube", "unknown", None, "https://www.youtube.com/about",
     "https://www.youtube.com/about")),
    ("https://www.youtube.com/watch?v=tooshort", _ref("youtube", "unknown", None,
     "https://www.youtube.com/watch?v=tooshort", "https://www.youtube.com/watch?v=tooshort")),
    # X / Twitter: the status id is the key; the user name stays in the canonical URL
    ("https://twitter.com/jack/status/20", _ref("x", "social_post", "20", "x:status:20",
     "https://x.com/jack/status/20")),
    ("https://x.com/jack/status/20?s=20&t=AbCdEf", _ref("x", "social_post", "20", "x:status:20",
     "https://x.com/jack/status/20")),
    ("https://mobile.twitter.com/jack/status/20", _ref("x", "social_post", "20", "x:status:20",
     "https://x.com/jack/status/20")),
    ("https://twitter.com/#!/jack/status/20", _ref("x", "social_post", "20", "x:status:20",
     "https://x.com/jack/status/20")),
    ("https://twitter.com/jack/statuses/20", _ref("x", "social_post", "20", "x:status:20",
     "https://x.com/jack/status/20")),
    ("https://fxtwitter.com/jack/status/20", _ref("x", "social_post", "20", "x:status:20",
     "https://x.com/jack/status/20")),
    ("https://vxtwitter.com/jack/status/20/photo/1", _ref("x", "social_post", "20", "x:status:20",
     "https://x.com/jack/status/20")),
    ("https://x.com/i/web/status/20", _ref("x", "social_post", "20", "x:status:20", "https://x.com/i/status/20")),
    ("https://twitter.com/i/status/20", _ref("x", "social_post", "20", "x:status:20",
     "https://x.com/i/status/20")),
    ("https://twitter.com/ExampleCivDef/status/1125000000000000001?ref_src=twsrc%5Etfw", _ref("x",
     "social_post", "1125000000000000001", "x:status:1125000000000000001",
     "https://x.com/ExampleCivDef/status/1125000000000000001")),
    ("https://x.com/Jack", _ref("x", "channel", "Jack", "x:user:jack", "https://x.com/Jack")),
    ("https://x.com/search?q=idlib", _ref("x", "unknown", None, "https://x.com/search?q=idlib",
     "https://x.com/search?q=idlib")),
    ("https://t.co/AbCdEfGhIj", _ref("x", "unknown", None, "https://t.co/AbCdEfGhIj", "https://t.co/AbCdEfGhIj")),
    ("https://pbs.twimg.com/media/AbCdEf.jpg", _ref("x", "image", None, "https://pbs.twimg.com/media/AbCdEf.jpg",
     "https://pbs.twimg.com/media/AbCdEf.jpg")),
    # Facebook: mobile, basic and web hosts are www; posts, videos and photos keyed by their id
    (FBP + "/posts/1000000001", _ref("facebook", "social_post", "1000000001", "facebook:post:1000000001",
     FBP + "/posts/1000000001")),
    ("https://m.facebook.com/ExampleMediaCenter/posts/1000000001?__tn__=-R", _ref("facebook", "social_post",
     "1000000001", "facebook:post:1000000001", FBP + "/posts/1000000001")),
    ("https://www.facebook.com/permalink.php?story_fbid=1000000001&id=2000000002", _ref("facebook",
     "social_post", "1000000001", "facebook:post:1000000001",
     "https://www.facebook.com/permalink.php?id=2000000002&story_fbid=1000000001")),
    ("https://m.facebook.com/story.php?story_fbid=1000000001&id=2000000002&mibextid=abc", _ref("facebook",
     "social_post", "1000000001", "facebook:post:1000000001",
     "https://www.facebook.com/permalink.php?id=2000000002&story_fbid=1000000001")),
    (FBP + "/posts/pfbid02AAAAAAAAAAAAAAAAAAAAAAAAAAAA", _ref("facebook", "social_post",
     "pfbid02AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "facebook:post:pfbid02AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
     FBP + "/posts/pfbid02AAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
    ("https://mbasic.facebook.com/groups/123456789/permalink/5000000005/", _ref("facebook", "social_post",
     "5000000005", "facebook:post:5000000005", "https://www.facebook.com/groups/123456789/posts/5000000005")),
    ("https://www.facebook.com/watch/?v=3000000003", _ref("facebook", "video", "3000000003",
     "facebook:video:3000000003", "https://www.facebook.com/watch/?v=3000000003")),
    ("https://www.facebook.com/watch?v=3000000003&extid=WA-UNK", _ref("facebook", "video", "3000000003",
     "facebook:video:3000000003", "https://www.facebook.com/watch/?v=3000000003")),
    ("https://www.facebook.com/video.php?v=3000000003", _ref("facebook", "video", "3000000003",
     "facebook:video:3000000003", "https://www.facebook.com/watch/?v=3000000003")),
    (FBP + "/videos/3000000003/", _ref("facebook", "video", "3000000003", "facebook:video:3000000003",
     FBP + "/videos/3000000003")),
    ("https://web.facebook.com/ExampleMediaCenter/videos/title-of-video/3000000003/", _ref("facebook", "video",
     "3000000003", "facebook:video:3000000003", FBP + "/videos/3000000003")),
    ("https://www.facebook.com/reel/4000000004", _ref("facebook", "video", "4000000004",
     "facebook:video:4000000004", "https://www.facebook.com/reel/4000000004")),
    ("https://fb.watch/aBcD1234eF/", _ref("facebook", "video", "aBcD1234eF", "facebook:fbwatch:aBcD1234eF",
     "https://fb.watch/aBcD1234eF/")),
    ("https://fb.watch/aBcD1234eF", _ref("facebook", "video", "aBcD1234eF", "facebook:fbwatch:aBcD1234eF",
     "https://fb.watch/aBcD1234eF/")),
    ("https://www.facebook.com/photo/?fbid=6000000006&set=a.1", _ref("facebook", "image", "6000000006",
     "facebook:photo:6000000006", "https://www.facebook.com/photo/?fbid=6000000006")),
    (FBP + "/photos/a.1000/6000000006/?type=3", _ref("facebook", "image", "6000000006",
     "facebook:photo:6000000006", "https://www.facebook.com/photo/?fbid=6000000006")),
    ("https://www.facebook.com/share/v/AbCdEf123/", _ref("facebook", "video", "AbCdEf123",
     "facebook:share:AbCdEf123", "https://www.facebook.com/share/v/AbCdEf123/")),
    ("https://m.facebook.com/ExampleMediaCenter", _ref("facebook", "channel", "ExampleMediaCenter",
     "facebook:page:examplemediacenter", FBP)),
    ("https://www.facebook.com/profile.php?id=100000000000007", _ref("facebook", "channel", "100000000000007",
     "facebook:page:100000000000007", "https://www.facebook.com/profile.php?id=100000000000007")),
    ("https://www.facebook.com/help/123", _ref("facebook", "unknown", None, "https://www.facebook.com/help/123",
     "https://www.facebook.com/help/123")),
    # Instagram: one shortcode whatever the view
    ("https://www.instagram.com/p/CAAAAAAAAAA/", _ref("instagram", "social_post", "CAAAAAAAAAA",
     "instagram:media:CAAAAAAAAAA", "https://www.instagram.com/p/CAAAAAAAAAA/")),
    ("https://instagram.com/p/CAAAAAAAAAA/?igshid=MzRlODBiNWFlZA==", _ref("instagram", "social_post",
     "CAAAAAAAAAA", "instagram:media:CAAAAAAAAAA", "https://www.instagram.com/p/CAAAAAAAAAA/")),
    ("https://www.instagram.com/exampleuser/p/CAAAAAAAAAA/", _ref("instagram", "social_post", "CAAAAAAAAAA",
     "instagram:media:CAAAAAAAAAA", "https://www.instagram.com/p/CAAAAAAAAAA/")),
    ("https://www.instagram.com/reel/CBBBBBBBBBB/?utm_source=ig_web_copy_link", _ref("instagram", "video",
     "CBBBBBBBBBB", "instagram:media:CBBBBBBBBBB", "https://www.instagram.com/reel/CBBBBBBBBBB/")),
    ("https://www.instagram.com/tv/CCCCCCCCCCC/", _ref("instagram", "video", "CCCCCCCCCCC",
     "instagram:media:CCCCCCCCCCC", "https://www.instagram.com/tv/CCCCCCCCCCC/")),
    ("https://www.instagram.com/ExampleUser/", _ref("instagram", "channel", "ExampleUser",
     "instagram:user:exampleuser", "https://www.instagram.com/ExampleUser/")),
    # TikTok: item ids; short links keep their code
    ("https://www.tiktok.com/@exampleuser/video/7000000000000000001", _ref("tiktok", "video",
     "7000000000000000001", "tiktok:video:7000000000000000001",
     "https://www.tiktok.com/@exampleuser/video/7000000000000000001")),
    ("https://www.tiktok.com/@exampleuser/video/7000000000000000001?is_from_webapp=1&sender_device=pc",
     _ref("tiktok", "video", "7000000000000000001", "tiktok:video:7000000000000000001",
          "https://www.tiktok.com/@exampleuser/video/7000000000000000001")),
    ("https://m.tiktok.com/v/7000000000000000001.html", _ref("tiktok", "video", "7000000000000000001",
     "tiktok:video:7000000000000000001", "https://www.tiktok.com/embed/v2/7000000000000000001")),
    ("https://www.tiktok.com/embed/v2/7000000000000000001", _ref("tiktok", "video", "7000000000000000001",
     "tiktok:video:7000000000000000001", "https://www.tiktok.com/embed/v2/7000000000000000001")),
    ("https://vm.tiktok.com/ZMAAAAAAA/", _ref("tiktok", "video", "ZMAAAAAAA", "tiktok:short:ZMAAAAAAA",
     "https://vm.tiktok.com/ZMAAAAAAA/")),
    ("https://www.tiktok.com/t/ZTAAAAAAA/", _ref("tiktok", "video", "ZTAAAAAAA", "tiktok:short:ZTAAAAAAA",
     "https://www.tiktok.com/t/ZTAAAAAAA/")),
    ("https://www.tiktok.com/@ExampleUser", _ref("tiktok", "channel", "ExampleUser", "tiktok:user:exampleuser",
     "https://www.tiktok.com/@ExampleUser")),
    # Telegram: /s/, telegram.me, ?embed=1 and ?single are views of one post
    ("https://t.me/ExampleChannel/123", _ref("telegram", "social_post", "ExampleChannel/123",
     "telegram:post:examplechannel/123", "https://t.me/ExampleChannel/123")),
    ("https://t.me/s/ExampleChannel/123", _ref("telegram", "social_post", "ExampleChannel/123",
     "telegram:post:examplechannel/123", "https://t.me/ExampleChannel/123")),
    ("https://telegram.me/ExampleChannel/123", _ref("telegram", "social_post", "ExampleChannel/123",
     "telegram:post:examplechannel/123", "https://t.me/ExampleChannel/123")),
    ("https://t.me/ExampleChannel/123?embed=1&mode=tme", _ref("telegram", "social_post", "ExampleChannel/123",
     "telegram:post:examplechannel/123", "https://t.me/ExampleChannel/123")),
    ("https://t.me/examplechannel/123?single", _ref("telegram", "social_post", "examplechannel/123",
     "telegram:post:examplechannel/123", "https://t.me/examplechannel/123")),
    ("https://t.me/c/1234567890/55", _ref("telegram", "social_post", "c/1234567890/55",
     "telegram:post:c/1234567890/55", "https://t.me/c/1234567890/55")),
    ("https://t.me/s/ExampleChannel", _ref("telegram", "channel", "ExampleChannel",
     "telegram:channel:examplechannel", "https://t.me/ExampleChannel")),
    ("https://t.me/joinchat/AAAAAAAAAAAA", _ref("telegram", "unknown", None, "https://t.me/joinchat/AAAAAAAAAAAA",
     "https://t.me/joinchat/AAAAAAAAAAAA")),
    # Vimeo: the unlisted hash is part of the canonical URL, not of the key
    ("https://vimeo.com/76979871", _ref("vimeo", "video", "76979871", "vimeo:video:76979871",
     "https://vimeo.com/76979871")),
    ("https://player.vimeo.com/video/76979871", _ref("vimeo", "video", "76979871", "vimeo:video:76979871",
     "https://vimeo.com/76979871")),
    ("https://player.vimeo.com/video/76979871?h=8272103f6e&badge=0", _ref("vimeo", "video", "76979871",
     "vimeo:video:76979871", "https://vimeo.com/76979871/8272103f6e")),
    ("https://vimeo.com/76979871/8272103f6e", _ref("vimeo", "video", "76979871", "vimeo:video:76979871",
     "https://vimeo.com/76979871/8272103f6e")),
    ("https://vimeo.com/channels/staffpicks/76979871", _ref("vimeo", "video", "76979871", "vimeo:video:76979871",
     "https://vimeo.com/76979871")),
    # Dailymotion and Rumble
    ("https://www.dailymotion.com/video/x7tgad0", _ref("dailymotion", "video", "x7tgad0",
     "dailymotion:video:x7tgad0", "https://www.dailymotion.com/video/x7tgad0")),
    ("https://dai.ly/x7tgad0", _ref("dailymotion", "video", "x7tgad0", "dailymotion:video:x7tgad0",
     "https://www.dailymotion.com/video/x7tgad0")),
    ("https://www.dailymotion.com/embed/video/x7tgad0?autoplay=1", _ref("dailymotion", "video", "x7tgad0",
     "dailymotion:video:x7tgad0", "https://www.dailymotion.com/video/x7tgad0")),
    ("https://www.dailymotion.com/video/x2bxdd_old-title_news", _ref("dailymotion", "video", "x2bxdd",
     "dailymotion:video:x2bxdd", "https://www.dailymotion.com/video/x2bxdd")),
    ("https://rumble.com/v1aaaaa-example-title.html", _ref("rumble", "video", "v1aaaaa", "rumble:video:v1aaaaa",
     "https://rumble.com/v1aaaaa-example-title.html")),
    ("https://rumble.com/embed/v1bbbbb/?pub=4", _ref("rumble", "video", "v1bbbbb", "rumble:embed:v1bbbbb",
     "https://rumble.com/embed/v1bbbbb/")),
    # Everything else: classified by extension, keyed by its normalised URL
    ("https://example.org/media/clip.MP4", _ref(None, "video", None, "https://example.org/media/clip.MP4",
     "https://example.org/media/clip.MP4")),
    ("https://example.org/live/stream.m3u8", _ref(None, "video", None, "https://example.org/live/stream.m3u8",
     "https://example.org/live/stream.m3u8")),
    ("https://example.org/photo.jpeg?size=large", _ref(None, "image", None,
     "https://example.org/photo.jpeg?size=large", "https://example.org/photo.jpeg?size=large")),
    ("https://example.org/files/report.pdf", _ref(None, "document", None, "https://example.org/files/report.pdf",
     "https://example.org/files/report.pdf")),
    ("https://example.org/files/brief.docx", _ref(None, "document", None, "https://example.org/files/brief.docx",
     "https://example.org/files/brief.docx")),
    ("https://EXAMPLE.org/2019/11/28/story?utm_source=tw", _ref(None, "article", None,
     "https://example.org/2019/11/28/story", "https://example.org/2019/11/28/story")),
    ("https://example.org/.pdf", _ref(None, "article", None, "https://example.org/.pdf",
     "https://example.org/.pdf")),
    ("https://example.org", _ref(None, "unknown", None, "https://example.org/", "https://example.org/")),
]  # fmt: skip


@pytest.mark.parametrize(("url", "expected"), PLATFORMS)
def test_identify(url: str, expected: dict[str, object]) -> None:
    ref = identify(url)
    assert {k: getattr(ref, k) for k in expected} == expected
    assert identity_key(url) == expected["key"]
    # the canonical URL is itself normalised and names the same item
    assert normalise(ref.canonical_url) == ref.canonical_url
    assert identify(ref.canonical_url).key == ref.key


def test_table_is_large() -> None:
    assert len(PLATFORMS) >= 60


def test_platform_ref_is_frozen() -> None:
    ref = identify("https://youtu.be/dQw4w9WgXcQ")
    assert isinstance(ref, PlatformRef)
    with pytest.raises(AttributeError):
        ref.key = "other"  # type: ignore[misc]


def test_identify_refuses_what_normalise_refuses() -> None:
    with pytest.raises(UrlError, match="scheme 'ftp'"):
        identify("ftp://example.org/x")


def test_telegram_helpers() -> None:
    assert telegram_embed_url("https://t.me/s/ExampleChannel/123") == "https://t.me/ExampleChannel/123?embed=1&mode=tme"
    assert telegram_preview_url("https://telegram.me/ExampleChannel/123?single") == (
        "https://t.me/s/ExampleChannel/123"
    )
    with pytest.raises(UrlError, match="not a Telegram post"):
        telegram_embed_url("https://t.me/ExampleChannel")
    with pytest.raises(UrlError, match="not a public Telegram post"):
        telegram_preview_url("https://t.me/c/1234567890/55")
    with pytest.raises(UrlError):
        telegram_embed_url("https://example.org/ExampleChannel/123")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://l.facebook.com/l.php?u=https%3A%2F%2Fexample.org%2Fa%3Fb%3D1&h=AT0", "https://example.org/a?b=1"),
        ("https://lm.facebook.com/l.php?u=https%3A%2F%2Fyoutu.be%2FdQw4w9WgXcQ", "https://youtu.be/dQw4w9WgXcQ"),
        ("https://www.google.com/url?sa=t&url=https%3A%2F%2Fexample.org%2Fr&ved=x", "https://example.org/r"),
        ("https://www.google.com/url?q=https://example.org/q&sa=D", "https://example.org/q"),
        ("https://www.youtube.com/redirect?event=video&q=https%3A%2F%2Fexample.org%2Fv", "https://example.org/v"),
        ("https://href.li/?https://example.org/h", "https://example.org/h"),
        (
            "https://www.facebook.com/plugins/video.php?href=https%3A%2F%2Fwww.facebook.com%2FP%2Fvideos%2F1%2F",
            "https://www.facebook.com/P/videos/1/",
        ),
        # a shim inside a shim
        (
            "https://www.google.com/url?q=https%3A%2F%2Fl.facebook.com%2Fl.php%3Fu%3Dhttps%253A%252F%252Fexample.org",
            "https://example.org/",
        ),
        # not archivable targets and non-shims stay as they are (normalised)
        (
            "https://l.facebook.com/l.php?u=javascript%3Aalert(1)",
            "https://l.facebook.com/l.php?u=javascript%3Aalert(1)",
        ),
        ("https://www.google.com/search?q=https://example.org", "https://www.google.com/search?q=https://example.org"),
        ("https://Example.org/a?utm_source=x", "https://example.org/a"),
    ],
)
def test_unwrap_redirect(url: str, expected: str) -> None:
    assert unwrap_redirect(url) == expected


@pytest.mark.parametrize(
    ("url", "is_share"),
    [
        ("https://www.facebook.com/sharer/sharer.php?u=https://example.org", True),
        ("https://www.facebook.com/sharer.php?u=https://example.org", True),
        ("https://www.facebook.com/dialog/share?app_id=1&href=x", True),
        ("https://twitter.com/intent/tweet?text=a&url=b", True),
        ("https://x.com/intent/post?text=a", True),
        ("https://twitter.com/share?url=https://example.org", True),
        ("https://www.linkedin.com/shareArticle?mini=true&url=x", True),
        ("https://api.whatsapp.com/send?text=x", True),
        ("https://wa.me/?text=x", True),
        ("https://t.me/share/url?url=x", True),
        ("https://telegram.me/share/url?url=x", True),
        ("https://www.reddit.com/submit?url=x", True),
        ("https://pinterest.com/pin/create/button/?url=x", True),
        ("https://www.facebook.com/ExampleMediaCenter/posts/1000000001", False),
        ("https://twitter.com/jack/status/20", False),
        ("https://t.me/ExampleChannel/123", False),
        ("https://twitter.com/sharer_account", False),
        ("mailto:someone@example.org", False),
    ],
)
def test_is_share_intent(url: str, is_share: bool) -> None:
    assert is_share_intent(url) is is_share


def test_oembed_url() -> None:
    assert oembed_url("https://youtu.be/dQw4w9WgXcQ") == (
        "https://www.youtube.com/oembed?format=json&url=https%3A%2F%2Fwww.youtube.com%2Fwatch%3Fv%3DdQw4w9WgXcQ"
    )
    assert oembed_url("https://mobile.twitter.com/jack/status/20") == (
        "https://publish.twitter.com/oembed?url=https%3A%2F%2Fx.com%2Fjack%2Fstatus%2F20"
    )
    assert oembed_url("https://example.org/a") is None
    assert oembed_url("https://www.youtube.com/@ExampleChannel") is None


def test_small_helpers() -> None:
    assert host_of("https://WWW.Example.org:8443/a") == "www.example.org"
    assert host_of("https://[2001:db8::1]/") == "[2001:db8::1]"
    assert same_site("www.example.org", "example.org")
    assert same_site("news.example.org", "example.org")
    assert not same_site("example.org", "notexample.org")
    assert platform_of_host("mbasic.facebook.com") == "facebook"
    assert platform_of_host("notx.com") is None
    assert platform_of_host("x.com") == "x"
    assert kind_of_path("/a/b/Clip.WebM") == "video"
    assert kind_of_path("/a/b/") is None
    assert kind_of_path("/a/.jpg") is None


# Properties -----------------------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        *string.ascii_letters[:6],
        *"/.%-_~:@!$&'()*+,;=?#[] é\u200b\\",
        *("%41", "%2e", "%2E", "%zz", "%7e", "..", "/./", "#!", "&", "=", "status/", "123", "watch?v="),
        *("AAAAAAAAAAA", "utm_x=1", "s=2", "posts/", "إدلب"),
    ]
)
_HOSTS = st.sampled_from(
    [
        *("example.org", "WWW.Example.ORG", "bücher.example", "twitter.com", "x.com", "youtube.com", "youtu.be"),
        *("[::1]", "127.0.0.1:8080", "ex%41mple.com", "a.b.", "t.me", "www.facebook.com", "vimeo.com", "fb.watch"),
    ]
)
URLS = st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}/{rest}",
    st.sampled_from(["http", "HTTPS", "https"]),
    _HOSTS,
    st.lists(_PIECES, max_size=12).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(URLS)
def test_normalise_is_idempotent(url: str) -> None:
    try:
        once = normalise(url)
    except UrlError:
        return
    assert normalise(once) == once
    ref = identify(once)
    assert normalise(ref.canonical_url) == ref.canonical_url
    assert identify(ref.canonical_url).key == ref.key


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_url_error(text: str) -> None:
    try:
        once = normalise(text)
    except UrlError:
        return
    assert normalise(once) == once
    identify(once)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_arbitrary_paths_raise_only_url_error(tail: str) -> None:
    for prefix in ("https://example.org/", "https://", "http://x.com/"):
        try:
            once = normalise(prefix + tail)
        except UrlError:
            continue
        assert normalise(once) == once
