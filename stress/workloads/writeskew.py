"""Write skew: the on-call doctors (two records, at least one must stay on).

Model: PAIRS pairs of records `{"on": bool}`, all on at setup.  A step reads
both records of a pair and then writes one of them, deciding from what it read:
both on: take one off call; one on: put the other back on; both off (which a
committed read should only ever see when write skew happened): put one back.
Between the reads and the write it pauses THINK seconds, as an application
computing its answer would; that widens the window two steps overlap in.

Invariant
(K1) Under serializable, no committed transaction ever reads a pair with
     both off, and no pair ends the run with both off: two steps that each
     took a different doctor off call read what the other wrote, and the
     second to commit aborts (transaction.py T3).
     Under snapshot isolation that is write skew, which snapshot isolation
     allows: the check then counts it and passes.
"""

from __future__ import annotations

import time
from typing import Any

import mvcc

from ..history import Event, outcomes
from . import Context, Verdict, Workload, fill

PAIRS = 3
THINK = 0.002


class WriteSkew(Workload):
    name = "writeskew"

    def setup(self, db: mvcc.Database) -> None:
        fill(db, self.name, 2 * PAIRS, {"on": True})

    def step(self, ctx: Context) -> None:
        table, rng = ctx.db.table(self.name), ctx.rng
        pair = rng.randrange(PAIRS)
        pick = rng.randrange(2)

        def run() -> dict[str, Any]:
            seen = [table.get(2 * pair)["on"], table.get(2 * pair + 1)["on"]]
            time.sleep(THINK)  # pacing: the application's think time
            if all(seen):
                table.put(2 * pair + pick, {"on": False})
            elif any(seen):
                table.put(2 * pair + seen.index(False), {"on": True})
            else:
                table.put(2 * pair + pick, {"on": True})
            return {"seen": seen}

        ctx.transact(self.name, {"pair": pair}, run)

    def check(self, db: mvcc.Database, events: list[Event]) -> Verdict:
        skews = [
            tx.id
            for tx in outcomes(events, self.name)
            if tx.status == "ok" and not any(tx.end["seen"])  # type: ignore[index]
        ]
        table = db.table(self.name)
        final_off = [
            p for p in range(PAIRS) if not table.get(2 * p)["on"] and not table.get(2 * p + 1)["on"]
        ]
        figures = {"write_skews_seen": len(skews), "pairs_off_at_end": len(final_off)}
        if self.config.isolation == "serializable" and (skews or final_off):
            return Verdict(
                self.name,
                False,
                f"write skew under serializable: {len(skews)} "
                f"transactions read a pair with both off (e.g. {skews[:3]}), "
                f"{len(final_off)} pairs end with both off",
                figures,
            )
        if self.config.isolation == "serializable":
            return Verdict(self.name, True, "no write skew (serializable forbids it)", figures)
        return Verdict(
            self.name,
            True,
            f"write skew seen {len(skews)} times; snapshot isolation allows it",
            figures,
        )
