"""The list-append checker (stress/checkers/listappend.py): each anomaly from a hand-written
history, no false alarm on serial histories, info transactions, and the speed bound."""

from __future__ import annotations

import doctest
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stress.checkers import listappend
from stress.checkers.listappend import Anomaly, Txn, check


def ok(tid: str, *ops: tuple[Any, ...]) -> Txn:
    return Txn(tid, "ok", ops)


def fail(tid: str, *ops: tuple[Any, ...]) -> Txn:
    return Txn(tid, "fail", ops)


def info(tid: str, *ops: tuple[Any, ...]) -> Txn:
    return Txn(tid, "info", ops)


def a(key: str, value: int) -> tuple[Any, ...]:
    return ("append", key, value)


def r(key: str, values: list[int] | None) -> tuple[Any, ...]:
    return ("r", key, values)


def found(anomalies: list[Anomaly]) -> list[tuple[str, tuple[str, ...]]]:
    return [(x.kind, x.txns) for x in anomalies]


def rotated(cycle: tuple[str, ...], first: str) -> tuple[str, ...]:
    """`cycle` turned to start at `first`: a cycle may be reported from any of its members."""
    i = cycle.index(first)
    return cycle[i:] + cycle[:i]


def only_cycle(anomalies: list[Anomaly], kind: str, first: str) -> Anomaly:
    assert [x.kind for x in anomalies] == [kind], anomalies
    cycle = anomalies[0]
    # the explanation walks the cycle, txn by txn, and comes back to where it started
    names = cycle.explanation.split(" ")[::2]
    assert tuple(names[:-1]) == cycle.txns and names[-1] == names[0], cycle
    return Anomaly(kind, rotated(cycle.txns, first), cycle.explanation)


# -- one hand-written history per anomaly ---------------------------------------------------


@pytest.mark.parametrize("serializable", [False, True])
def test_g0_write_cycle(serializable: bool) -> None:
    history = [
        ok("t1", a("x", 1), a("y", 2)),
        ok("t2", a("x", 2), a("y", 1)),
        ok("t3", r("x", [1, 2]), r("y", [1, 2])),
    ]
    cycle = only_cycle(check(history, serializable=serializable), "G0", "t1")
    assert cycle.txns == ("t1", "t2")
    assert "t1 -ww(x)-> t2" in cycle.explanation and "t2 -ww(y)-> t1" in cycle.explanation


def test_g1a_aborted_read() -> None:
    history = [fail("t1", a("x", 1)), ok("t2", a("x", 2)), ok("t3", r("x", [1, 2]))]
    anomalies = check(history, serializable=True)
    assert found(anomalies) == [("G1a", ("t3", "t1"))]
    assert "[1]" in anomalies[0].explanation and "t1" in anomalies[0].explanation


def test_an_aborted_writer_is_g1a_only_never_g1b_nor_in_a_cycle() -> None:
    history = [
        fail("t1", a("x", 1), a("x", 2), a("y", 2)),
        ok("t2", a("x", 3), a("y", 1)),
        ok("t3", r("x", [1])),  # an intermediate append too, and t1 -ww(x)-> t2 -ww(y)-> t1
        ok("t4", r("x", [1, 2, 3]), r("y", [1, 2])),
    ]
    assert found(check(history, serializable=True)) == [
        ("G1a", ("t3", "t1")),  # x
        ("G1a", ("t4", "t1")),  # x
        ("G1a", ("t4", "t1")),  # y: once per (reader, writer, key)
    ]


def test_g1b_intermediate_read() -> None:
    history = [ok("t1", a("x", 1), a("x", 2)), ok("t2", r("x", [1]))]
    anomalies = check(history, serializable=True)
    assert found(anomalies) == [("G1b", ("t2", "t1"))]
    assert "final append to x is 2" in anomalies[0].explanation


def test_a_txn_reading_its_own_intermediate_append_is_not_g1b() -> None:
    history = [ok("t1", a("x", 1), r("x", [1]), a("x", 2)), ok("t2", r("x", [1, 2]))]
    assert check(history, serializable=True) == []


@pytest.mark.parametrize("serializable", [False, True])
def test_g1c_circular_information_flow(serializable: bool) -> None:
    history = [
        ok("t1", a("x", 1), r("y", [1])),
        ok("t2", a("y", 1), r("x", [1])),
    ]
    cycle = only_cycle(check(history, serializable=serializable), "G1c", "t1")
    assert cycle.txns == ("t1", "t2")
    assert "t1 -wr(x)-> t2" in cycle.explanation and "t2 -wr(y)-> t1" in cycle.explanation


@pytest.mark.parametrize("serializable", [False, True])
def test_g_single_read_skew(serializable: bool) -> None:
    # t1 saw t2's y but not t2's x
    history = [
        ok("t1", r("x", []), r("y", [1])),
        ok("t2", a("x", 1), a("y", 1)),
        ok("t3", r("x", [1])),
    ]
    cycle = only_cycle(check(history, serializable=serializable), "G-single", "t1")
    assert cycle.txns == ("t1", "t2")
    assert cycle.explanation in ("t1 -rw(x)-> t2 -wr(y)-> t1", "t2 -wr(y)-> t1 -rw(x)-> t2")


def test_g_single_lost_update() -> None:
    # t1 and t2 both read [1] and appended: one's append was lost to the other's view
    history = [
        ok("t0", a("x", 1)),
        ok("t1", r("x", [1]), a("x", 2)),
        ok("t2", r("x", [1]), a("x", 3)),
        ok("t3", r("x", [1, 2, 3])),
    ]
    cycle = only_cycle(check(history, serializable=False), "G-single", "t2")
    assert cycle.txns == ("t2", "t1")
    assert "t2 -rw(x)-> t1" in cycle.explanation and "t1 -ww(x)-> t2" in cycle.explanation


def test_g2_write_skew_only_under_serializable() -> None:
    history = [
        ok("t1", r("x", []), r("y", []), a("x", 1)),
        ok("t2", r("x", []), r("y", []), a("y", 1)),
        ok("t3", r("x", [1]), r("y", [1])),
    ]
    assert check(history, serializable=False) == []
    cycle = only_cycle(check(history, serializable=True), "G2", "t1")
    assert cycle.txns == ("t1", "t2")
    assert "t1 -rw(y)-> t2" in cycle.explanation and "t2 -rw(x)-> t1" in cycle.explanation


def test_g2_three_way_skew() -> None:
    history = [
        ok("t1", r("y", []), a("x", 1)),
        ok("t2", r("z", []), a("y", 1)),
        ok("t3", r("x", []), a("z", 1)),
        ok("t4", r("x", [1]), r("y", [1]), r("z", [1])),
    ]
    assert check(history, serializable=False) == []
    cycle = only_cycle(check(history, serializable=True), "G2", "t1")
    assert cycle.txns == ("t1", "t2", "t3")


@pytest.mark.parametrize(
    "ops",
    [
        (a("x", 5), r("x", [])),  # its own append is missing
        (r("x", [1]), r("x", [])),  # the list shrank between two reads
        (r("x", []), a("x", 5), r("x", [1, 5])),  # 1 appeared between its reads
        (a("x", 5), a("x", 6), r("x", [6, 5])),  # its appends out of order
    ],
)
def test_internal(ops: tuple[tuple[Any, ...], ...]) -> None:
    history = [ok("t0", a("x", 1)), ok("t1", *ops)]
    anomalies = check(history, serializable=True)
    assert "internal" in [x.kind for x in anomalies]
    assert found([x for x in anomalies if x.kind == "internal"]) == [("internal", ("t1",))]


def test_internal_alone() -> None:
    history = [ok("t1", a("x", 5), r("x", []))]
    anomalies = check(history, serializable=True)
    assert found(anomalies) == [("internal", ("t1",))]
    assert "t1 read x=[]" in anomalies[0].explanation


def test_own_appends_after_an_unseen_prefix_are_not_internal() -> None:
    history = [
        ok("t0", a("x", 1)),
        ok("t1", a("x", 5), r("x", [1, 5]), a("x", 6), r("x", [1, 5, 6])),
    ]
    assert check(history, serializable=True) == []


def test_duplicate_elements() -> None:
    history = [ok("t1", a("x", 1)), ok("t2", r("x", [1, 1]))]
    anomalies = check(history, serializable=True)
    assert found(anomalies) == [("duplicate-elements", ("t2",))]
    assert "x=[1, 1]" in anomalies[0].explanation


def test_duplicate_in_a_shorter_prefix_read() -> None:
    history = [
        ok("t1", a("x", 1)),
        ok("t2", a("x", 2)),
        ok("t3", r("x", [1, 1])),
        ok("t4", r("x", [1, 1, 2])),
        ok("t5", r("x", [1])),
    ]
    assert found(check(history, serializable=True)) == [
        ("duplicate-elements", ("t3",)),
        ("duplicate-elements", ("t4",)),
    ]


def test_incompatible_order() -> None:
    history = [
        ok("t1", a("x", 1)),
        ok("t2", a("x", 2)),
        ok("t3", r("x", [1, 2])),
        ok("t4", r("x", [2, 1])),
        ok("t5", r("x", [1])),
    ]
    anomalies = check(history, serializable=True)
    assert found(anomalies) == [("incompatible-order", ("t4", "t3"))]
    assert "position 0" in anomalies[0].explanation


def test_each_anomaly_of_a_reader_is_reported_once() -> None:
    history = [fail("t1", a("x", 1)), ok("t2", r("x", [1]), r("x", [1]))]
    assert found(check(history, serializable=True)) == [("G1a", ("t2", "t1"))]


# -- info transactions ----------------------------------------------------------------------


def test_info_whose_appends_were_never_read_creates_no_anomaly() -> None:
    history = [
        ok("t1", a("x", 1)),
        info("i1", a("x", 2), r("y", [7, 7])),  # its reads are unknown
        info("i2", a("x", 3), a("y", 1)),
        ok("t2", r("x", [1]), r("y", [])),
        ok("t3", a("y", 2), r("x", [1])),
        ok("t4", r("y", [2]), r("x", [1])),
    ]
    assert check(history, serializable=True) == []


def test_info_whose_append_was_read_is_committed() -> None:
    clean = [
        info("i1", a("x", 1), r("y", [5])),  # its read is unknown: no edge, no G1a-like fault
        ok("t2", r("x", [1]), a("y", 1)),
        ok("t3", r("y", [1]), r("x", [1])),
    ]
    assert check(clean, serializable=True) == []
    # t3 saw t2, which saw i1, yet t3 missed i1: i1 committed, so this is read skew
    skew = [*clean[:2], ok("t3", r("y", [1]), r("x", [])), ok("t4", r("x", [1]))]
    cycle = only_cycle(check(skew, serializable=False), "G-single", "t3")
    assert cycle.explanation == "t3 -rw(x)-> i1 -wr(x)-> t2 -wr(y)-> t3"


def test_info_intermediate_read_is_g1b() -> None:
    history = [info("i1", a("x", 1), a("x", 2)), ok("t2", r("x", [1]))]
    assert found(check(history, serializable=True)) == [("G1b", ("t2", "i1"))]


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "history",
    [
        [ok("t1", a("x", 1)), ok("t2", a("x", 1))],  # one value appended twice
        [ok("t1"), ok("t1")],  # one id twice
        [Txn("t1", "maybe", ())],
        [ok("t1", ("write", "x", 1))],
    ],
)
def test_a_broken_history_is_a_value_error(history: list[Txn]) -> None:
    with pytest.raises(ValueError):
        check(history, serializable=True)


def test_doctests() -> None:
    assert doctest.testmod(listappend).failed == 0


# -- serial histories are clean -------------------------------------------------------------

KEYS = ("x", "y", "z", "w")
op_strategy = st.tuples(st.sampled_from(["append", "r"]), st.sampled_from(KEYS))
txn_strategy = st.tuples(
    st.sampled_from(["ok", "ok", "ok", "fail", "info"]),
    st.lists(op_strategy, min_size=1, max_size=5),
    st.booleans(),  # whether an info transaction committed
)


def run_serially(plan: list[tuple[str, list[tuple[str, str]], bool]]) -> list[Txn]:
    """Run `plan` one transaction after another against a dict-of-lists model."""
    model: dict[str, list[int]] = {}
    history = []
    counter = 0
    for n, (status, ops, committed) in enumerate(plan):
        view = {k: list(v) for k, v in model.items()}
        recorded: list[tuple[Any, ...]] = []
        for f, key in ops:
            if f == "append":
                counter += 1
                view.setdefault(key, []).append(counter)
                recorded.append(a(key, counter))
            else:
                seen = list(view[key]) if key in view else None
                recorded.append(r(key, seen if status == "ok" else None))
        if status == "ok" or (status == "info" and committed):
            model = view
        history.append(Txn(f"p{n}", status, tuple(recorded)))
    return history


@settings(max_examples=100, deadline=None)
@given(st.lists(txn_strategy, max_size=30))
def test_a_serial_history_has_no_anomaly(
    plan: list[tuple[str, list[tuple[str, str]], bool]],
) -> None:
    assert check(run_serially(plan), serializable=True) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(txn_strategy, min_size=2, max_size=20), st.data())
def test_a_read_that_misses_an_own_append_is_caught(
    plan: list[tuple[str, list[tuple[str, str]], bool]], data: st.DataObject
) -> None:
    """Complement of the test above: one corrupted read of a serial history is reported."""
    history = run_serially(plan)
    candidates = [
        (i, j)
        for i, txn in enumerate(history)
        if txn.status == "ok"
        for j, op in enumerate(txn.ops)
        if op[0] == "r" and op[2] and any(o == a(op[1], op[2][-1]) for o in txn.ops[:j])
    ]
    if not candidates:
        return
    i, j = data.draw(st.sampled_from(candidates))
    ops = list(history[i].ops)
    ops[j] = r(ops[j][1], ops[j][2][:-1])  # drop the txn's own last append from its read
    history[i] = ok(history[i].id, *ops)
    assert "internal" in [x.kind for x in check(history, serializable=True)]


# -- speed ----------------------------------------------------------------------------------


def random_history(n: int, *, lag: int, seed: int = 7) -> list[Txn]:
    """`n` transactions of 4 ops on 100 keys. Each reads one of the last `lag` committed
    states and its appends land on the newest, so `lag=1` is serial and more is no
    isolation at all."""
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(100)]
    # committed states, the last `lag` readable; their lists are replaced, never changed
    states: list[dict[str, list[int]]] = [{}]
    history = []
    for t in range(n):
        base = states[-1 - rnd.randrange(min(lag, len(states)))]
        view: dict[str, list[int]] = {}  # this txn's own writes over `base`
        ops: list[tuple[Any, ...]] = []
        for i in range(4):
            key = rnd.choice(keys)
            if rnd.random() < 0.5:
                view[key] = [*view.get(key, base.get(key, [])), t * 4 + i]
                ops.append(a(key, t * 4 + i))
            else:
                ops.append(r(key, view.get(key, base.get(key))))
        status = "ok" if rnd.random() < 0.95 else rnd.choice(["fail", "info"])
        if status != "fail":
            newest = dict(states[-1])
            for op in ops:
                if op[0] == "append":
                    newest[op[1]] = [*newest.get(op[1], []), op[2]]
            states.append(newest)
            if len(states) > 2 * lag:
                del states[:lag]
        history.append(Txn(f"w{t % 8}-{t}", status, tuple(ops)))
    return history


def timed(history: list[Txn]) -> tuple[list[Anomaly], float]:
    start = time.perf_counter()
    anomalies = check(history, serializable=True)
    return anomalies, time.perf_counter() - start


def test_20k_serial_transactions_in_under_2s() -> None:
    history = random_history(20_000, lag=1)
    anomalies, seconds = timed(history)
    assert anomalies == []
    assert seconds < 2.0, f"{seconds:.2f} s"


def test_20k_transactions_without_isolation_in_under_2s() -> None:
    """Stale reads tie the whole history into one strongly connected component; it is
    checked as fast, because the cycle searches in it are bounded."""
    history = random_history(20_000, lag=1000)
    anomalies, seconds = timed(history)
    kinds = [x.kind for x in anomalies]
    assert kinds.count("G-single") == kinds.count("G2") == 1  # one component, one of each
    assert "incompatible-order" in kinds
    assert seconds < 2.0, f"{seconds:.2f} s"
