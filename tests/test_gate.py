"""Host-aware dispatch: a source starts only when its host has a free slot."""

from __future__ import annotations

import threading
import time

import pytest

from archiver.capture.gate import HostGate, HostQueue, WorkerSlots


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


def test_worker_slots_bound_the_threads_that_hold_one() -> None:
    slots = WorkerSlots(2)
    slots.take()
    slots.take()  # a second part of the same capture: still one slot
    assert slots.holding()
    others_in: list[bool] = []
    release = threading.Event()

    def other() -> None:
        slots.take()
        others_in.append(True)
        release.wait(5)
        slots.give_back()

    first, second = threading.Thread(target=other), threading.Thread(target=other)
    first.start()
    second.start()
    time.sleep(0.2)
    assert others_in == [True]  # the third thread waits: two slots, two holders
    slots.give_back()
    slots.give_back()  # nothing held any more: nothing to give
    assert not slots.holding()
    deadline = time.monotonic() + 5
    while len(others_in) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert others_in == [True, True]  # the slot given back went to the waiting thread
    release.set()
    first.join(5)
    second.join(5)
    with pytest.raises(ValueError):
        WorkerSlots(0)
