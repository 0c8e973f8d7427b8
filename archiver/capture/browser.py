"""Browser capture: a page rendered in Debian's headless Chromium, kept as a person saw it.

Chromium is driven by Playwright (``executable_path``: the project never downloads a browser of its own). Each
Chromium process renders one page at a time, in a fresh browser context; up to ``max_pages`` processes run at
once and are reused. Interception is browser-wide (the DevTools Fetch domain on the browser target), so requests
of cross-site frames, workers and popups are paused too and nothing but the recorder reaches the network
(:mod:`archiver.capture.browser_traffic`); the launch flags add a proxy that refuses everything, so whatever
escaped interception fails instead of leaving unrecorded from the collector's address.

Playwright's API is not thread-safe, and the capture run calls from a pool of threads: one thread here owns
an asyncio loop with the Playwright driver; :meth:`BrowserCapturer.capture` submits to it and waits.

No Chromium outlives the archiver: Chromium runs under Playwright's driver, which closes it when its pipe to
this process closes, so also after ``kill -9`` (tests/test_browser_kill.py shows it); :meth:`close` closes it
on a normal end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from importlib.metadata import version as dist_version
from typing import TYPE_CHECKING, Any

from archiver.capture import probes
from archiver.capture.browser_records import Rendered, RoledSpec, local_specs, traffic_specs
from archiver.capture.browser_settings import BrowserSettings
from archiver.capture.fetch import Fetcher, FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.httpwire import one_line
from archiver.capture.probes import chromium_version
from archiver.clock import Clock, IdGenerator

if TYPE_CHECKING:  # the page behaviours (Pillow) and the interceptor load with the first render
    from archiver.capture.browser_traffic import Interceptor

DEAD_PROXY = "127.0.0.1:1"  # nothing listens on tcpmux: an unintercepted request fails at once
IDLE_QUIET = 0.5  # seconds without requests that count as network idle (Playwright's networkidle uses 500 ms)
LAUNCH_TIMEOUT = 60.0
FETCH_MARGIN = 5.0  # seconds a browser request may outlast the page's load bound


def launch_flags(settings: BrowserSettings) -> list[str]:
    """The switches added to Playwright's own (the exact command line is recorded after launch)."""
    return [
        f"--proxy-server={DEAD_PROXY}",
        "--proxy-bypass-list=<-loopback>",  # loopback through the refusing proxy too (Chromium bypasses it by default)
        "--autoplay-policy=user-gesture-required",  # nothing plays, so nothing streams, by itself
        f"--js-flags=--max-old-space-size={settings.js_heap_mb}",  # a runaway page crashes its renderer only
    ]


@dataclass(eq=False)
class BrowserCapture:
    """One browser capture's outcome and records (to be written as one group). Close it when written."""

    outcome: str  # ok | failed
    error: str | None
    http_status: int | None
    final_url: str | None
    specs: list[RoledSpec]
    details: dict[str, Any]
    tools: dict[str, str]
    _rendered: Rendered | None = field(default=None, repr=False)

    def close(self) -> None:
        for _, _, spec in self.specs:
            spec.block.close()
        if self._rendered is not None:
            self._rendered.close()


@dataclass
class _Slot:
    browser: Any
    cdp: Any
    current: Interceptor | None = None


class BrowserCapturer:
    def __init__(
        self,
        settings: BrowserSettings,
        fetch_settings: FetchSettings,
        gate: HostGate,
        clock: Clock,
        ids: IdGenerator,
        *,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        # Redirects go back to the browser (it follows them; each hop is paused and recorded). One fetch is
        # bounded a little beyond the page's own bound, so that a request that hangs makes the page fail to
        # settle (the page's timeout decides), and waiting for it to be recorded stays bounded. A response is
        # capped at what the browser is handed.
        fetch_bound = settings.page_timeout + FETCH_MARGIN
        self.fetch_settings = replace(
            fetch_settings,
            max_redirects=0,
            retries=min(fetch_settings.retries, 1),
            total_timeout=min(fetch_settings.total_timeout, fetch_bound),
            read_timeout=min(fetch_settings.read_timeout, fetch_bound),
            max_body=min(fetch_settings.max_body, settings.max_body),
        )
        self.gate = gate
        self.clock = clock
        self._warn = warn or (lambda _msg: None)
        self._warned = False
        self._fetcher = Fetcher(self.fetch_settings, clock, ids)
        self._media_fetcher = (
            Fetcher(replace(self.fetch_settings, max_body=settings.media_max_body), clock, ids)
            if settings.media_max_body > 0
            else None
        )
        self._executor = ThreadPoolExecutor(max(4, 4 * settings.max_pages), thread_name_prefix="browser-fetch")
        self.flags = launch_flags(settings)
        self.problem = self._find_problem()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pw: Any = None
        self._idle: asyncio.Queue[_Slot] | None = None
        self._slots: list[_Slot] = []
        self._tools: dict[str, str] = {}
        self._background: set[asyncio.Future[None]] = set()

    # -- which sources, and whether we can --------------------------------------------------------------------

    def _find_problem(self) -> str | None:
        exe = self.settings.executable
        if probes.find_executable(exe) is None:
            return (
                f"browser capture skipped: Chromium not found at {exe} "
                "(apt install chromium, or set [browser] executable); web capture goes on"
            )
        return None

    def wanted(self, kind: str | None, platform: str | None, override: bool | None) -> bool:
        """Whether this source gets a browser capture; warns once (and says no) when Chromium is missing."""
        want = override if override is not None else self.settings.wants(kind, platform)
        if want and self.problem is not None:
            with self._lock:
                if not self._warned:
                    self._warned = True
                    self._warn(self.problem)
            return False
        return want

    def warcinfo(self) -> dict[str, str]:
        """Fields for the warcinfo record: the browser's version (``--version``) and the flags we add."""
        if self.problem is not None:
            return {}
        return {"browser": chromium_version(self.settings.executable), "browser-flags": " ".join(self.flags)}

    # -- the loop thread ----------------------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="browser-loop", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def capture(self, url: str, new_id: Callable[[], str]) -> BrowserCapture:
        """Render ``url`` and return its records. Never raises for page or browser trouble: a failure is data."""
        loop = self._ensure_loop()
        rendered = Rendered(url)
        future = asyncio.run_coroutine_threadsafe(self._capture(url, rendered), loop)
        try:
            future.result(timeout=self.settings.capture_timeout + LAUNCH_TIMEOUT + self.fetch_settings.total_timeout)
        except FutureTimeout:
            future.cancel()
            rendered.error = rendered.error or f"browser capture took longer than {self.settings.capture_timeout} s"
        except Exception as exc:  # noqa: BLE001 - anything the driver raised is this capture's failure
            rendered.error = rendered.error or one_line(f"browser capture failed: {exc}")
        return self._result(rendered, new_id)

    def _result(self, rendered: Rendered, new_id: Callable[[], str]) -> BrowserCapture:
        from archiver.capture import browser_page as behave

        traffic, page_id = traffic_specs(rendered, new_id)
        error = rendered.error
        if error is None and (rendered.http_status or 0) >= 400:
            error = f"HTTP {rendered.http_status}"
        details = {**rendered.details, "requests": len(rendered.fetched), "error": error}
        rendered.details = details
        specs = traffic + local_specs(rendered, page_id, new_id, behave.BANNER_HEIGHT)
        return BrowserCapture(
            outcome="ok" if error is None else "failed",
            error=error,
            http_status=rendered.http_status,
            final_url=rendered.page_url,
            specs=specs,
            details=details,
            tools=dict(self._tools),
            _rendered=rendered,
        )

    # -- browsers (in the loop thread) ---------------------------------------------------------------------------

    async def _slot(self) -> _Slot:
        if self._idle is None:
            self._idle = asyncio.Queue()
        if self._idle.empty() and len(self._slots) < self.settings.max_pages:
            slot = await self._launch()
            self._slots.append(slot)
            return slot
        return await self._idle.get()

    async def _launch(self) -> _Slot:
        if self._pw is None:
            from playwright.async_api import async_playwright

            self._pw = await async_playwright().start()
        browser = await self._pw.chromium.launch(
            executable_path=self.settings.executable,
            headless=True,
            args=self.flags,
            # Chromium's popup blocker stays on (Playwright turns it off by default).
            ignore_default_args=["--disable-popup-blocking"],
            # Chromium refuses its sandbox as root; elsewhere a hostile page stays sandboxed.
            chromium_sandbox=os.geteuid() != 0,
            timeout=LAUNCH_TIMEOUT * 1000,
        )
        if not self._tools:
            self._tools = {
                "chromium": browser.version,
                "playwright": dist_version("playwright"),
                "chromium-command-line": await _command_line(browser),
            }
        cdp = await browser.new_browser_cdp_session()
        slot = _Slot(browser, cdp)

        def paused(event: dict[str, Any]) -> None:
            if slot.current is not None:
                slot.current.on_paused(event)
            else:  # between captures: a late request of a closed page
                self._spawn(cdp.send("Fetch.failRequest", {"requestId": event["requestId"], "errorReason": "Aborted"}))

        cdp.on("Fetch.requestPaused", paused)
        await cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})
        return slot

    def _spawn(self, awaitable: Any) -> None:
        """Run in the background, errors ignored (closing what may already be gone), keeping a reference."""
        task = asyncio.ensure_future(_quietly(awaitable))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _release(self, slot: _Slot, healthy: bool) -> None:
        assert self._idle is not None
        slot.current = None
        if healthy and slot.browser.is_connected():
            self._idle.put_nowait(slot)
            return
        self._slots.remove(slot)
        self._spawn(slot.browser.close())

    async def _capture(self, url: str, rendered: Rendered) -> None:
        try:
            slot = await asyncio.wait_for(self._slot(), LAUNCH_TIMEOUT + self.settings.capture_timeout)
        except Exception as exc:  # noqa: BLE001 - Chromium would not start: this capture fails, the run goes on
            rendered.error = one_line(f"Chromium did not start: {exc}")
            return
        from archiver.capture.browser_traffic import Interceptor

        interceptor = Interceptor(slot.cdp, self._fetcher, self._media_fetcher, self.gate, self._executor)
        slot.current = interceptor
        healthy = False
        try:
            async with asyncio.timeout(self.settings.capture_timeout):
                await self._render(slot, url, interceptor, rendered)
            healthy = True
        except TimeoutError:
            rendered.error = rendered.error or f"browser capture took longer than {self.settings.capture_timeout} s"
        except Exception as exc:  # noqa: BLE001 - a crash of the page or browser is this capture's failure
            rendered.error = rendered.error or _describe(exc, slot)
        finally:
            await interceptor.drain(self.fetch_settings.total_timeout + 5)
            rendered.fetched = list(interceptor.fetched)
            rendered.details.update(interceptor.summary())
            self._release(slot, healthy and slot.browser.is_connected())

    async def _render(self, slot: _Slot, url: str, interceptor: Interceptor, rendered: Rendered) -> None:
        from archiver.capture import browser_page as behave
        from archiver.capture.browser_traffic import wait_idle

        s = self.settings
        context = await slot.browser.new_context(
            viewport={"width": s.viewport_width, "height": s.viewport_height},
            service_workers="block",  # a service worker would answer from its own cache, unseen
            accept_downloads=False,
            user_agent=s.user_agent,
        )
        details = rendered.details
        details["windows_closed"] = 0
        crashed: list[bool] = []
        steps: dict[str, float] = {}  # seconds each step took, for operators tuning the bounds
        details["seconds"] = steps
        started = [time.monotonic()]

        def mark(step: str) -> None:
            now = time.monotonic()
            steps[step] = round(now - started[0], 3)
            started[0] = now

        try:
            page = await context.new_page()

            def popup(p: Any) -> None:
                details["windows_closed"] += 1
                self._spawn(p.close())

            context.on("page", popup)
            page.on("crash", lambda _p: crashed.append(True))
            session = await context.new_cdp_session(page)
            rendered.main_frame = (await session.send("Page.getFrameTree"))["frameTree"]["frame"]["id"]
            try:
                response = await page.goto(url, wait_until="load", timeout=s.page_timeout * 1000)
            except Exception as exc:
                if crashed:
                    raise
                if "Timeout" in type(exc).__name__:
                    rendered.error = f"page did not finish loading within {s.page_timeout:g} s"
                    return
                raise
            mark("load")
            rendered.page_url = page.url
            rendered.http_status = response.status if response is not None else None
            details["network_idle"] = await wait_idle(interceptor, quiet=IDLE_QUIET, timeout=s.idle_timeout)
            mark("idle")
            details["cookie_banner_clicked"] = await behave.dismiss_cookie_banner(page)
            if details["cookie_banner_clicked"] is not None:
                await wait_idle(interceptor, quiet=IDLE_QUIET, timeout=s.idle_timeout)
                with contextlib.suppress(Exception):
                    await page.wait_for_load_state("load", timeout=s.page_timeout * 1000)
            mark("cookie_banner")
            details.update(
                await behave.scroll_through(
                    page, interceptor, max_steps=s.max_scrolls, max_height=s.max_screenshot_height
                )
            )
            await wait_idle(interceptor, quiet=IDLE_QUIET, timeout=s.idle_timeout)
            mark("scroll")
            rendered.page_url = page.url
            rendered.dom = await page.content()
            rendered.captured_at = self.clock.now()
            png, height, cut = await behave.screenshot(
                page, width=s.viewport_width, max_height=s.max_screenshot_height, timeout=s.page_timeout
            )
            details.update({"page_height": height, "screenshot_cut": cut})
            note = f"Rendered by Chromium {self._tools.get('chromium', '')}; this strip is not part of the page"
            rendered.screenshot = behave.with_banner(png, captured_at=rendered.captured_at, url=page.url, note=note)
            mark("screenshot")
            rendered.pdf = await behave.pdf(
                page, captured_at=rendered.captured_at, url=page.url, timeout=s.page_timeout
            )
            mark("pdf")
        except Exception:
            if crashed:
                rendered.error = "the page crashed the browser's renderer"
                return
            raise
        finally:
            details.update({"browser": dict(self._tools), "viewport": [s.viewport_width, s.viewport_height]})
            await _quietly(asyncio.wait_for(context.close(), 10))

    # -- shutting down --------------------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        for slot in list(self._slots):
            await _quietly(asyncio.wait_for(slot.browser.close(), 10))
        self._slots.clear()
        if self._pw is not None:
            await _quietly(asyncio.wait_for(self._pw.stop(), 10))
            self._pw = None

    def close(self) -> None:
        """Close every Chromium and the driver; idempotent."""
        with self._lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=10)
            loop.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._fetcher.close()
        if self._media_fetcher is not None:
            self._media_fetcher.close()


async def _quietly(awaitable: Any) -> None:
    with contextlib.suppress(Exception):
        await awaitable


async def _command_line(browser: Any) -> str:
    """The exact command line Chromium was started with, as it reports it (chrome://version)."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto("chrome://version", timeout=10000)
        return one_line(await page.inner_text("#command_line", timeout=10000))
    except Exception:  # noqa: BLE001 - recorded as unknown rather than failing every capture
        return "unknown"
    finally:
        await _quietly(context.close())


def _describe(exc: BaseException, slot: _Slot) -> str:
    if not slot.browser.is_connected():
        return "the browser process ended during the capture"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return one_line(f"browser capture failed: {first}")
