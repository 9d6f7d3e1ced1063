"""Fault switches: each one disables one safety mechanism.  For testing only.

The stress harness (`python -m stress`) claims to catch the bugs that break
the promises of DESIGN section 1.  These switches plant such bugs on purpose
so that its tests can show each one caught (stress/README: "the harness
catches real bugs").  Nothing else may set them: a database opened with any
of them on loses data or isolation by design.

They are read once, at open, from the environment variable `MVCC_FAULTS`: a
comma-separated list of the names below.  An unknown name is a
ValidationError naming it, so a typo cannot silently test the healthy engine.
Child processes (the vacuum process among them) inherit the variable.

Switches
(F1) `skip-write-conflict`: the commit does not check whether a record it
     writes changed after its snapshot: first-committer-wins is gone, so
     updates are lost (database.py D2).
(F2) `skip-read-validation`: a serializable commit does not check what it
     read (records, ranges, index ranges): write skew and phantoms commit
     (transaction.py T3).
(F3) `ack-before-sync`: `commit()` returns at once and the commit is done by
     a thread `ACK_DELAY` seconds later: a process killed in between loses a
     commit it acknowledged, and a conflict found then is dropped unseen
     (database.py D3).
(F4) `late-snapshot`: a transaction takes a new snapshot at every read and
     write instead of one at begin: reads of one transaction mix states, and
     a write validates against the state at the write, not at the read that
     decided it (database.py D1).
(F5) `vacuum-ignores-horizon`: a checkpoint prunes versions and reuses pages
     as if no snapshot older than the newest existed (checkpoint.py K3, K4).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from .errors import ValidationError

__all__ = ["ACK_DELAY", "ENV", "NONE", "Faults", "from_environment", "later"]

ENV = "MVCC_FAULTS"
ACK_DELAY = 0.05  # F3: long enough that a kill lands in the window most of the time


@dataclass(frozen=True)
class Faults:
    """Which switches are on (all off in `NONE`); the hot paths test one bool."""

    skip_write_conflict: bool = False
    skip_read_validation: bool = False
    ack_before_sync: bool = False
    late_snapshot: bool = False
    vacuum_ignores_horizon: bool = False

    def names(self) -> list[str]:
        return [f.name.replace("_", "-") for f in fields(self) if getattr(self, f.name)]


NONE = Faults()
NAMES = tuple(f.name.replace("_", "-") for f in fields(Faults))


def from_environment() -> Faults:
    """The switches `MVCC_FAULTS` turns on; NONE when it is unset or empty."""
    raw = os.environ.get(ENV, "")
    if not raw.strip():
        return NONE
    on = {}
    for name in (part.strip() for part in raw.split(",")):
        if not name:
            continue
        if name not in NAMES:
            raise ValidationError(
                f"{ENV} names an unknown fault switch {name!r}; known: {', '.join(NAMES)}",
                field=ENV,
            )
        on[name.replace("-", "_")] = True
    return Faults(**on)


_pending: threading.Thread | None = None
_pending_latch = threading.Lock()


def later(work: Callable[[], object]) -> None:
    """F3: run `work` on a thread after ACK_DELAY, one at a time per process (the
    previous one is waited for first, so deferred commits keep their order).
    Its errors are swallowed: that is the bug the switch plants."""
    global _pending

    def run() -> None:
        time.sleep(ACK_DELAY)
        try:
            work()
        except Exception:  # the acknowledged commit is lost: F3's point
            return

    with _pending_latch:
        if _pending is not None:
            _pending.join()
        _pending = threading.Thread(target=run, name="mvcc-fault-ack", daemon=True)
        _pending.start()
