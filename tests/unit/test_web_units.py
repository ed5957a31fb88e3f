"""The dashboard's parts without a server: the graph's layout, the shared snapshots of
the live stream, the token rules."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from control.errors import UsageError
from control.state import StateStore
from control.web.auth import Access, is_loopback, read_token
from control.web.graph import NODE_W, layout
from control.web.live import EventHub
from control.web.model import runs_list


def test_phases_are_laid_out_in_columns_by_depth_with_the_critical_path_marked() -> None:
    depends_on = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
    drawn = layout(depends_on, {"a": 10, "b": 50, "c": 5, "d": 10, "e": 1})
    at = {n.id: n for n in drawn.nodes}
    assert at["a"].x == at["e"].x < at["b"].x == at["c"].x < at["d"].x
    assert len({(n.x, n.y) for n in drawn.nodes}) == 5  # no two phases on one spot
    assert {n.id for n in drawn.nodes if n.critical} == {"a", "b", "d"}
    assert {(e.source, e.target) for e in drawn.edges if e.critical} == {("a", "b"), ("b", "d")}
    assert drawn.critical_minutes == 70
    assert drawn.width >= at["d"].x + NODE_W


def test_a_thousand_phases_lay_out(tmp_path: Path) -> None:
    depends_on = {f"p{i}": [f"p{j}" for j in (i - 1, i // 2) if 0 <= j < i] for i in range(1000)}
    drawn = layout(depends_on, {})
    edges = {(d, p) for p, deps in depends_on.items() for d in deps}
    assert len(drawn.nodes) == 1000 and {(e.source, e.target) for e in drawn.edges} == edges


def test_pages_showing_the_same_thing_share_one_snapshot(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.create_run("s.json", "h", {"phases": []}, [])
    store.close()
    made: list[int] = []
    gate = threading.Event()

    def take() -> dict[str, int]:
        gate.wait(5)  # every page asks while the first is still making it
        made.append(1)
        return {"n": len(made)}

    async def main() -> list[str]:
        hub = EventHub(tmp_path / "state.db")
        await hub.start()
        try:
            pages = [asyncio.create_task(hub.shared("run:x", hub.latest, take)) for _ in range(50)]
            await asyncio.sleep(0.1)
            gate.set()
            return await asyncio.gather(*pages)
        finally:
            await hub.stop()

    sent = asyncio.run(main())
    assert made == [1]
    assert set(sent) == {'event: snapshot\ndata: {"n": 1}\n\n'}


def test_the_runs_list_reads_the_totals_of_the_runs_it_shows_only(tmp_path: Path) -> None:
    """A year of runs must not weigh on the list of the newest: their totals only."""
    store = StateStore(tmp_path / "state.db")
    ids = [store.create_run("s.json", "h", {"phases": []}, [(f"p{i}", f"b{i}") for i in range(n)])
           for n in (1, 2, 3)]  # fmt: skip
    store.conn.execute("UPDATE phases SET state = 'done' WHERE run_id = ? AND phase_id = 'p0'",
                       (ids[2],))  # fmt: skip
    assert store.phase_totals(ids[1:]) == {ids[1]: (2, 0, 0.0), ids[2]: (3, 1, 0.0)}
    listed = runs_list(store, time.time(), limit=2)
    assert [(r["id"], r["phases"], r["done"]) for r in listed] == [(ids[2], 3, 1), (ids[1], 2, 0)]
    store.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.4.5", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("192.0.2.7", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_is_told_apart(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_token_rules(tmp_path: Path) -> None:
    assert read_token(None, {}) is None
    with pytest.raises(UsageError, match="at least 16"):
        read_token(None, {"SUPERAGENT_DASHBOARD_TOKEN": "short"})
    token = tmp_path / "token"
    token.write_text("x" * 20 + "\n")
    token.chmod(0o600)
    assert read_token(token, {}) == "x" * 20
    with pytest.raises(UsageError, match="cannot read"):
        read_token(tmp_path / "missing", {})
    access = Access.for_binding("0.0.0.0", "x" * 20, actions=True)
    assert access.signed_in(access.session()) and not access.signed_in("x" * 20)
    assert access.session() != access.csrf() and "x" * 20 not in access.session()
