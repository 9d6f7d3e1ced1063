"""Bank transfers: money moves between accounts and is never made or lost.

Model: ACCOUNTS accounts of INITIAL each; the total is ACCOUNTS * INITIAL.
Steps:
- transfer (most steps): read two accounts; if the source holds the amount,
  write both (source - amount, destination + amount).
- audit: a readonly transaction reads every account one `get` at a time
  (separate reads, so a snapshot taken per read instead of per transaction
  shows, faults.py F4) and records the total and the smallest balance.
- long audit: the same, pausing between reads, so that it spans vacuum
  passes, on the worker's second thread while the worker goes on (a vacuum
  that ignored the horizon, faults.py F5, would reuse the pages it reads).

Invariants
(B1) Every audit's total is the constant (a snapshot never shows half a
     transfer, nor a transfer lost to a concurrent one).
(B2) No balance is ever below zero: a transfer checks its source, and
     first-committer-wins on the source makes that check hold at commit
     under snapshot isolation too, not only under serializable.
(B3) After the run the reopened database's total is the constant.
"""

from __future__ import annotations

import time
from typing import Any

import mvcc

from ..history import Event, outcomes
from . import Context, Verdict, Workload, fill

ACCOUNTS = 100
INITIAL = 100
# Padding spreads the accounts over several leaves, which transfers rewrite:
# a long audit then reads, late in its life, pages it has not read (or cached)
# yet, and reused pages (F5) cannot hide behind its node cache.
PAD = "x" * 300
LONG_PAUSE = 0.02  # seconds between two reads of a long audit: ~2 s in all
LONG_SHARE = 0.05  # of bank steps; one at a time per worker, on its second thread


class Bank(Workload):
    name = "bank"

    def setup(self, db: mvcc.Database) -> None:
        fill(db, self.name, ACCOUNTS, {"balance": INITIAL, "pad": PAD})

    def step(self, ctx: Context) -> None:
        rng, accounts = ctx.rng, ctx.db.table(self.name)
        roll = rng.random()
        if roll < 0.8:
            src, dst = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 30)

            def transfer() -> dict[str, Any]:
                a, b = accounts.get(src), accounts.get(dst)
                if a["balance"] < amount:
                    return {"moved": 0}
                accounts.put(src, {"balance": a["balance"] - amount, "pad": PAD})
                accounts.put(dst, {"balance": b["balance"] + amount, "pad": PAD})
                return {"moved": amount}

            ctx.transact(self.name, {"src": src, "dst": dst, "amount": amount}, transfer)
            return
        long = roll > 1 - LONG_SHARE

        def audit(pause: float) -> dict[str, Any]:
            balances = []
            for i in range(ACCOUNTS):
                doc = accounts.get(i)
                balances.append(None if doc is None else doc["balance"])
                if pause:
                    time.sleep(pause)  # pacing: a long reader, not synchronisation
            return {"balances": balances}

        def run(pause: float) -> None:
            planned = {"audit": True, "long": bool(pause)}
            ctx.transact(self.name, planned, lambda: audit(pause), readonly=True)

        # A long audit runs on the worker's second thread (Context.background);
        # while one runs there, this step audits at once instead.
        if not (long and ctx.background(lambda: run(LONG_PAUSE))):
            run(0.0)

    def check(self, db: mvcc.Database, events: list[Event]) -> Verdict:
        expected = ACCOUNTS * INITIAL
        bad: list[str] = []
        audits = 0
        for tx in outcomes(events, self.name):
            if tx.status != "ok" or "balances" not in tx.end:  # type: ignore[operator]
                continue
            audits += 1
            balances = tx.end["balances"]  # type: ignore[index]
            if None in balances or sum(balances) != expected or min(balances) < 0:
                bad.append(f"{tx.id} saw a total of {_total(balances)}, lowest {_lowest(balances)}")
        accounts = db.table(self.name)
        final = [accounts.get(i, {"balance": None})["balance"] for i in range(ACCOUNTS)]
        figures = {"audits": audits, "bad_audits": len(bad), "final_total": _total(final)}
        if bad:
            shown = "; ".join(bad[:3])
            return Verdict(
                self.name,
                False,
                f"{len(bad)} audits broke the total {expected} or went below zero: {shown}",
                figures,
            )
        if None in final or sum(final) != expected or min(final) < 0:
            return Verdict(
                self.name,
                False,
                f"after the run the accounts total "
                f"{_total(final)}, lowest {_lowest(final)}, expected {expected}",
                figures,
            )
        return Verdict(
            self.name,
            True,
            f"{audits} audits and the final state all total {expected}, no balance below zero",
            figures,
        )


def _total(balances: list[Any]) -> Any:
    return None if None in balances else sum(balances)


def _lowest(balances: list[Any]) -> Any:
    return min((b for b in balances if b is not None), default=None)
