"""The workloads' checkers on hand-made histories and database states: each
accepts what the database may do and names what it must not.

The states are made directly through the public API (a `put` that a healthy
workload would never commit stands for a planted bug); the events are what
workers would have recorded (stress/history.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mvcc
from stress.history import Event, Tail, Writer, outcomes
from stress.workloads import Config, by_name
from stress.workloads.bank import ACCOUNTS, INITIAL
from stress.workloads.writeskew import PAIRS


@pytest.fixture
def db(tmp_path: Path) -> Iterator[mvcc.Database]:
    with mvcc.open(str(tmp_path / "data"), autovacuum=False) as db:
        yield db


def workload(name: str, isolation: str = "snapshot") -> Any:
    return by_name(name)(Config(data="", history="", workloads=[name], isolation=isolation))


def tx(
    wl: str,
    n: int,
    status: str,
    planned: dict[str, Any],
    result: dict[str, Any] | None = None,
    ro: bool = False,
) -> list[Event]:
    """The events of one transaction: invoke, then ok/fail (none for info)."""
    tx_id = f"w0.0-{n}"
    events: list[Event] = [{"e": "invoke", "id": tx_id, "wl": wl, **planned}]
    if status == "ok":
        events.append({"e": "ok", "id": tx_id, "wl": wl, "dt": 0.001, "ro": ro, **(result or {})})
    elif status == "fail":
        events.append({"e": "fail", "id": tx_id, "wl": wl, "dt": 0.001, "why": "conflict"})
    return events


def test_counters_accept_unknown_outcomes_and_name_lost_updates(db: mvcc.Database) -> None:
    w = workload("counters")
    w.setup(db)
    counters = db.table("counters")
    counters.put(0, {"n": 2})
    events = tx("counters", 1, "ok", {"key": 0}) + tx("counters", 2, "info", {"key": 0})
    events += tx("counters", 3, "ok", {"key": 0}) + tx("counters", 4, "fail", {"key": 0})
    assert w.check(db, events).ok  # 2 acknowledged, 1 unknown: 2 is right
    counters.put(0, {"n": 1})
    verdict = w.check(db, events)
    assert not verdict.ok and "lost updates" in verdict.detail and "counter 0" in verdict.detail
    counters.put(0, {"n": 4})  # more than acknowledged + unknown
    assert not w.check(db, events).ok


def test_durability_names_lost_and_unexplained_records(db: mvcc.Database) -> None:
    w = workload("durability")
    w.setup(db)
    table = db.table("durability")
    pk = table.insert({"tx": "w0.0-1"})
    events = tx("durability", 1, "ok", {}, {"pk": pk}) + tx("durability", 2, "info", {})
    assert w.check(db, events).ok
    events += tx("durability", 3, "ok", {}, {"pk": 999})  # acknowledged, not there
    verdict = w.check(db, events)
    assert not verdict.ok and "1 acknowledged commits lost" in verdict.detail
    assert "w0.0-3" in verdict.detail
    table.insert({"tx": "w0.0-4"})  # no transaction with this id was invoked
    events = tx("durability", 1, "ok", {}, {"pk": pk}) + tx("durability", 4, "fail", {})
    verdict = w.check(db, events)
    assert not verdict.ok and "no invoked commit wrote" in verdict.detail


def test_bank_names_a_broken_audit_and_a_broken_final_state(db: mvcc.Database) -> None:
    w = workload("bank")
    w.setup(db)
    good = [INITIAL] * ACCOUNTS
    events = tx("bank", 1, "ok", {"audit": True}, {"balances": good}, ro=True)
    assert w.check(db, events).ok
    torn = [INITIAL + 5] + [INITIAL] * (ACCOUNTS - 1)
    events += tx("bank", 2, "ok", {"audit": True}, {"balances": torn}, ro=True)
    verdict = w.check(db, events)
    assert not verdict.ok and "w0.0-2" in verdict.detail
    db.table("bank").put(0, {"balance": -1})
    verdict = w.check(db, events[:2])
    assert not verdict.ok and "after the run" in verdict.detail


@pytest.mark.parametrize("isolation", ["snapshot", "serializable"])
def test_write_skew_fails_only_under_serializable(db: mvcc.Database, isolation: str) -> None:
    w = workload("writeskew", isolation)
    w.setup(db)
    events = tx("writeskew", 1, "ok", {"pair": 0}, {"seen": [False, False]})
    assert w.check(db, events).ok is (isolation == "snapshot")
    clean = tx("writeskew", 2, "ok", {"pair": 0}, {"seen": [True, False]})
    assert w.check(db, clean).ok
    table = db.table("writeskew")
    table.put(2 * (PAIRS - 1), {"on": False})
    table.put(2 * (PAIRS - 1) + 1, {"on": False})
    assert w.check(db, clean).ok is (isolation == "snapshot")


def test_unique_names_an_index_that_disagrees_with_the_scan(db: mvcc.Database) -> None:
    w = workload("unique")
    w.setup(db)
    table = db.table("unique")
    a = table.insert({"email": "u1", "age": 3})
    good = tx(
        "unique",
        1,
        "ok",
        {"op": "query", "age": 3},
        {"index": [a], "scan": [a], "emails": ["u1"]},
        ro=True,
    )
    assert w.check(db, good).ok
    bad = tx(
        "unique",
        2,
        "ok",
        {"op": "query", "age": 3},
        {"index": [], "scan": [a], "emails": ["u1", "u1"]},
        ro=True,
    )
    verdict = w.check(db, good + bad)
    assert not verdict.ok and "w0.0-2: index found []" in verdict.detail
    assert "one email twice" in verdict.detail


def test_listappend_reports_an_anomaly_and_a_lost_append(db: mvcc.Database) -> None:
    w = workload("listappend")
    w.setup(db)
    lists = db.table("listappend")
    lists.put(0, {"v": [1, 2]})
    events = tx("listappend", 1, "ok", {"ops": [["append", 0, 1]]}, {"ops": [["append", 0, 1]]})
    events += tx("listappend", 2, "ok", {"ops": [["append", 0, 2]]}, {"ops": [["append", 0, 2]]})
    assert w.check(db, events).ok
    # A reader saw [2, 1]: incompatible with the final order [1, 2].
    events += tx("listappend", 3, "ok", {"ops": [["r", 0, None]]}, {"ops": [["r", 0, [2, 1]]]})
    verdict = w.check(db, events)
    assert not verdict.ok and "incompatible-order" in verdict.detail
    lists.put(0, {"v": [1]})  # the acknowledged append of 2 is gone
    verdict = w.check(db, events[:4])
    assert not verdict.ok and "1 acknowledged appends missing" in verdict.detail


def test_history_lines_round_trip_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    writer = Writer(str(tmp_path), 2, 5)
    first = writer.next_id()
    writer.write({"e": "invoke", "id": first, "wl": "counters", "key": 1})
    writer.write({"e": "ok", "id": first, "wl": "counters", "dt": 0.5})
    writer.write({"e": "invoke", "id": writer.next_id(), "wl": "counters", "key": 2})
    writer.close()
    with open(tmp_path / "w2.5.jsonl", "ab") as f:
        f.write(b'{"e": "ok", "id": "w2.5-2"')  # torn: no newline
    tail = Tail(str(tmp_path))
    events = tail.poll()
    assert [e["e"] for e in events] == ["invoke", "ok", "invoke"]
    found = {o.id: o.status for o in outcomes(events, "counters")}
    assert found == {"w2.5-1": "ok", "w2.5-2": "info"}
    with open(tmp_path / "w2.5.jsonl", "ab") as f:
        f.write(b', "wl": "counters"}\n')  # the line completes
    assert [e["e"] for e in tail.poll()] == ["ok"]
