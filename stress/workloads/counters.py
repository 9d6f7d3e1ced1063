"""Counters: read-modify-write increments, none of which may be lost.

Model: COUNTERS records holding `n`, all 0 at setup.  A step reads one
counter and writes it back plus one (a `get` then a `put`: the pattern a lost
update breaks; `update(id, fn)` would hide it inside one call).

Invariants
(C1) No lost update: after the run, each counter's value is at least its
     acknowledged increments (ok) and at most those plus the increments whose
     outcome is unknown (info, W3).  Without kills the two bounds meet.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import mvcc

from ..history import Event, outcomes
from . import Context, Verdict, Workload, fill

COUNTERS = 8


class Counters(Workload):
    name = "counters"

    def setup(self, db: mvcc.Database) -> None:
        fill(db, self.name, COUNTERS, {"n": 0})

    def step(self, ctx: Context) -> None:
        counters = ctx.db.table(self.name)
        key = ctx.rng.randrange(COUNTERS)

        def increment() -> dict[str, Any]:
            counters.put(key, {"n": counters.get(key)["n"] + 1})
            return {}

        ctx.transact(self.name, {"key": key}, increment)

    def check(self, db: mvcc.Database, events: list[Event]) -> Verdict:
        acked: Counter[int] = Counter()
        unknown: Counter[int] = Counter()
        for tx in outcomes(events, self.name):
            if tx.status == "ok":
                acked[tx.invoke["key"]] += 1
            elif tx.status == "info":
                unknown[tx.invoke["key"]] += 1
        counters = db.table(self.name)
        wrong = []
        for key in range(COUNTERS):
            value = counters.get(key)["n"]
            low, high = acked[key], acked[key] + unknown[key]
            if value < low:
                wrong.append(
                    f"counter {key} = {value} < {low} acknowledged increments (lost updates)"
                )
            elif value > high:
                wrong.append(
                    f"counter {key} = {value} > {low} acknowledged + {unknown[key]} unknown"
                )
        figures = {"acknowledged": sum(acked.values()), "unknown": sum(unknown.values())}
        if wrong:
            return Verdict(self.name, False, "; ".join(wrong), figures)
        return Verdict(
            self.name,
            True,
            f"{figures['acknowledged']} acknowledged increments "
            f"all present ({figures['unknown']} of unknown outcome)",
            figures,
        )
