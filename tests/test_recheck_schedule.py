"""The re-check schedule: phrases in settings.toml, slot arithmetic, and the errors a bad phrase gets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from archiver.config import load_settings
from archiver.errors import ConfigError
from archiver.recheck_schedule import Schedule, parse_duration
from tests.conftest import TEST_NOW

DAY = timedelta(days=1)


def test_daily_for_a_week_then_weekly() -> None:
    schedule = Schedule.parse("daily for 7 days, then weekly")
    slots = schedule.slots(TEST_NOW, limit=10)
    assert [(s - TEST_NOW) / DAY for s in slots] == [1, 2, 3, 4, 5, 6, 7, 14, 21, 28]
    assert schedule.describe() == "every 1 day for 1 week, then every 1 week"


def test_a_missed_slot_is_not_made_up() -> None:
    schedule = Schedule.parse("daily for 7 days, then weekly")
    # The archiver was down from day 2 to day 10: the next slot is day 14, not days 3..7 in a burst.
    assert schedule.next_after(TEST_NOW, TEST_NOW + 10 * DAY) == TEST_NOW + 14 * DAY
    # Exactly on a slot: the next one.
    assert schedule.next_after(TEST_NOW, TEST_NOW + 7 * DAY) == TEST_NOW + 14 * DAY
    # Years later, still one step of arithmetic.
    assert schedule.next_after(TEST_NOW, TEST_NOW + 3650 * DAY) == TEST_NOW + 3654 * DAY


def test_phases_and_an_ending_schedule() -> None:
    schedule = Schedule.parse(["every 6 hours for 1 day", "daily for 2 days"])
    hours = [(s - TEST_NOW) / timedelta(hours=1) for s in schedule.slots(TEST_NOW)]
    assert hours == [6, 12, 18, 24, 48, 72]
    assert schedule.next_after(TEST_NOW, TEST_NOW + 72 * timedelta(hours=1)) is None
    assert Schedule.parse("never").never and Schedule.parse("never").next_after(TEST_NOW, TEST_NOW) is None
    assert [(s - TEST_NOW) / DAY for s in Schedule.parse("monthly").slots(TEST_NOW, limit=2)] == [30, 60]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("daily, then weekly", "runs for ever"),
        ("every 2 minutes", "at most every 5 minutes"),
        ("weekly for 2 days", "shorter than one interval"),
        ("daily for a fortnight", "not a duration"),
        ("sometimes", "not a duration"),
        ("every 0 days", "must be positive"),
    ],
)
def test_bad_phrases_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Schedule.parse(text)


def test_settings_file_section(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    (root / "settings.toml").write_text(
        '[recheck]\nschedule = "every 12 hours for 2 days, then daily for 2 weeks, then weekly"\n'
        'gone = "never"\nreport_errors_after = 5\n'
    )
    settings = load_settings(root, None, env={})
    assert [(s - TEST_NOW) / DAY for s in settings.recheck.schedule.slots(TEST_NOW, limit=6)] == [
        0.5,
        1,
        1.5,
        2,
        3,
        4,
    ]
    assert settings.recheck.gone.never and settings.recheck.report_errors_after == 5
    assert settings.recheck.max_per_run == 500  # default
    (root / "settings.toml").write_text('[recheck]\nschedule = "daily for ever"\n')
    with pytest.raises(ConfigError, match=r"\[recheck\] schedule: 'ever' is not a duration"):
        load_settings(root, None, env={})
    (root / "settings.toml").write_text("[recheck]\nevery = 3\n")
    with pytest.raises(ConfigError, match=r"\[recheck\] every: unknown setting"):
        load_settings(root, None, env={})
    (root / "settings.toml").write_text("[recheck]\nmax_per_run = 0\n")
    with pytest.raises(ConfigError, match="positive integer"):
        load_settings(root, None, env={})


def test_default_settings_file_parses(tmp_path: Path) -> None:
    from archiver.config import DEFAULT_SETTINGS_TOML

    root = tmp_path / "storage"
    root.mkdir()
    (root / "settings.toml").write_text(DEFAULT_SETTINGS_TOML)
    settings = load_settings(root, None, env={})
    assert settings.recheck.schedule.text == "daily for 7 days, then weekly"


@given(
    every=hs.integers(min_value=1, max_value=48),
    span=hs.integers(min_value=1, max_value=20),
    tail=hs.integers(min_value=1, max_value=30),
    after=hs.integers(min_value=-100, max_value=5000),
)
def test_next_slot_is_the_first_listed_slot_after(every: int, span: int, tail: int, after: int) -> None:
    """The arithmetic agrees with walking the slots one by one."""
    schedule = Schedule.parse(f"every {every} hours for {every * span} hours, then every {tail} days")
    moment = TEST_NOW + timedelta(hours=after)
    # Walk: every slot of the first phase, then the tail's, by plain addition.
    first = [TEST_NOW + timedelta(hours=every * k) for k in range(1, span + 1)]
    tails = (first[-1] + timedelta(days=tail * k) for k in range(1, 10_000))
    walked = None
    for s in first:
        if s > moment:
            walked = s
            break
    else:
        walked = next(s for s in tails if s > moment)
    assert schedule.next_after(TEST_NOW, moment) == walked


def test_durations() -> None:
    assert parse_duration("2w") == 14 * DAY
    assert parse_duration("an hour") == timedelta(hours=1)
    assert parse_duration("1 month") == 30 * DAY
