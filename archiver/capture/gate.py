"""Politeness: at most ``per_host`` requests in flight to one host, started at least ``delay`` seconds apart.

The global limit is :class:`WorkerSlots`: how many captures have traffic under way at once. This gate keeps one
slow or small site from being hammered without making the whole run wait on it (other hosts' requests go on).
:class:`HostQueue` is the run's side of it: it hands a worker only a source whose host has a free slot, so that
workers do not sleep in :meth:`HostGate.slot` on one busy site while others wait (a report citing one site many
times lists its pages together); the run frees a capture's slot there once its traffic is over.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar
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

    @property
    def per_host(self) -> int:
        return self._per_host

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


class WorkerSlots:
    """At most ``workers`` captures with traffic under way at once (the run's global limit).

    A capture thread takes a slot (:meth:`take`) before its traffic and gives it back (:meth:`give_back`)
    before it writes its records and waits for its transaction: those steps wait on the disk and the
    catalogue's writer, not on a remote site, so another capture's requests go out meanwhile. Taking twice, or
    giving back a slot the thread does not hold, does nothing: a capture with several parts (web, browser,
    media) takes a slot before each part's traffic, and gives it back once whatever happens.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._sem = threading.BoundedSemaphore(workers)
        self._held = threading.local()

    def take(self) -> None:
        if not getattr(self._held, "slot", False):
            self._sem.acquire()
            self._held.slot = True

    def give_back(self) -> None:
        if getattr(self._held, "slot", False):
            self._held.slot = False
            self._sem.release()

    def holding(self) -> bool:
        """Whether the calling thread holds a slot."""
        return bool(getattr(self._held, "slot", False))


T = TypeVar("T")


class HostQueue(Generic[T]):
    """Items waiting to start, handed out only while their host has fewer than ``limit`` started and not done.

    :meth:`take` goes round the hosts that have a free slot, each host's items in the order added; every
    operation is O(1). Not thread-safe: the run's dispatching thread owns it.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._waiting: dict[str, deque[T]] = {}
        self._busy: dict[str, int] = {}
        self._ready: deque[str] = deque()  # hosts with waiting items and a free slot, each at most once
        self._queued: set[str] = set()  # hosts in _ready
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, host: str, item: T) -> None:
        self._waiting.setdefault(host, deque()).append(item)
        self._size += 1
        self._mark(host)

    def take(self) -> tuple[str, T] | None:
        """The next item whose host has a free slot (the slot is now taken), or None if there is none."""
        if not self._ready:
            return None
        host = self._ready.popleft()
        self._queued.discard(host)
        items = self._waiting[host]
        item = items.popleft()
        if not items:
            del self._waiting[host]
        self._size -= 1
        self._busy[host] = self._busy.get(host, 0) + 1
        self._mark(host)  # back at the end of the round if it can take more
        return host, item

    def done(self, host: str) -> None:
        """An item taken for ``host`` has finished: its slot is free again."""
        left = self._busy[host] - 1
        if left:
            self._busy[host] = left
        else:
            del self._busy[host]
        self._mark(host)

    def clear(self) -> None:
        """Forget every waiting item (taken ones still count until :meth:`done`)."""
        self._waiting.clear()
        self._ready.clear()
        self._queued.clear()
        self._size = 0

    def _mark(self, host: str) -> None:
        if host not in self._queued and host in self._waiting and self._busy.get(host, 0) < self._limit:
            self._ready.append(host)
            self._queued.add(host)
