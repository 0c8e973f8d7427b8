"""Host-aware dispatch: a source starts only when its host has a free slot."""

from __future__ import annotations

import pytest

from archiver.capture.gate import HostGate, HostQueue


def test_take_goes_round_the_hosts_with_free_slots() -> None:
    q: HostQueue[int] = HostQueue(2)
    for i in range(5):
        q.add("a", i)  # one site cited many times, listed together
    q.add("b", 10)
    q.add("c", 20)
    taken = [q.take() for _ in range(5)]
    assert taken == [("a", 0), ("b", 10), ("c", 20), ("a", 1), None]  # "a" is at its limit of 2
    assert len(q) == 3
    q.done("b")
    assert q.take() is None  # a free slot on "b" starts nothing: "b" has nothing waiting
    q.done("a")
    assert q.take() == ("a", 2)
    assert q.take() is None


def test_done_frees_a_slot_and_clear_forgets_waiting_items() -> None:
    q: HostQueue[str] = HostQueue(1)
    q.add("h", "x")
    q.add("h", "y")
    assert q.take() == ("h", "x")
    assert q.take() is None
    q.done("h")
    assert q.take() == ("h", "y")
    q.add("h", "z")
    q.clear()
    assert len(q) == 0 and q.take() is None
    q.done("h")
    q.add("h", "w")
    assert q.take() == ("h", "w")


def test_limit_is_checked_and_host_matches_the_gate() -> None:
    with pytest.raises(ValueError):
        HostQueue(0)
    assert HostGate(3, 0.0).per_host == 3
    assert HostGate.host_of("http://127.0.0.2:8080/p/1.html") == "127.0.0.2:8080"
