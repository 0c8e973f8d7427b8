"""What is done to a rendered page before it is kept, and how it is kept: the page behaviours.

* **Cookie banners**: one simple rule. A visible button (or link) whose whole accessible name is a consent word
  ("Accept", "Alle akzeptieren", "موافق", ...) is clicked once, in the page or one of its frames; the name
  clicked is recorded. Nothing else on the page is touched.
* **Lazy content**: the page is scrolled one viewport at a time, waiting for the network to go quiet after
  each step, until its end, ``max_scrolls`` steps or the screenshot height bound, then back to the top.
* **Screenshot banner**: the capture time (UTC, from the archive's clock) and the URL are drawn on a strip
  *above* the page's pixels with Pillow, never injected into the page, so the DOM snapshot, the PDF and the
  page's own layout (fixed headers, z-index) are untouched, and the page area of the PNG is exactly what
  Chromium rendered (the strip's height is recorded, so it can be cut off again).
* **PDF**: Chromium's print, with the same time and URL in its header margin (outside the page's content).
"""

from __future__ import annotations

import asyncio
import html
import io
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from archiver.capture.browser_traffic import Interceptor, wait_idle
from archiver.clock import utc_iso

# Whole accessible names of consent buttons, case-insensitive, in the languages of the reports we archive.
CONSENT_WORDS = (
    r"ok|okay|got it|i agree|agree|accept|accept all|accept all cookies|accept cookies|allow all|allow cookies"
    r"|allow all cookies|i accept|yes,? i agree|agree and (close|continue)|accept and (close|continue)"
    r"|accepter|tout accepter|j'accepte|d'accord|accepter et fermer"  # French
    r"|akzeptieren|alle akzeptieren|zustimmen|alle zulassen|einverstanden|ich stimme zu"  # German
    r"|aceptar|aceptar todo|aceptar todas|acepto|de acuerdo"  # Spanish
    r"|accetta|accetta tutto|accetto"  # Italian
    r"|kabul et|tümünü kabul et|kabul ediyorum"  # Turkish
    r"|принять|принять все|согласен|прийняти|прийняти все"  # Russian, Ukrainian
    r"|موافق|قبول|أوافق|اوافق|قبول الكل|قبول الجميع|حسنا|حسنًا|الموافقة"  # Arabic
    r"|پذیرفتن|قبول همه|موافقم"  # Persian
)
CONSENT_NAME = re.compile(rf"^\s*({CONSENT_WORDS})\s*[.!]?\s*$", re.IGNORECASE)
BANNER_HEIGHT = 48
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # fonts-dejavu-core
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",  # fonts-noto-core
)
SCROLL_QUIET = 0.3  # seconds without a request that count as "quiet" after a scroll step
SCROLL_STEP_WAIT = 2.0  # at most this long per scroll step


async def dismiss_cookie_banner(page: Any) -> str | None:
    """Click the first visible consent button in the page or its frames; the name clicked, or None."""
    for frame in page.frames:
        for role in ("button", "link"):
            candidates = frame.get_by_role(role, name=CONSENT_NAME)
            try:
                count = min(await candidates.count(), 5)
                for i in range(count):
                    button = candidates.nth(i)
                    if not await button.is_visible():
                        continue
                    name = (await button.inner_text(timeout=1000)).strip() or role
                    await button.click(timeout=2000)
                    return name
            except Exception:  # noqa: BLE001, S112 - a frame that navigated or detached: try the next one
                continue
    return None


async def scroll_through(page: Any, interceptor: Interceptor, *, max_steps: int, max_height: int) -> dict[str, int]:
    """Scroll down a viewport at a time so lazy images and infinite feeds load; then back to the top."""
    metrics = "() => [window.scrollY, window.innerHeight, document.documentElement.scrollHeight]"
    steps = 0
    _, _, height = await page.evaluate(metrics)
    for steps in range(1, max_steps + 1):  # noqa: B007 - the count of steps taken is reported
        await page.evaluate("() => window.scrollBy(0, window.innerHeight)")
        await asyncio.sleep(0.1)  # let scroll handlers and IntersectionObservers run
        await wait_idle(interceptor, quiet=SCROLL_QUIET, timeout=SCROLL_STEP_WAIT)
        y, view, new_height = await page.evaluate(metrics)
        grew = new_height > height
        height = new_height
        if (y + view >= height and not grew) or height >= max_height:
            break
    await page.evaluate("() => window.scrollTo(0, 0)")
    await wait_idle(interceptor, quiet=SCROLL_QUIET, timeout=SCROLL_STEP_WAIT)
    return {"scroll_steps": steps, "page_height": int(height)}


async def screenshot(page: Any, *, width: int, max_height: int, timeout: float) -> tuple[bytes, int, bool]:
    """Full-page PNG cut at ``max_height``; also the page's height and whether it was cut."""
    height = int(await page.evaluate("() => Math.max(document.documentElement.scrollHeight, window.innerHeight)"))
    shot_height = min(height, max_height)
    png = await page.screenshot(
        full_page=True,
        clip={"x": 0, "y": 0, "width": width, "height": shot_height},
        type="png",
        timeout=timeout * 1000,
    )
    return png, height, height > max_height


def with_banner(png: bytes, *, captured_at: datetime, url: str, note: str) -> bytes:
    """The screenshot below a strip stating when (UTC) and what was captured; the page's pixels unchanged."""
    shot = Image.open(io.BytesIO(png))
    shot.load()
    out = Image.new("RGB", (shot.width, shot.height + BANNER_HEIGHT), (32, 32, 32))
    out.paste(shot.convert("RGB"), (0, BANNER_HEIGHT))
    draw = ImageDraw.Draw(out)
    big, small = _font(16), _font(12)
    line = f"Captured {utc_iso(captured_at)} (UTC)  {url}"
    draw.text((8, 5), _fit(draw, line, big, shot.width - 16), fill=(255, 255, 255), font=big)
    draw.text((8, 28), _fit(draw, note, small, shot.width - 16), fill=(200, 200, 200), font=small)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


async def pdf(page: Any, *, captured_at: datetime, url: str, timeout: float) -> bytes:
    """Chromium's print of the page, with the capture time and URL in the header margin."""
    header = (
        '<div style="font-size:8px;width:100%;padding:0 10px;font-family:sans-serif">'
        f"Captured {html.escape(utc_iso(captured_at))} (UTC) {html.escape(url)}</div>"
    )
    footer = (
        '<div style="font-size:8px;width:100%;text-align:right;padding:0 10px;font-family:sans-serif">'
        '<span class="pageNumber"></span>/<span class="totalPages"></span></div>'
    )
    data: bytes = await asyncio.wait_for(
        page.pdf(
            print_background=True,
            display_header_footer=True,
            header_template=header,
            footer_template=footer,
            margin={"top": "40px", "bottom": "30px", "left": "10px", "right": "10px"},
        ),
        timeout,
    )
    return data
