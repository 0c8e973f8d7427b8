"""When a captured source is looked at again: the re-check schedule, written the way people say it.

A schedule is a list of phases, each "every X for Y"; the last may run for ever::

    daily for 7 days, then weekly
    every 6 hours for 2 days, then daily for 2 weeks, then weekly for 6 months, then monthly
    never

Slots are counted from an anchor (the source's last capture, or the time it went offline): ``daily for 7 days,
then weekly`` gives anchor + 1 d, + 2 d, ... + 7 d, then + 14 d, + 21 d and so on. The next check is the first slot
after the last one: a slot missed while the archiver was not running is not made up (no burst of checks after an
outage), the next slot is used. A schedule whose last phase has a "for" ends; the source is then not re-checked.

``monthly`` is 30 days and ``month`` in a duration is 30 days: a fixed length, so that slots never depend on the
calendar or a time zone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from archiver.errors import ConfigError

_UNITS = {
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 7 * 86400,
    "week": 7 * 86400,
    "weeks": 7 * 86400,
    "month": 30 * 86400,
    "months": 30 * 86400,
}
_WORDS = {"hourly": "1 hour", "daily": "1 day", "weekly": "1 week", "monthly": "1 month"}
_DURATION = re.compile(r"^(?:(\d+)|an?|one)\s*([a-z]+)$")
_PHASE = re.compile(r"^(?:every\s+)?(.+?)(?:\s+for\s+(.+))?$")
MIN_INTERVAL = timedelta(minutes=5)  # a re-check is a fetch: anything tighter is a crawler, not a schedule


def parse_duration(text: str) -> timedelta:
    """``7 days``, ``2w``, ``an hour``, ``1 month`` (30 days)."""
    match = _DURATION.match(text.strip().lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"{text.strip()!r} is not a duration (say e.g. '7 days', '12 hours', '2 weeks', '1 month')")
    count = int(match.group(1)) if match.group(1) else 1
    if count <= 0:
        raise ValueError(f"{text.strip()!r}: a duration must be positive")
    return timedelta(seconds=count * _UNITS[match.group(2)])


@dataclass(frozen=True)
class Phase:
    every: timedelta
    span: timedelta | None  # None: for ever (only the last phase)

    def describe(self) -> str:
        every = _describe(self.every)
        return f"every {every}" + (f" for {_describe(self.span)}" if self.span is not None else "")


def _describe(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for name, size in (("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {name}" + ("s" if n != 1 else "")
    return f"{seconds} seconds"


@dataclass(frozen=True)
class Schedule:
    """Phases in order; empty means never."""

    phases: tuple[Phase, ...]
    text: str

    @classmethod
    def parse(cls, value: str | list[str] | tuple[str, ...]) -> Schedule:
        """A phrase (``"daily for 7 days, then weekly"``) or a list of phases (``["daily for 7 days", "weekly"]``)."""
        if isinstance(value, str):
            parts = [p for p in re.split(r",|;|\bthen\b", value.strip().lower()) if p.strip()]
            text = value.strip()
        else:
            parts = [str(p).strip().lower() for p in value]
            text = ", then ".join(str(p).strip() for p in value)
        parts = [p.strip() for p in parts]
        if parts in ([], ["never"], ["off"]):
            return cls((), "never")
        phases: list[Phase] = []
        for i, part in enumerate(parts):
            match = _PHASE.match(part)
            if match is None:
                raise ValueError(f"{part!r} is not a phase (say e.g. 'daily for 7 days' or 'every 6 hours')")
            every_text, span_text = match.group(1), match.group(2)
            every = parse_duration(_WORDS.get(every_text.strip(), every_text))
            span = parse_duration(span_text) if span_text else None
            if every < MIN_INTERVAL:
                raise ValueError(f"{part!r}: re-checks at most every {_describe(MIN_INTERVAL)}")
            if span is None and i != len(parts) - 1:
                raise ValueError(f"{part!r} runs for ever, so the phases after it would never start (add 'for ...')")
            if span is not None and span < every:
                raise ValueError(f"{part!r}: the phase is shorter than one interval")
            phases.append(Phase(every, span))
        return cls(tuple(phases), text)

    @property
    def never(self) -> bool:
        return not self.phases

    def describe(self) -> str:
        return ", then ".join(p.describe() for p in self.phases) if self.phases else "never"

    def slots(self, anchor: datetime, limit: int = 1000) -> list[datetime]:
        """The first ``limit`` slots (for documentation and tests)."""
        out: list[datetime] = []
        after = anchor
        while len(out) < limit:
            nxt = self.next_after(anchor, after)
            if nxt is None:
                break
            out.append(nxt)
            after = nxt
        return out

    def next_after(self, anchor: datetime, after: datetime) -> datetime | None:
        """The first slot strictly later than ``after``; None when the schedule has ended by then."""
        start = anchor
        for phase in self.phases:
            end = None if phase.span is None else start + phase.span
            # Slots of this phase: start + k * every for k >= 1 while <= end. Arithmetic, not a walk: an hourly
            # schedule years after its anchor costs the same as on its first day.
            k = 1 if after < start + phase.every else (after - start) // phase.every + 1
            slot = start + phase.every * k
            if end is None or slot <= end:
                return slot
            # The phase ends on its last whole slot; the next phase counts from there.
            assert phase.span is not None
            start = start + phase.every * (phase.span // phase.every)
        return None


DEFAULT_SCHEDULE = Schedule.parse("daily for 7 days, then weekly")
DEFAULT_GONE = Schedule.parse("monthly")


@dataclass(frozen=True)
class RecheckSettings:
    """``[recheck]`` in settings.toml."""

    schedule: Schedule = DEFAULT_SCHEDULE
    gone: Schedule = DEFAULT_GONE  # gone sources: a slow "has it come back?" check
    report_errors_after: int = 3  # consecutive failed checks after which a source is listed as failing
    max_per_run: int = 500  # re-checks one run starts at most; the rest stay due


def recheck_settings(section: Mapping[str, Any], path: Path) -> RecheckSettings:
    """Read and check ``[recheck]``; errors name the file and the setting."""
    known = {"schedule", "gone", "report_errors_after", "max_per_run"}
    for key in section:
        if key not in known:
            raise ConfigError(f"{path}: [recheck] {key}: unknown setting", hint="known: " + ", ".join(sorted(known)))
    values: dict[str, Any] = {}
    for key in ("schedule", "gone"):
        if key not in section:
            continue
        raw = section[key]
        if not isinstance(raw, str) and not (isinstance(raw, list) and all(isinstance(p, str) for p in raw)):
            raise ConfigError(f"{path}: [recheck] {key}: expected a phrase or a list of phrases, got {raw!r}")
        try:
            values[key] = Schedule.parse(raw)
        except ValueError as exc:
            raise ConfigError(
                f"{path}: [recheck] {key}: {exc}", hint='e.g. schedule = "daily for 7 days, then weekly"'
            ) from exc
    for key in ("report_errors_after", "max_per_run"):
        if key in section:
            raw = section[key]
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
                raise ConfigError(f"{path}: [recheck] {key}: expected a positive integer, got {raw!r}")
            values[key] = raw
    return RecheckSettings(**values)
