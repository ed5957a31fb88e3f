"""The scheduler: capabilities, slots and pins always hold; priorities order the rest."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from control.scheduler import (
    Assignment,
    ReadyPhase,
    WorkerState,
    assign,
    assign_first_free,
    can_run,
    unrunnable,
)

LABELS = ("linux", "docker", "gpu", "windows-files")


def worker(
    name: str, caps: str = "linux", free: int = 1, holds: tuple[str, ...] = ()
) -> WorkerState:
    return WorkerState(name, frozenset(caps.split()), free, frozenset(holds))


def phase(pid: str, priority: float = 10, requires: str = "", **kw: object) -> ReadyPhase:
    return ReadyPhase(pid, frozenset(requires.split()), priority=priority, **kw)  # type: ignore[arg-type]


def test_critical_path_first_when_slots_are_short() -> None:
    ready = [phase("short-tail", 20, minutes=20), phase("long-tail", 90, minutes=20)]
    assert assign(ready, [worker("a")]) == [Assignment("long-tail", "a")]


def test_capabilities_must_all_be_there() -> None:
    ready = [phase("train", 50, "linux gpu")]
    assert assign(ready, [worker("laptop"), worker("server", "linux docker")]) == []
    assert assign(ready, [worker("laptop"), worker("box", "linux gpu")]) == [
        Assignment("train", "box")
    ]


def test_a_pin_is_honoured_even_when_others_are_free() -> None:
    ready = [phase("docs", 50, pin="laptop")]
    assert assign(ready, [worker("server", free=4), worker("laptop", free=0)]) == []
    assert assign(ready, [worker("server", free=4), worker("laptop")]) == [
        Assignment("docs", "laptop")
    ]


def test_free_slots_are_filled_and_never_exceeded() -> None:
    ready = [phase(f"p{i}", 100 - i) for i in range(5)]
    chosen = assign(ready, [worker("server", free=2), worker("laptop")])
    assert Counter(a.worker for a in chosen) == {"server": 2, "laptop": 1}
    assert [a.phase_id for a in chosen] == ["p0", "p1", "p2"]


def test_the_worker_that_built_a_prerequisite_is_preferred() -> None:
    ready = [phase("api", 50, depends_on=frozenset({"schema"}))]
    workers = [worker("a", free=2), worker("b", holds=("schema",)), worker("c")]
    assert assign(ready, workers) == [Assignment("api", "b")]


def test_a_rare_machine_is_kept_for_the_work_only_it_can_do() -> None:
    ready = [phase("generic", 90, minutes=30), phase("windows", 40, "windows-files", minutes=30)]
    workers = [worker("wsl", "linux windows-files", holds=("x",)), worker("laptop")]
    assert sorted(assign(ready, workers)) == [
        Assignment("generic", "laptop"),
        Assignment("windows", "wsl"),
    ]


def test_a_long_phase_yields_the_only_machine_to_one_with_a_longer_tail() -> None:
    # The 240-minute phase is on the critical path, but taking the only Windows
    # machine would hold back the Windows phase and the 330 minutes that follow it.
    big = phase("big", 357, minutes=240)
    windows = phase("windows", 352, "windows-files", minutes=21)
    workers = [worker("wsl", "linux windows-files"), worker("laptop", free=0)]
    assert assign([big, windows], workers) == [Assignment("windows", "wsl")]
    # With a tail shorter than the big phase's, the Windows phase waits.
    short = phase("windows", 130, "windows-files", minutes=21)
    assert assign([big, short], workers) == [Assignment("big", "wsl")]


def test_first_free_takes_phases_in_the_order_they_became_ready() -> None:
    ready = [phase("first", 1), phase("second", 99), phase("gpu", 50, "gpu")]
    workers = [worker("server", "linux gpu"), worker("laptop")]
    assert assign_first_free(ready, workers) == [
        Assignment("first", "server"),
        Assignment("second", "laptop"),
    ]


def test_unrunnable_names_phases_no_worker_could_ever_take() -> None:
    ready = [phase("ok", requires="linux"), phase("mac", requires="macos"), phase("p", pin="nope")]
    assert unrunnable(ready, [worker("a", free=0)]) == ["mac", "p"]


def test_nothing_to_do() -> None:
    assert assign([], [worker("a")]) == []
    assert assign([phase("x")], [worker("a", free=0)]) == []


def _labels(mask: int) -> frozenset[str]:
    return frozenset(label for bit, label in enumerate(LABELS) if mask >> bit & 1)


def _held(mask: int) -> frozenset[str]:
    return frozenset(f"p{bit}" for bit in range(8) if mask >> bit & 1)


@st.composite
def situations(draw: st.DrawFn) -> tuple[list[ReadyPhase], list[WorkerState]]:
    """Sets are drawn as bit masks: the same cases, generated several times faster."""
    names = [f"w{i}" for i in range(draw(st.integers(1, 6)))]
    workers = [
        WorkerState(
            name,
            _labels(draw(st.integers(0, 15))),
            draw(st.integers(0, 3)),
            _held(draw(st.integers(0, 255))),
            draw(st.integers(0, 4)),
        )
        for name in names
    ]
    pins = [None, None, None, *names, "ghost"]
    ready = [
        ReadyPhase(
            f"r{i}",
            _labels(draw(st.integers(0, 15)) & draw(st.integers(0, 15))),
            pins[draw(st.integers(0, len(pins) - 1))],
            draw(st.integers(0, 500)),
            _held(draw(st.integers(0, 255))),
            draw(st.integers(0, 200)),
        )
        for i in range(draw(st.integers(0, 12)))
    ]
    return ready, workers


@settings(max_examples=300, deadline=None)
@given(situations())
def test_assignments_never_break_capabilities_slots_or_pins(
    situation: tuple[list[ReadyPhase], list[WorkerState]],
) -> None:
    ready, workers = situation
    by_phase = {p.id: p for p in ready}
    by_worker = {w.name: w for w in workers}
    for policy in (assign, assign_first_free):
        chosen = policy(ready, workers)
        assert len({a.phase_id for a in chosen}) == len(chosen)  # each phase at most once
        load = Counter(a.worker for a in chosen)
        for a in chosen:
            p, w = by_phase[a.phase_id], by_worker[a.worker]
            assert p.requires <= w.capabilities
            assert p.pin is None or p.pin == w.name
            assert can_run(p, w)
        for name, count in load.items():
            assert count <= by_worker[name].free_slots
        # work-conserving: a phase waits only when no worker that could take it has a slot left
        started = {a.phase_id for a in chosen}
        for p in ready:
            if p.id not in started:
                assert all(load[w.name] >= w.free_slots for w in workers if can_run(p, w))


def test_without_estimates_phases_count_one_each() -> None:
    """The orchestrator may not know estimates: a rare machine is still kept for its work."""
    ready = [phase("generic", 90), phase("windows", 40, "windows-files")]
    workers = [worker("wsl", "linux windows-files"), worker("laptop")]
    assert sorted(assign(ready, workers)) == [
        Assignment("generic", "laptop"),
        Assignment("windows", "wsl"),
    ]
