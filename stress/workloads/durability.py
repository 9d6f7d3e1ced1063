"""Durability: every acknowledged commit survives kills and a reopen.

Model: a set of records, each inserted by one transaction and naming it.  A
step inserts one record `{"tx": <transaction id>}` and records its id.

Invariants
(U1) Every record of an acknowledged (ok) insert is in the reopened database
     with its content.
(U2) Every record in the database was inserted by a transaction that was
     invoked (ok or info, never fail): nothing appears from nowhere and no
     aborted write lands.
"""

from __future__ import annotations

from typing import Any

import mvcc

from ..history import Event, outcomes
from . import Context, Verdict, Workload


class Durability(Workload):
    name = "durability"

    def setup(self, db: mvcc.Database) -> None:
        db.table(self.name)

    def step(self, ctx: Context) -> None:
        table = ctx.db.table(self.name)

        def insert() -> dict[str, Any]:
            return {"pk": table.insert({"tx": ctx.tx_id})}

        ctx.transact(self.name, {}, insert)

    def check(self, db: mvcc.Database, events: list[Event]) -> Verdict:
        acked: dict[str, Any] = {}
        possible: set[str] = set()
        for tx in outcomes(events, self.name):
            if tx.status == "ok":
                acked[tx.id] = tx.end["pk"]  # type: ignore[index]
            if tx.status != "fail":
                possible.add(tx.id)
        records = db.table(self.name).find()
        present = {doc["tx"]: doc["_id"] for doc in records}
        lost = [tx for tx, pk in acked.items() if present.get(tx) != pk]
        strange = [tx for tx in present if tx not in possible]
        if len(present) != len(records):
            strange.append(f"{len(records) - len(present)} duplicated transactions")
        figures = {"acknowledged": len(acked), "present": len(present), "lost": len(lost)}
        if lost or strange:
            parts = []
            if lost:
                parts.append(f"{len(lost)} acknowledged commits lost, e.g. {lost[:3]}")
            if strange:
                parts.append(f"{len(strange)} records no invoked commit wrote, e.g. {strange[:3]}")
            return Verdict(self.name, False, "; ".join(parts), figures)
        return Verdict(
            self.name,
            True,
            f"all {len(acked)} acknowledged inserts present; "
            f"{len(present) - len(acked)} of unknown outcome landed",
            figures,
        )
