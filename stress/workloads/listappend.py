"""List-append (Elle's model): transactions append unique values to keyed lists
and read whole lists; the history alone shows which order the database chose.

Model: KEYS records, each a list `v` (absent = empty).  A step is one
transaction of 1 to 4 operations, each an append of a value no other
transaction appends (Context.unique) or a read of a whole list.  Appends are a
`get` and a `put` of the grown list.

Invariant (checked by stress/checkers/listappend.py from the history): the
dependency graph inferred from the reads (write-write, write-read,
read-write edges) has none of the anomalies the isolation level forbids:
G0, G1a, G1b, G1c, G-single, incompatible orders, duplicates, internal
inconsistency; under serializable, no G2 either.  After the run each list in
the reopened database must be the longest order some read could extend:
every value of an acknowledged append is in it exactly once.
"""

from __future__ import annotations

from typing import Any

import mvcc

from ..checkers.listappend import Txn, check
from ..history import Event, outcomes
from . import Context, Verdict, Workload

KEYS = 24


class ListAppend(Workload):
    name = "listappend"

    def setup(self, db: mvcc.Database) -> None:
        db.table(self.name)

    def step(self, ctx: Context) -> None:
        lists, rng = ctx.db.table(self.name), ctx.rng
        plan: list[list[Any]] = []
        for _ in range(rng.randint(1, 4)):
            key = rng.randrange(KEYS)
            plan.append(["append", key, ctx.unique()] if rng.random() < 0.5 else ["r", key, None])

        def run() -> dict[str, Any]:
            ops: list[list[Any]] = []
            for kind, key, value in plan:
                doc = lists.get(key)
                values = [] if doc is None else doc["v"]
                if kind == "append":
                    lists.put(key, {"v": [*values, value]})
                    ops.append([kind, key, value])
                else:
                    ops.append([kind, key, values])
            return {"ops": ops}

        ctx.transact(self.name, {"ops": plan}, run)

    def check(self, db: mvcc.Database, events: list[Event]) -> Verdict:
        history: list[Txn] = []
        acked: set[int] = set()
        for tx in outcomes(events, self.name):
            ops = tx.invoke["ops"] if tx.status != "ok" else tx.end["ops"]  # type: ignore[index]
            history.append(Txn(tx.id, tx.status, tuple((op[0], str(op[1]), op[2]) for op in ops)))
            if tx.status == "ok":
                acked.update(op[2] for op in ops if op[0] == "append")
        # The final state, read after the reopen, is one more committed reader.
        lists = db.table(self.name)
        final_ops = []
        for key in range(KEYS):
            doc = lists.get(key)
            final_ops.append(("r", str(key), [] if doc is None else list(doc["v"])))
        history.append(Txn("final-read", "ok", tuple(final_ops)))
        anomalies = check(history, serializable=self.config.isolation == "serializable")
        present = [v for _r, _k, values in final_ops for v in values]
        missing = acked - set(present)
        figures = {
            "transactions": len(history) - 1,
            "ok": sum(t.status == "ok" for t in history) - 1,
            "anomalies": len(anomalies),
            "values": len(present),
        }
        problems = [f"{a.kind} among {', '.join(a.txns)}: {a.explanation}" for a in anomalies]
        if missing:
            problems.append(f"{len(missing)} acknowledged appends missing from the final lists")
        if problems:
            shown = "; ".join(problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            return Verdict(self.name, False, shown + more, figures)
        return Verdict(
            self.name,
            True,
            f"{figures['ok']} committed transactions, no anomaly in the dependency graph",
            figures,
        )
