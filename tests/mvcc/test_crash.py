"""kill -9 at random moments: inside commits, inside checkpoints, anywhere.

One spawned "fork server" process imports mvcc once, then for every round
forks two writer children on one directory, lets them commit, and kills both
with SIGKILL: on a timer, or from inside the code at a chosen point (a
monkeypatched hook that SIGKILLs its own process: after the frame is appended
and before it is synced, between a checkpoint's page writes, before its meta,
before it publishes, before it deletes WAL segments).  After each round the
server opens the directory alone (so recovery runs) and checks:

- every commit a writer acknowledged (wrote to its ack file after `commit`
  returned) is there;
- no transaction is partly visible: each writes its id into tables "a" and
  "b" and bumps a counter, so the two id sets are equal and the counter
  equals their size;
- `mvcc.check` finds nothing wrong: the page file's structure, and every
  table, index tree and vacuum list agreeing with the others (a checkpoint
  killed anywhere leaves a consistent generation), and the WAL after it.

Invariants cited: database.py D3 (acknowledged means durable), checkpoint.py
K1 (a crash anywhere in a checkpoint loses nothing).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SPAWN

pytestmark = pytest.mark.timeout(600)

ROUNDS = 110  # two writers killed per round: 220 SIGKILLs
MODES = ("timer", "after-append", "page-write", "before-meta", "before-publish", "segments")


def _die(path: str, mode: str) -> None:
    """SIGKILL this process, leaving a mark that the kill came from inside."""
    os.close(os.open(os.path.join(path, f"died-{mode}-{os.getpid()}"), os.O_CREAT, 0o644))
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(path: str, mode: str, rng: random.Random) -> None:
    """Make this (child) process SIGKILL itself at the point `mode` names."""
    from mvcc import checkpoint, commitlog, database
    from storage import pagefile, wal

    checkpoint.CHECKPOINT_FRAMES = 15  # checkpoint inline every few commits
    database.WAL_SEGMENT_SIZE = 4096  # and delete segments often

    def hook(cls: Any, name: str, chance: float) -> None:
        original = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if rng.random() < chance:
                _die(path, mode)
            return original(*args, **kwargs)

        setattr(cls, name, wrapper)

    if mode == "after-append":
        hook(commitlog.CommitLog, "wait_durable", 0.15)
    elif mode == "page-write":
        hook(pagefile.PageFile, "_write_page", 0.05)
    elif mode == "before-meta":
        hook(pagefile.PageFile, "_write_meta", 0.5)
    elif mode == "before-publish":
        hook(database.Database, "_publish_checkpoint", 0.5)
    elif mode == "segments":
        hook(wal.WAL, "delete_before", 0.5)


def _writer(path: str, ack_path: str, mode: str, seed: int) -> None:
    """A child: commit transactions until killed, acknowledging each."""
    import mvcc

    rng = random.Random(seed)
    _arm(path, mode, rng)
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with mvcc.open(path, lock_timeout=20) as db:
        a, b, counter = db.table("a", indexes=["n"]), db.table("b"), db.table("counter")

        @db.transactional(retries=1000)
        def one(txid: str) -> None:
            a.put(txid, {"n": len(txid)})
            b.put(txid, {"pad": "x" * rng.randint(0, 300)})
            counter.update("n", lambda d: {**d, "n": d["n"] + 1})

        for i in range(10_000):
            txid = f"{seed}-{i}"
            one(txid)
            os.write(ack, f"{txid}\n".encode())
    os._exit(0)  # ran out of work before the kill: still a clean round


def _check(path: str, acked: set[str]) -> str | None:
    import mvcc

    with mvcc.open(path) as db:  # recovery runs here; the checker attaches next to it
        a = {d["_id"] for d in db.table("a")}
        b = {d["_id"] for d in db.table("b")}
        n = db.table("counter").get("n")["n"]
        indexed = set(db.table("a").find(mvcc.where("n") >= 0).ids())
        report = mvcc.check(path)
    if indexed != a:
        return f"the index on a.n answers {len(indexed)} records, a scan {len(a)}"
    if not acked <= a:
        return f"acknowledged commits lost: {sorted(acked - a)[:5]}"
    if a != b or n != len(a):
        return f"a transaction is partly visible: |a|={len(a)} |b|={len(b)} counter={n}"
    if not report.ok:
        return f"checker: {report}"
    return None


def _fork_server(path: str, rounds: int, seed: int, conn: Any) -> None:
    import mvcc

    rng = random.Random(seed)
    with mvcc.open(path) as db:
        db.table("counter").put("n", {"n": 0})
    acked: set[str] = set()
    kills = 0
    modes: dict[str, int] = {}
    inside: dict[str, int] = {}  # kills a hook made at its point, by mode

    def schedule() -> Any:
        """The rounds, each mode in turn; then, on a machine too slow for some
        injected point to be reached in its share, up to as many rounds again of
        the modes whose point no kill has hit yet (the test asserts each is)."""
        for r in range(rounds):
            yield r, MODES[r % len(MODES)]
        for r in range(rounds, 2 * rounds):
            missing = [m for m in MODES if m != "timer" and m not in inside]
            if not missing:
                return
            yield r, missing[r % len(missing)]

    for r, mode in schedule():
        children = []
        for c in range(2):
            ack_path = os.path.join(path, f"ack-{r}-{c}")
            pid = os.fork()
            if pid == 0:
                try:
                    _writer(path, ack_path, mode, seed * 1000 + r * 2 + c)
                except BaseException:
                    with open(ack_path + ".error", "w") as f:
                        f.write(traceback.format_exc())
                finally:
                    os._exit(3)
            children.append((pid, ack_path))
        time.sleep(rng.uniform(0.005, 0.06))  # let them commit for a while
        for pid, _ack in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid, ack_path in children:
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                kills += 1
                modes[mode] = modes.get(mode, 0) + 1
            elif os.waitstatus_to_exitcode(status) != 0:
                why = ""
                if os.path.exists(ack_path + ".error"):
                    with open(ack_path + ".error") as f:
                        why = f.read()
                conn.send(("error", f"round {r}: a {mode} writer exited with {status}: {why}"))
                return
            if os.path.exists(ack_path):
                with open(ack_path) as f:
                    acked.update(line.strip() for line in f if line.strip())
                os.unlink(ack_path)
        for name in os.listdir(path):
            if name.startswith("died-"):
                inside[mode] = inside.get(mode, 0) + 1
                os.unlink(os.path.join(path, name))
        problem = _check(path, acked)
        if problem is not None:
            conn.send(("error", f"round {r} ({mode}): {problem}"))
            return
    conn.send(("ok", kills, len(acked), modes, inside))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_random_points_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    parent, child = SPAWN.Pipe()
    server = SPAWN.Process(
        target=_fork_server, args=(str(tmp_path), ROUNDS, 20261123, child), daemon=True
    )
    server.start()
    try:
        assert parent.poll(540), "the fork server reported nothing"
        result = parent.recv()
    finally:
        if server.is_alive():
            server.kill()
        server.join(30)
    assert result[0] == "ok", result[1]
    _, kills, acked, modes, inside = result
    assert kills >= 200, (kills, modes)
    assert acked > 200, acked  # the writers got real work done between kills
    assert set(modes) == set(MODES), modes
    # Every injected point was really hit (a hook killed its process there).
    assert set(inside) == set(MODES) - {"timer"}, inside
