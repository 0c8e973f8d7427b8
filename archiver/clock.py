"""One clock and one id generator, injectable so that tests can fix them.

Nothing else in the package calls ``datetime.now()`` or ``uuid.uuid4()`` directly: output that depends on
time or ids must compare byte for byte with golden files when the clock is fixed.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FixedClock:
    """A clock that starts at ``start`` and advances ``step`` on every reading (deterministic tests)."""

    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    step: timedelta = timedelta(microseconds=1)
    _n: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def now(self) -> datetime:
        return self.start + self.step * next(self._n)


class IdGenerator(Protocol):
    def uuid(self) -> uuid.UUID: ...

    def for_process(self, n: int) -> IdGenerator:
        """The generator for capture process ``n`` (1, 2, ...) forked from this one: its ids never meet ours."""
        ...


class RandomIds:
    def uuid(self) -> uuid.UUID:
        return uuid.uuid4()  # os.urandom: a forked process draws its own

    def for_process(self, n: int) -> IdGenerator:
        return self


@dataclass
class SequentialIds:
    """Deterministic UUIDs for golden-file tests."""

    _n: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=next(self._n))

    def for_process(self, n: int) -> IdGenerator:
        """A copy forked with the process would repeat this one's ids: each process counts in its own range."""
        return SequentialIds(itertools.count((n << 96) + 1))


def utc_iso(dt: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z`` suffix: ``2017-04-04T03:30:00.000000Z``."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: every time in the archiver is timezone-aware")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def warc_date(dt: datetime) -> str:
    """WARC-Date: WARC 1.1 §5.4 allows fractional seconds; we keep microseconds."""
    return utc_iso(dt)


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
