"""The scheduler: capabilities, slots and pins always hold; priorities order the rest."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.scheduler import (
    GUARDED,
    Assignment,
    Outlook,
    ReadyPhase,
    WorkerState,
    assign,
    assign_first_free,
    can_run,
    candidates,
    frees_in,
    speed,
    throughput,
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
    # The 240-minute phase is on the critical path, but taking the only free machine
    # would hold back the other phase and the 330 minutes that follow it.
    # (Of phases alike, only as many as there are free slots are weighed: `candidates`.)
    big = phase("big", 357, minutes=240)
    other = phase("other", 352, "linux", minutes=21)
    workers = [worker("laptop"), worker("server", free=0)]
    assert assign([big, other], workers) == [Assignment("other", "laptop")]
    # With a tail shorter than the big phase's, the other phase waits.
    short = phase("other", 130, "linux", minutes=21)
    assert assign([big, short], workers) == [Assignment("big", "laptop")]


def test_the_phase_only_a_rare_machine_can_do_comes_first_there() -> None:
    # Whatever the tails: the generic phase can wait for any machine, the Windows one
    # has only this one (issue 20: rare machines for the work only they can do).
    big = phase("big", 357, minutes=240)
    windows = phase("windows", 130, "windows-files", minutes=21)
    workers = [worker("wsl", "linux windows-files"), worker("laptop", free=0)]
    assert assign([big, windows], workers) == [Assignment("windows", "wsl")]
    # Two slots, two Windows phases waiting: both stay there, the generic one waits.
    two = [phase("w1", 100, "windows-files"), phase("w2", 90, "windows-files")]
    roomy = [worker("wsl", "linux windows-files", free=2), worker("laptop", free=0)]
    assert sorted(assign([big, *two], roomy)) == [
        Assignment("w1", "wsl"),
        Assignment("w2", "wsl"),
    ]


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
            draw(st.sampled_from((0.0, 0.5, 1.0, 2.0))),
            draw(st.integers(0, 500)),
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
        # a phase waits only when no worker that could take it has a slot left, or (for
        # `assign`) the ones left are kept for other ready work that needs what they have
        started = {a.phase_id for a in chosen}
        for p in ready:
            if p.id not in started:
                for w in workers:
                    if can_run(p, w) and load[w.name] < w.free_slots:
                        placed = [by_phase[a.phase_id] for a in chosen if a.worker == w.name]
                        assert policy is assign, (p, w)
                        assert _kept(w, p, ready) or _guarded(w, p, placed), (p, w)


def _guarded(worker: WorkerState, phase: ReadyPhase, placed: list[ReadyPhase]) -> bool:
    """Whether `worker` runs (or was just given) a phase that matters over twice as much:
    with contention, `assign` keeps a lesser phase from slowing it."""
    running = [worker.running_priority] if worker.running else []
    urgent = max([*running, *(q.priority for q in placed)], default=0.0)
    return worker.slot_cost > 0 and phase.priority * GUARDED < urgent


def _kept(worker: WorkerState, phase: ReadyPhase, ready: list[ReadyPhase]) -> bool:
    """Whether other ready phases need a capability of `worker` that `phase` does not, or
    are pinned to it: then `assign` may keep it from `phase`."""
    others = worker.capabilities - phase.requires
    return any(
        q.requires & others or (q.pin == worker.name and phase.pin != worker.name) for q in ready
    )


def test_without_estimates_phases_count_one_each() -> None:
    """The orchestrator may not know estimates: a rare machine is still kept for its work."""
    ready = [phase("generic", 90), phase("windows", 40, "windows-files")]
    workers = [worker("wsl", "linux windows-files"), worker("laptop")]
    assert sorted(assign(ready, workers)) == [
        Assignment("generic", "laptop"),
        Assignment("windows", "wsl"),
    ]


def test_an_idle_machine_comes_before_a_second_slot_of_a_busy_one() -> None:
    # alpha runs one agent and holds the prerequisite: still, the idle laptop takes it.
    alpha = WorkerState("alpha", frozenset({"linux"}), 1, frozenset({"schema"}), slots=2)
    beta = WorkerState("beta", frozenset({"linux"}), 1, slots=1)
    ready = [phase("api", 50, depends_on=frozenset({"schema"}), minutes=30)]
    assert assign(ready, [alpha, beta]) == [Assignment("api", "beta")]
    # Slots that do not interfere (superagent_slot_cost: 0): the warm checkout decides.
    free_slots = WorkerState("alpha", alpha.capabilities, 1, alpha.holds, slots=2, slot_cost=0)
    assert assign(ready, [free_slots, beta]) == [Assignment("api", "alpha")]


def test_two_ready_phases_spread_over_two_idle_machines() -> None:
    """The demo's webapp: after schema on alpha, both API phases went to alpha's two slots."""
    alpha = WorkerState("alpha", frozenset({"linux", "docker", "gpu"}), 2, {"schema"}, slots=2)
    beta = WorkerState("beta", frozenset({"linux"}), 1, slots=1)
    deps = frozenset({"schema"})
    ready = [
        phase("api-tasks", 160, "linux", depends_on=deps, minutes=45),
        phase("api-auth", 150, "linux", depends_on=deps, minutes=35),
    ]
    chosen = assign(ready, [alpha, beta])
    assert sorted(a.worker for a in chosen) == ["alpha", "beta"]


def test_rarity_is_judged_against_the_remaining_work_not_the_ready_set() -> None:
    docker = WorkerState("alpha", frozenset({"linux", "docker"}), 1, slots=1)
    plain = WorkerState("beta", frozenset({"linux"}), 1, slots=1)
    ready = [phase("api", 100, "linux", minutes=30), phase("ui", 90, "linux", minutes=30)]
    e2e = phase("e2e", 40, "linux docker", minutes=40)
    # Nothing ready needs docker, but e2e will: the more important phase avoids alpha.
    outlook = Outlook.of([*ready, e2e])
    assert assign(ready, [docker, plain], outlook)[0] == Assignment("api", "beta")
    # Judged on the ready set alone, docker looks as common as linux: the first machine.
    assert assign(ready, [docker, plain])[0] == Assignment("api", "alpha")


def test_a_rare_machine_is_kept_for_work_that_will_be_ready_before_a_long_phase_ends() -> None:
    wsl = WorkerState("wsl", frozenset({"linux", "windows-files"}), 1, slots=1)
    laptop = WorkerState("laptop", frozenset({"linux"}), 0, slots=1)
    long_one = phase("long", 200, "linux", minutes=120)
    windows = phase("windows", 80, "windows-files", minutes=60)  # loads wsl: 60 of 90 per machine
    soon = Outlook.of([long_one, windows], soonest={"windows": 10.0})
    assert assign([long_one], [wsl, laptop], soon) == []  # the laptop will take it
    # Ready only in three hours: the machine would be free again by then.
    later = Outlook.of([long_one, windows], soonest={"windows": 180.0})
    assert assign([long_one], [wsl, laptop], later) == [Assignment("long", "wsl")]
    # A phase no other machine can ever run is not kept waiting.
    alone = [WorkerState("wsl", wsl.capabilities, 1, slots=1)]
    assert assign([long_one], alone, soon) == [Assignment("long", "wsl")]


def test_outlook_of_the_remaining_work() -> None:
    phases = [
        phase("a", requires="docker", minutes=30),
        phase("b", requires="docker gpu", minutes=10),
        phase("c", pin="laptop"),  # no estimate: counts 1
    ]
    outlook = Outlook.of(phases, soonest={"a": 50.0, "b": 20.0})
    assert outlook.total == 41
    assert outlook.needs == {"docker": 40, "gpu": 10}
    assert outlook.pinned == {"laptop": 1}
    assert outlook.needs_from == {"docker": 20.0, "gpu": 20.0}
    assert outlook.pinned_from == {"laptop": 0.0}


def test_contention_model() -> None:
    assert speed(1, 0.5) == 1 and speed(2, 0.5) == pytest.approx(1 / 1.5)
    assert speed(3, 0.0) == 1
    assert throughput(2, 0.5) == pytest.approx(2 / 1.5)
    assert throughput(4, 1.0) == 1 and throughput(4, 3.0) == 1  # time-slicing at best
    assert throughput(3, 0.0) == 3


@settings(max_examples=200, deadline=None)
@given(situations())
def test_only_the_candidates_matter(
    situation: tuple[list[ReadyPhase], list[WorkerState]],
) -> None:
    """The planner passes only `candidates`: the answer is the same as with them all."""
    ready, workers = situation
    free = sum(w.free_slots for w in workers)
    if free:
        outlook = Outlook.of(ready)
        assert assign(candidates(ready, free), workers, outlook) == assign(ready, workers, outlook)


def test_a_lesser_phase_does_not_slow_a_much_more_urgent_one() -> None:
    """With contention, a phase leading a chain under half as long waits for a machine of
    its own rather than share one with the critical phase."""
    box = WorkerState("box", frozenset(), 1, slots=2, running_priority=300)
    ready = [phase("minor", 100, minutes=30)]
    assert assign(ready, [box]) == []
    assert assign([phase("major", 200, minutes=30)], [box]) == [Assignment("major", "box")]
    # Slots that do not interfere: no reason to wait.
    free_slots = WorkerState("box", frozenset(), 1, slots=2, slot_cost=0, running_priority=300)
    assert assign(ready, [free_slots]) == [Assignment("minor", "box")]


def test_a_machine_few_have_is_kept_even_for_a_little_work() -> None:
    """One Windows machine among eight: its phase is a small share of the work, yet it
    would wait behind a long generic phase, so the generic one goes elsewhere."""
    wsl = WorkerState("wsl", frozenset({"linux", "windows-files"}), 1, slots=1)
    others = [WorkerState(f"pc{i}", frozenset({"linux"}), 0, slots=1) for i in range(7)]
    long_one = phase("long", 200, "linux", minutes=120)
    generic = [phase(f"g{i}", 100, "linux", minutes=60) for i in range(10)]
    windows = phase("windows", 50, "windows-files", minutes=10)
    outlook = Outlook.of([long_one, *generic, windows], soonest={"windows": 30.0})
    assert assign([long_one], [wsl, *others], outlook) == []
    # Ready only after the long phase would end: the machine takes it.
    later = Outlook.of([long_one, *generic, windows], soonest={"windows": 130.0})
    assert assign([long_one], [wsl, *others], later) == [Assignment("long", "wsl")]


def test_the_only_machine_with_a_capability_is_left_for_its_work_when_another_frees_soon() -> None:
    # Little scarce work (under RESERVE's load) and half the fleet has it (over RARE):
    # only the sole-holder rule keeps the build off the scanner machine.
    scanner = WorkerState("scanner", frozenset({"linux", "scarce"}), 1, slots=1)
    build = phase("build", 100, "linux", minutes=30)
    scan = phase("scan", 20, "scarce", minutes=5)
    outlook = Outlook.of([build, scan], soonest={"scan": 10.0})  # it overlaps 20 of 30 minutes

    def laptop(frees_in: float) -> WorkerState:
        return WorkerState("laptop", frozenset({"linux"}), 0, slots=1, frees_in=frees_in)

    # The laptop frees in 14 minutes, within 3/4 of the overlap: the build waits for it.
    assert assign([build], [scanner, laptop(14.0)], outlook) == []
    # In 16 minutes, or not known: the build takes the scanner machine.
    assert assign([build], [scanner, laptop(16.0)], outlook) == [Assignment("build", "scanner")]
    assert assign([build], [scanner, laptop(math.inf)], outlook) == [Assignment("build", "scanner")]
    # A machine that is most of the fleet (here two slots of three) does not idle for it.
    big = WorkerState("scanner", scanner.capabilities, 2, slots=2)
    assert assign([build], [big, laptop(14.0)], outlook) == [Assignment("build", "scanner")]
    # Nor when the scarce work cannot be ready before the build would end.
    later = Outlook.of([build, scan], soonest={"scan": 40.0})
    assert assign([build], [scanner, laptop(1.0)], later) == [Assignment("build", "scanner")]


def test_a_phase_waits_for_a_busy_plain_machine_that_frees_soon_rather_than_hold_a_rare_one() -> (
    None
):
    # docker is on two machines (no sole holder) and lightly loaded (no reservation);
    # holding d1 still costs the docker work some minutes, waiting for plain costs fewer.
    d1 = WorkerState("d1", frozenset({"linux", "docker"}), 1, slots=1)
    d2 = WorkerState("d2", frozenset({"linux", "docker"}), 0, slots=1)
    build = phase("build", 100, "linux", minutes=30)
    outlook = Outlook.of([build, phase("image", 20, "docker", minutes=5)])

    def plain(frees_in: float) -> WorkerState:
        return WorkerState("plain", frozenset({"linux"}), 0, slots=1, frees_in=frees_in)

    assert assign([build], [d1, d2, plain(2.0)], outlook) == []
    assert assign([build], [d1, d2, plain(8.0)], outlook) == [Assignment("build", "d1")]
    # With no docker work left, there is nothing to keep d1 for.
    assert assign([build], [d1, d2, plain(2.0)], Outlook.of([build])) == [Assignment("build", "d1")]
    # A phase that leads a quarter of the longest chain (d2 runs it) can wait longer.
    d2_urgent = WorkerState("d2", d2.capabilities, 0, slots=1, running_priority=400)
    assert assign([build], [d1, d2_urgent, plain(8.0)], outlook) == []


def test_when_a_machine_frees_by_the_estimates_of_what_runs_there() -> None:
    assert frees_in([], 1000.0, 0.5) == math.inf
    # Two agents that started a minute ago at 1 / 1.5 of their speed: the 10-minute one
    # needs 15 minutes in all, 14 from now.
    assert frees_in([(940.0, 10.0), (940.0, 30.0)], 1000.0, 0.5) == pytest.approx(14.0)
    # Late against its estimate: free any moment now.
    assert frees_in([(0.0, 10.0)], 3600.0, 0.5) == 0.0
