"""An indexed table with a unique field: the index agrees with the table, and no
unique value is ever held twice.

Model: records `{"email": "u<n>", "age": <0..AGES-1>}` with an index on `age`
and a unique index on `email`; emails come from a pool of POOL, so inserts and
email changes collide often.  Steps: insert; change a record's email; delete a
record; query one age through the index and by a full scan (a callable
query, which no index can serve) in one readonly transaction.

Invariants
(Q1) In every snapshot, the records the index finds for an age are exactly
     those a full scan finds.
(Q2) No two records hold one email: after the run, in the reopened database,
     and every query's answer (one snapshot) shows none twice.
"""

from __future__ import annotations

from typing import Any

import mvcc
from mvcc import where

from ..history import Event, outcomes
from . import Context, Verdict, Workload

POOL = 60
AGES = 8


class Unique(Workload):
    name = "unique"

    def setup(self, db: mvcc.Database) -> None:
        db.table(self.name, indexes=["age"], unique=["email"])

    def step(self, ctx: Context) -> None:
        table, rng = ctx.db.table(self.name), ctx.rng
        roll, age, email = rng.random(), rng.randrange(AGES), f"u{rng.randrange(POOL)}"
        if roll < 0.4:

            def insert() -> dict[str, Any]:
                return {"pk": table.insert({"email": email, "age": age})}

            ctx.transact(self.name, {"op": "insert", "email": email, "age": age}, insert)
        elif roll < 0.75:
            change = roll < 0.6

            def modify() -> dict[str, Any]:
                doc = table.find_one(where("age") == age)
                if doc is None:
                    return {"pk": None}
                if change:
                    table.update(doc["_id"], {"email": email})
                else:
                    table.delete(doc["_id"])
                return {"pk": doc["_id"]}

            op = "change" if change else "delete"
            ctx.transact(self.name, {"op": op, "email": email, "age": age}, modify)
        else:

            def query() -> dict[str, Any]:
                by_index = sorted(table.find(where("age") == age).ids())
                by_scan = sorted(table.find(lambda d: d.get("age") == age).ids())
                emails = [d["email"] for d in table.find(where("age") == age)]
                return {"index": by_index, "scan": by_scan, "emails": emails}

            ctx.transact(self.name, {"op": "query", "age": age}, query, readonly=True)

    def check(self, db: mvcc.Database, events: list[Event]) -> Verdict:
        bad: list[str] = []
        queries = 0
        for tx in outcomes(events, self.name):
            if tx.status != "ok" or tx.invoke.get("op") != "query":
                continue
            queries += 1
            end = tx.end
            assert end is not None
            if end["index"] != end["scan"]:
                bad.append(f"{tx.id}: index found {end['index']}, scan {end['scan']}")
            if len(set(end["emails"])) != len(end["emails"]):
                bad.append(f"{tx.id}: one email twice among {end['emails']}")
        table = db.table(self.name)
        records = table.find()
        emails = [doc["email"] for doc in records]
        if len(set(emails)) != len(emails):
            dup = sorted({e for e in emails if emails.count(e) > 1})
            bad.append(f"after the run, emails held twice: {dup}")
        for age in range(AGES):
            by_index = sorted(table.find(where("age") == age).ids())
            by_scan = sorted(d["_id"] for d in records if d.get("age") == age)
            if by_index != by_scan:
                bad.append(f"after the run, age {age}: index {by_index}, scan {by_scan}")
        figures = {"queries": queries, "records": len(records), "problems": len(bad)}
        if bad:
            return Verdict(self.name, False, "; ".join(bad[:4]), figures)
        return Verdict(
            self.name,
            True,
            f"{queries} index queries agreed with scans; "
            f"{len(records)} records, no email held twice",
            figures,
        )
