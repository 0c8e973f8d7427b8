"""The ``[browser]`` section of settings.toml: whether, for which sources and within which bounds pages are
rendered in headless Chromium (see docs/browser.md).

A source gets a browser capture when its kind is in ``kinds`` or its URL belongs to a social-media platform
listed in ``platforms`` (``"*"``: every platform :func:`archiver.urls.identify` knows). ``archiver run
--browser`` renders every source of that run, ``--no-browser`` none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from archiver.errors import ConfigError

SETTINGS_TOML = """\
[browser]
# Render pages in Debian's Chromium (apt install chromium): full-page screenshot with a capture-time banner, PDF,
# rendered DOM, and every request the browser made as WARC request/response pairs. See docs/browser.md.
enabled = true
executable = "/usr/bin/chromium"
# Which sources: these kinds, and URLs of these social-media platforms ("*" = every known platform).
kinds = ["report"]
platforms = ["*"]
# Seconds: loading the page (its load event), waiting for the network to go quiet, the whole capture.
page_timeout = 30.0
idle_timeout = 10.0
capture_timeout = 180.0
# Scroll steps that load lazy content; screenshot height in pixels (taller pages are cut, and say so).
max_scrolls = 20
max_screenshot_height = 16000
viewport_width = 1280
viewport_height = 900
# Bytes per response the browser receives (stored with WARC-Truncated: length beyond). Audio and video that
# pages play are not downloaded by the browser (0); the media capture (yt-dlp) stores them.
max_body = 52428800
media_max_body = 0
# Renderer JavaScript heap bound in MB: a page that allocates without end crashes its renderer, not the machine.
js_heap_mb = 1024
# Pages rendered at once.
max_pages = 2
# user_agent = "..."   # default: Chromium's own
"""


@dataclass(frozen=True)
class BrowserSettings:
    enabled: bool = True
    executable: str = "/usr/bin/chromium"
    kinds: tuple[str, ...] = ("report",)
    platforms: tuple[str, ...] = ("*",)
    page_timeout: float = 30.0
    idle_timeout: float = 10.0
    capture_timeout: float = 180.0
    max_scrolls: int = 20
    max_screenshot_height: int = 16000
    viewport_width: int = 1280
    viewport_height: int = 900
    max_body: int = 50 << 20
    media_max_body: int = 0
    js_heap_mb: int = 1024
    max_pages: int = 2
    user_agent: str | None = None

    def wants(self, kind: str | None, platform: str | None) -> bool:
        """Whether settings ask for a browser capture of a source of this kind on this platform."""
        if kind is not None and kind in self.kinds:
            return True
        return platform is not None and ("*" in self.platforms or platform in self.platforms)

    def public_dict(self) -> dict[str, str]:
        return {f"browser_{f.name}": str(getattr(self, f.name)) for f in fields(self) if f.name != "user_agent"}


_TYPES: dict[str, type] = {
    "enabled": bool,
    "executable": str,
    "kinds": list,
    "platforms": list,
    "page_timeout": float,
    "idle_timeout": float,
    "capture_timeout": float,
    "max_scrolls": int,
    "max_screenshot_height": int,
    "viewport_width": int,
    "viewport_height": int,
    "max_body": int,
    "media_max_body": int,
    "js_heap_mb": int,
    "max_pages": int,
    "user_agent": str,
}
_POSITIVE = {"page_timeout", "idle_timeout", "capture_timeout", "max_screenshot_height", "viewport_width"}
_POSITIVE |= {"viewport_height", "max_body", "js_heap_mb", "max_pages"}


def browser_settings(section: Mapping[str, Any], path: Path) -> BrowserSettings:
    """Validate the ``[browser]`` table; an error names the file, the key and what is wrong."""
    values: dict[str, Any] = {}
    for key, value in section.items():
        expected = _TYPES.get(key)
        if expected is None:
            raise ConfigError(f"{path}: [browser] {key}: unknown setting")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (expected is not bool and isinstance(value, bool)) or not isinstance(value, expected):
            raise ConfigError(f"{path}: [browser] {key}: expected {expected.__name__}, got {value!r}")
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: [browser] {key}: expected a list of strings")
            value = tuple(value)
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (value < 0 or (key in _POSITIVE and value == 0))
        ):
            raise ConfigError(f"{path}: [browser] {key}: must be {'positive' if key in _POSITIVE else '>= 0'}")
        values[key] = value
    return BrowserSettings(**values)
