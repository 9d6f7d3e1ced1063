"""Histories: what each worker did, one JSON line per event, per worker run.

Every worker process (one *run*: a worker index and an incarnation, which a
kill ends and a restart begins anew) appends its events to its own file,
`w<worker>.<incarnation>.jsonl` in the history directory, with one `os.write`
per line on a descriptor opened O_APPEND.

Invariants
(H1) An event is written only after what it reports happened: `ok` after the
     transaction's commit returned, `fail` after its error was raised.  So an
     `ok` line is an acknowledged commit, and a transaction with an `invoke`
     line but neither `ok` nor `fail` (its worker was killed in between) has
     an unknown outcome: the checkers call it `info`, as Jepsen does.
(H2) A line is one write(2) of a few hundred bytes to a local file: SIGKILL
     cannot tear it, since the kernel completes a write to the page cache
     before the process dies.  The reader still ignores a last line without its
     newline (a torn line under another OS or filesystem must not be read as
     an event).
(H3) Transaction ids are unique in a run of the harness: `w<worker>.<inc>-<n>`,
     also when a worker runs a transaction on a second thread (a long audit).

Events (fields besides `e` and `id`)
    open    dt (seconds to open the database: the recovery time after a kill)
    invoke  wl (the workload), and the workload's planned fields
    ok      wl, dt (seconds from begin to the commit's return), result fields
    fail    wl, dt, why ("conflict", "unique", or "error" with `error`)
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Event", "Outcome", "Tail", "Writer", "outcomes", "read_all"]

Event = dict[str, Any]


class Writer:
    """Appends one worker run's events (H1, H2)."""

    def __init__(self, directory: str, worker: int, incarnation: int) -> None:
        self.prefix = f"w{worker}.{incarnation}"
        path = os.path.join(directory, f"{self.prefix}.jsonl")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._ids = itertools.count(1)  # next() is atomic under the GIL: threads share it

    def next_id(self) -> str:
        return f"{self.prefix}-{next(self._ids)}"

    def write(self, event: Event) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())

    def close(self) -> None:
        os.close(self._fd)


def _lines(data: bytes) -> tuple[list[Event], int]:
    """The whole lines of `data` as events, and how many bytes they took (H2)."""
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line]
    return events, end


class Tail:
    """Reads the new events of every history file in a directory, incrementally
    (the live progress display)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._offsets: dict[str, int] = {}

    def poll(self) -> list[Event]:
        out: list[Event] = []
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".jsonl"):
                continue
            path = os.path.join(self.directory, name)
            offset = self._offsets.get(name, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                events, used = _lines(f.read())
            self._offsets[name] = offset + used
            out.extend(events)
        return out


def read_all(directory: str) -> list[Event]:
    """Every event of every run, file by file (each file in its own order)."""
    return Tail(directory).poll()


@dataclass
class Outcome:
    """One transaction: its invoke fields, and the ok/fail event if any (H1)."""

    id: str
    wl: str
    invoke: Event
    end: Event | None = None

    @property
    def status(self) -> str:
        """ "ok", "fail" or "info" (unknown outcome)."""
        return "info" if self.end is None else str(self.end["e"])


def outcomes(events: list[Event], workload: str) -> Iterator[Outcome]:
    """The transactions of one workload, with their outcome."""
    by_id: dict[str, Outcome] = {}
    for event in events:
        if event.get("wl") != workload:
            continue
        if event["e"] == "invoke":
            by_id[event["id"]] = Outcome(event["id"], workload, event)
        elif event["id"] in by_id:
            by_id[event["id"]].end = event
    return iter(by_id.values())
