"""Workloads of the stress harness: each is a model, a next step, an invariant
and a checker.

A workload owns one table (its name is the workload's).  `setup` creates it and
its initial records once, before any worker starts; `step` runs one
transaction in a worker through `Context.transact`, which records it in the
worker's history (stress/history.py H1); `check` reads the histories of every
worker run and the reopened database after the run and returns a `Verdict`.

Invariants
(W1) A step never retries: a transaction that loses a conflict is recorded as
     `fail` and the next step is drawn, so every attempt is in the history
     (the list-append checker needs the aborted ones too).
(W2) A step's choices come only from the worker's seeded random generator, so
     a seed reproduces each worker run's sequence of operations (the
     interleaving between processes is the machine's).
(W3) A checker accepts every outcome an `info` transaction (killed before its
     outcome was recorded) could have had, and nothing more.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import mvcc

from ..history import Event, Writer

__all__ = ["WORKLOADS", "Config", "Context", "Verdict", "Workload", "by_name", "fill"]


@dataclass
class Config:
    """What every process of a harness run shares (sent to workers as JSON)."""

    data: str
    history: str
    workloads: list[str]
    isolation: str = "snapshot"
    durability: str = "full"
    passphrase_env: str | None = None
    seed: int = 0
    deadline: float = 0.0  # wall clock (time.time()) when workers stop
    started: float = 0.0  # wall clock when the run began

    def open(self, **options: Any) -> mvcc.Database:
        passphrase = os.environ[self.passphrase_env] if self.passphrase_env else None
        return mvcc.open(self.data, durability=self.durability, passphrase=passphrase, **options)


@dataclass
class Verdict:
    """A check's result: `ok`, and what it saw (one line), and figures."""

    name: str
    ok: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


class Context:
    """A worker's handle for its steps: the database, its history, its generator."""

    def __init__(
        self,
        db: mvcc.Database,
        config: Config,
        writer: Writer,
        worker: int,
        incarnation: int,
        rng: random.Random,
    ) -> None:
        self.db = db
        self.config = config
        self.writer = writer
        self.worker = worker
        self.incarnation = incarnation
        self.rng = rng
        self._unique = itertools.count(1)
        self._local = threading.local()  # per thread: the id `transact` is running
        self._background: threading.Thread | None = None

    @property
    def tx_id(self) -> str:
        """The id of the transaction `transact` is running on this thread."""
        return str(self._local.tx_id)

    def background(self, work: Callable[[], object]) -> bool:
        """Run `work` on the worker's second thread unless it is busy (then
        False).  A long reader runs there, so that the worker's own transactions
        go on in the same process meanwhile, as in a threaded web server: they
        move its page view and its node cache to newer checkpoints, and the
        long reader then really reads its own generation's pages from the file
        (checkpoint.py K4 is what keeps them intact)."""
        if self._background is not None and self._background.is_alive():
            return False
        self._background = threading.Thread(target=work, name="stress-background")
        self._background.start()
        return True

    def join(self) -> None:
        if self._background is not None:
            self._background.join()

    def unique(self) -> int:
        """A value no other transaction of the harness run will use (list-append)."""
        return ((self.worker * 10_000 + self.incarnation) << 32) | next(self._unique)

    def transact(
        self,
        workload: str,
        planned: dict[str, Any],
        body: Callable[[], dict[str, Any]],
        *,
        readonly: bool = False,
    ) -> dict[str, Any] | None:
        """Run `body` in one transaction; record invoke, then ok or fail (H1, W1).
        Returns the body's result when the commit returned, else None."""
        tx_id = self._local.tx_id = self.writer.next_id()
        self.writer.write({"e": "invoke", "id": tx_id, "wl": workload, **planned})
        began = time.perf_counter()
        end: Event = {"e": "fail", "id": tx_id, "wl": workload}
        try:
            with self.db.transaction(isolation=self.config.isolation, readonly=readonly):
                result = body()
        except mvcc.ConflictError:
            end["why"] = "conflict"
        except mvcc.UniqueViolation:
            end["why"] = "unique"
        except mvcc.Error as exc:
            end["why"] = "error"
            end["error"] = f"{type(exc).__name__}: {exc}"
        else:
            end = {"e": "ok", "id": tx_id, "wl": workload, **result}
        end["dt"] = round(time.perf_counter() - began, 6)
        end["ro"] = readonly
        self.writer.write(end)
        return result if end["e"] == "ok" else None


def fill(db: mvcc.Database, name: str, count: int, doc: dict[str, Any]) -> None:
    """Setup's usual start: records 0..count-1 of table `name`, each `doc`."""
    table = db.table(name)
    with db.transaction():
        for i in range(count):
            table.put(i, dict(doc))


class Workload:
    """The interface every workload implements (module docstring)."""

    name: ClassVar[str]
    weight: ClassVar[float] = 1.0  # share of a worker's steps in a mix

    def __init__(self, config: Config) -> None:
        self.config = config

    def setup(self, db: mvcc.Database) -> None:
        raise NotImplementedError

    def step(self, ctx: Context) -> None:
        raise NotImplementedError

    def check(self, db: mvcc.Database, events: list[Event]) -> Verdict:
        raise NotImplementedError


def _registry() -> dict[str, type[Workload]]:
    from .bank import Bank
    from .counters import Counters
    from .durability import Durability
    from .listappend import ListAppend
    from .unique import Unique
    from .writeskew import WriteSkew

    return {w.name: w for w in (Bank, Counters, ListAppend, WriteSkew, Durability, Unique)}


WORKLOADS: tuple[str, ...] = ("bank", "counters", "listappend", "writeskew", "durability", "unique")


def by_name(name: str) -> type[Workload]:
    return _registry()[name]
