"""Politeness: at most ``per_host`` requests in flight to one host, started at least ``delay`` seconds apart.

The global limit is the worker pool's size; this gate keeps one slow or small site from being hammered without
making the whole run wait on it (other hosts' requests go on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit


class HostGate:
    def __init__(
        self,
        per_host: int = 2,
        delay: float = 0.25,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_host < 1:
            raise ValueError("per_host must be at least 1")
        self._per_host = per_host
        self._delay = delay
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._next_start: dict[str, float] = {}

    @staticmethod
    def host_of(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.hostname or ''}:{parts.port or ''}"

    @contextmanager
    def slot(self, url: str) -> Iterator[None]:
        host = self.host_of(url)
        with self._lock:
            sem = self._slots.setdefault(host, threading.BoundedSemaphore(self._per_host))
        with sem:
            with self._lock:
                now = self._monotonic()
                start = max(now, self._next_start.get(host, now))
                self._next_start[host] = start + self._delay
            wait = start - now
            if wait > 0:
                self._sleep(wait)
            yield
