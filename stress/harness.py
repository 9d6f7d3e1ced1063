"""The stress harness: `python -m stress` (DESIGN section 6).

Responsibility: run N worker processes (stress/worker.py) on one data
directory for T seconds with a mix of workloads (stress/workloads/), kill
workers and the vacuum process with SIGKILL on a seeded schedule, restart
killed workers at once, show progress, then check every invariant against
the histories and the reopened directory, report, and exit 0 only when every
check holds (1 when one fails, 2 for a usage error).

Algorithm
    1. Create the data directory (a fresh temporary one unless `--dir`, which
       must be empty or missing) and a history directory; open the database
       here and let every workload set up its table.
    2. Draw the kill schedule from the seed (`plan_kills`): a Poisson process
       of `--kill-rate` kills per second; each kill's target is a worker
       (uniform) or, one time in KILL_VACUUM_SHARE, the vacuum process.
    3. Start the workers (subprocesses: SIGKILL must hit a real process) and
       loop until the deadline: carry out the kills due (a worker is restarted
       as a new incarnation at once; the vacuum process, found through
       `db.stats()`, is left for the openers to replace, vacuum.py A5),
       restart a worker that exited on its own (recorded as a crash: a
       failed `workers` check), read the new history events, redraw progress.
    4. At the deadline the workers stop by themselves; one that has not exited
       STOP_GRACE seconds later is killed and counted as hung.
    5. Close the harness's database; reopen it (recovery when nothing else
       has it open) without autovacuum and run every workload's checker on
       the histories and this reopened state; close; run `mvcc.check` on the
       directory (the `integrity` check).
    6. Print the report; write the JSON report if asked; exit.

Invariants
(S1) The harness uses only the public `mvcc` API and `mvcc.check`.
(S2) The schedule of kills and each worker run's operations follow from
     `--seed` alone (workloads W2); the seed is printed so a failing run can
     be run again.
(S3) Every process the harness starts is ended before it returns: workers
     are waited for or killed; the temporary directories are removed after a
     run whose checks all hold (kept, and named, after one that fails).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import mvcc

from .history import Tail, read_all
from .report import Progress, Summary, render, to_json
from .workloads import WORKLOADS, Config, Verdict, by_name

__all__ = ["Options", "main", "parse", "plan_kills", "run"]

KILL_VACUUM_SHARE = 0.2
STOP_GRACE = 30.0  # seconds a worker may take past the deadline (a long audit, a close)
TICK = 0.02  # seconds between two looks at the workers (the harness's own loop)


@dataclass
class Options:
    workers: int = 4
    seconds: float = 30.0
    dir: str | None = None
    workloads: tuple[str, ...] = WORKLOADS
    isolation: str = "snapshot"
    durability: str = "full"
    passphrase_env: str | None = None
    kill_rate: float = 0.5
    seed: int | None = None
    json: str | None = None
    quiet: bool = False


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m stress",
        description="Run worker processes on one mvcc directory with kills, then check "
        "every invariant. Exit 0 when all hold, 1 when one fails, 2 on bad usage.",
    )
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--seconds", type=float, default=30.0, help="run time (default 30)")
    p.add_argument("--dir", help="data directory (empty or missing; default: a temporary one)")
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)",
    )
    p.add_argument("--isolation", choices=("snapshot", "serializable"), default="snapshot")
    p.add_argument("--durability", choices=("full", "normal", "off"), default="full")
    p.add_argument(
        "--passphrase-env",
        metavar="NAME",
        help="encrypt: the passphrase is in environment variable NAME (never argv)",
    )
    p.add_argument(
        "--kill-rate",
        type=float,
        default=0.5,
        help="SIGKILLs per second, of workers and of the vacuum process (default 0.5; 0: none)",
    )
    p.add_argument("--seed", type=int, help="reproduces kills and operations (default: random)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    a = p.parse_args(argv)
    names = tuple(n.strip() for n in a.workloads.split(",") if n.strip())
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        p.error(f"--workloads: unknown {unknown}; choose from {', '.join(WORKLOADS)}")
    if a.workers < 1:
        p.error("--workers must be at least 1")
    if a.seconds <= 0:
        p.error("--seconds must be positive")
    if a.kill_rate < 0:
        p.error("--kill-rate must be zero or more")
    if a.passphrase_env and a.passphrase_env not in os.environ:
        p.error(f"--passphrase-env: environment variable {a.passphrase_env} is not set")
    if a.dir and os.path.exists(a.dir) and (not os.path.isdir(a.dir) or os.listdir(a.dir)):
        p.error(f"--dir: {a.dir} must be an empty directory or not exist")
    return Options(
        workers=a.workers,
        seconds=a.seconds,
        dir=a.dir,
        workloads=names,
        isolation=a.isolation,
        durability=a.durability,
        passphrase_env=a.passphrase_env,
        kill_rate=a.kill_rate,
        seed=a.seed if a.seed is not None else random.randrange(2**31),
        json=a.json,
        quiet=a.quiet,
    )


def plan_kills(seed: int, seconds: float, workers: int, rate: float) -> list[tuple[float, int]]:
    """(seconds after the start, target) for every kill; target -1 is the vacuum
    process.  The last half second is left alone: a kill there tests nothing
    the earlier ones do not, and would race with the workers' own stop."""
    rng = random.Random(f"{seed}/kills")
    out: list[tuple[float, int]] = []
    at = 0.0
    while rate > 0:
        at += rng.expovariate(rate)
        if at >= seconds - 0.5:
            break
        target = -1 if rng.random() < KILL_VACUUM_SHARE else rng.randrange(workers)
        out.append((at, target))
    return out


class _Workers:
    """The worker subprocesses and their incarnations (S3)."""

    def __init__(self, config_path: str, history: str, count: int) -> None:
        self.config_path, self.history = config_path, history
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.incarnation = dict.fromkeys(range(count), -1)

    def start(self, worker: int) -> None:
        self.incarnation[worker] += 1
        inc = self.incarnation[worker]
        err = open(os.path.join(self.history, f"w{worker}.{inc}.err"), "wb")  # noqa: SIM115
        with err:
            self.procs[worker] = subprocess.Popen(
                [sys.executable, "-m", "stress.worker", self.config_path, str(worker), str(inc)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )

    def kill(self, worker: int) -> None:
        proc = self.procs[worker]
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stderr_of(self, worker: int) -> str:
        path = os.path.join(self.history, f"w{worker}.{self.incarnation[worker]}.err")
        with open(path, "rb") as f:
            tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
        return " | ".join(tail)

    def stop_all(self, grace: float) -> list[int]:
        """Wait for every worker until `grace` seconds pass; kill the rest and
        return their indexes."""
        end = time.monotonic() + grace
        hung = []
        for worker, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(worker)
                self.kill(worker)
        return hung


def run(options: Options, *, stream: Any = None) -> tuple[int, str]:
    """One harness run (module docstring); returns (exit code, report text)."""
    assert options.seed is not None
    own_dir = options.dir is None
    data = options.dir or tempfile.mkdtemp(prefix="mvcc-stress-")
    history = tempfile.mkdtemp(prefix="mvcc-stress-history-")
    started = time.time()
    config = Config(
        data=data,
        history=history,
        workloads=list(options.workloads),
        isolation=options.isolation,
        durability=options.durability,
        passphrase_env=options.passphrase_env,
        seed=options.seed,
        started=started,
        deadline=started + options.seconds,
    )
    config_path = os.path.join(history, "config.json")
    summary = Summary()
    checks: list[Verdict] = []
    workloads = [by_name(name)(config) for name in options.workloads]
    db = config.open()
    try:
        for workload in workloads:
            workload.setup(db)
        config.started = time.time()
        config.deadline = config.started + options.seconds
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(asdict(config), f)
        kills = plan_kills(options.seed, options.seconds, options.workers, options.kill_rate)
        workers = _Workers(config_path, history, options.workers)
        progress = Progress(options.seconds, stream)
        tail = Tail(history)
        for w in range(options.workers):
            workers.start(w)
        try:
            _drive(db, config, workers, kills, tail, summary, progress, options.quiet)
        finally:
            hung = workers.stop_all(STOP_GRACE)
        if not options.quiet:
            progress.done()
        summary.seconds = time.time() - config.started
        summary.add(tail.poll())
        summary.space(db.stats())
    finally:
        db.close()
    for worker in hung:
        summary.crashes.append(f"worker {worker} did not stop {STOP_GRACE:.0f} s after the end")
    checks = _check(config, workloads, summary)
    facts = {
        "workers": options.workers,
        "workloads": list(options.workloads),
        "isolation": options.isolation,
        "durability": options.durability,
        "seed": options.seed,
        "kill_rate": options.kill_rate,
        "encrypted": bool(options.passphrase_env),
    }
    text = render(summary, checks, facts)
    ok = all(c.ok for c in checks)
    if options.json:
        with open(options.json, "w", encoding="utf-8") as f:
            f.write(to_json(summary, checks, facts))
    if ok:
        shutil.rmtree(history, ignore_errors=True)
        if own_dir:
            shutil.rmtree(data, ignore_errors=True)
    else:
        text += f"\nkept for inspection: data {data}, histories {history}"
    return (0 if ok else 1), text


def _drive(
    db: mvcc.Database,
    config: Config,
    workers: _Workers,
    kills: list[tuple[float, int]],
    tail: Tail,
    summary: Summary,
    progress: Progress,
    quiet: bool,
) -> None:
    """Step 3 of the algorithm: kills, restarts, progress, until the deadline."""
    pending = list(kills)
    next_show = 0.0
    size = 0
    while time.time() < config.deadline:
        elapsed = time.time() - config.started
        while pending and pending[0][0] <= elapsed:
            _, target = pending.pop(0)
            if target >= 0:
                workers.kill(target)
                summary.kills_worker += 1
                workers.start(target)
                summary.restarts += 1
            else:
                pid = db.stats()["vacuum"]["pid"]
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    summary.kills_vacuum += 1
        for worker, proc in list(workers.procs.items()):
            code = proc.poll()
            if code is not None and time.time() < config.deadline - 0.5:
                summary.crashes.append(
                    f"worker {worker}.{workers.incarnation[worker]} exited with {code}: "
                    f"{workers.stderr_of(worker)}"
                )
                workers.start(worker)
                summary.restarts += 1
        if time.monotonic() >= next_show:
            next_show = time.monotonic() + 1.0
            summary.add(tail.poll())
            size = summary.space(db.stats())
            if not quiet:
                progress.show(summary, size)
        time.sleep(TICK)


def _check(config: Config, workloads: list[Any], summary: Summary) -> list[Verdict]:
    """Step 5: the workloads' checkers on the reopened directory, then the rest."""
    events = read_all(config.history)
    checks: list[Verdict] = []
    db = config.open(autovacuum=False)
    try:
        for workload in workloads:
            try:
                checks.append(workload.check(db, events))
            except mvcc.Error as exc:
                checks.append(Verdict(workload.name, False, f"checking raised {exc!r}"))
    finally:
        db.close()
    problems = summary.crashes + summary.errors
    checks.append(
        Verdict(
            "workers",
            not problems,
            "; ".join(problems[:4])
            if problems
            else f"no worker crashed or raised an unexpected error ({summary.restarts} restarts)",
            {"crashes": len(summary.crashes), "errors": len(summary.errors)},
        )
    )
    passphrase = os.environ[config.passphrase_env] if config.passphrase_env else None
    report = mvcc.check(config.data, passphrase=passphrase)
    detail = (
        f"{report.pages} pages, {report.records} records, {report.versions} versions, "
        f"{report.index_entries} index entries, {report.frames} WAL frames: no problem"
        if report.ok
        else "; ".join(str(p) for p in report.problems[:4])
    )
    checks.append(Verdict("integrity", report.ok, detail))
    return checks


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    code, text = run(options)
    print(text)
    return code
