"""The harness end to end: short clean runs exit 0, and each fault switch
(mvcc/faults.py) makes it exit 1 naming the check that caught it.

Every run is a real `python -m stress` subprocess with a timeout; its workers
are its own subprocesses, killed with SIGKILL on the seeded schedule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stress.harness import parse, plan_kills

RUN_TIMEOUT = 120.0


def harness(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, **(env or {})},
    )


def test_short_clean_run_with_kills_passes_every_check(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = harness(
        "--workers",
        "3",
        "--seconds",
        "5",
        "--kill-rate",
        "1.5",
        "--seed",
        "7",
        "--json",
        str(report),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all checks hold" in done.stdout
    data = json.loads(report.read_text())
    names = {c["name"] for c in data["checks"]}
    assert names == {
        "bank",
        "counters",
        "listappend",
        "writeskew",
        "durability",
        "unique",
        "workers",
        "integrity",
    }
    assert all(c["ok"] for c in data["checks"])
    assert data["commits"] > 100
    assert data["kills"]["workers"] >= 1  # seed 7 draws worker kills in 5 s
    assert data["restarts"] >= data["kills"]["workers"]
    assert data["seed"] == 7


def test_serializable_encrypted_run_passes(tmp_path: Path) -> None:
    done = harness(
        "--workers",
        "2",
        "--seconds",
        "4",
        "--kill-rate",
        "1",
        "--seed",
        "3",
        "--isolation",
        "serializable",
        "--durability",
        "normal",
        "--passphrase-env",
        "STRESS_TEST_PASSPHRASE",
        "--dir",
        str(tmp_path / "data"),
        env={"STRESS_TEST_PASSPHRASE": "correct horse"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no write skew (serializable forbids it)" in done.stdout
    assert "encrypted" in done.stdout


# switch -> (harness arguments that exercise it, the check that must fail)
FAULTS = {
    "skip-write-conflict": (["--workloads", "counters", "--kill-rate", "0"], "counters"),
    "skip-read-validation": (
        ["--workloads", "writeskew", "--isolation", "serializable", "--kill-rate", "0"],
        "writeskew",
    ),
    "ack-before-sync": (["--workloads", "durability", "--kill-rate", "3"], "durability"),
    "late-snapshot": (["--workloads", "bank", "--kill-rate", "0"], "bank"),
    # Pages reused under a long audit: the audit reads a page a later checkpoint
    # rewrote, and storage's stale-page check raises CorruptionError in it.  It
    # takes vacuum passes during long audits: 8 s caught it in 8 runs of 8, 4 s
    # in 4 of 6.
    "vacuum-ignores-horizon": (
        ["--workloads", "bank", "--kill-rate", "0", "--seconds", "8"],
        "workers",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_switch_is_caught(fault: str) -> None:
    args, check = FAULTS[fault]
    done = harness(
        "--workers", "3", "--seconds", "4", "--seed", "1", *args, env={"MVCC_FAULTS": fault}
    )
    assert done.returncode == 1, done.stdout + done.stderr
    failed = done.stdout.split("FAILED: ")[-1].splitlines()[0].split(", ")
    assert check in failed, done.stdout
    assert f"FAIL  {check}" in done.stdout


def test_an_unknown_fault_switch_is_an_error_not_a_healthy_run() -> None:
    done = harness("--seconds", "1", env={"MVCC_FAULTS": "skip-everything"})
    assert done.returncode != 0
    assert "skip-everything" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workloads", "bank,nope"], "unknown ['nope']"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--seconds", "-1"], "--seconds must be positive"),
        (["--passphrase-env", "SURELY_UNSET_VARIABLE_1234"], "is not set"),
        (["--isolation", "read-committed"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_naming_the_option(args: list[str], message: str) -> None:
    done = harness(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_non_empty_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    done = harness("--dir", str(tmp_path))
    assert done.returncode == 2
    assert "must be an empty directory" in done.stderr


def test_the_seed_reproduces_the_kill_schedule() -> None:
    assert plan_kills(5, 30, 4, 0.5) == plan_kills(5, 30, 4, 0.5)
    assert plan_kills(5, 30, 4, 0.5) != plan_kills(6, 30, 4, 0.5)
    kills = plan_kills(5, 30, 4, 0.5)
    assert all(0 < t < 29.5 and -1 <= target < 4 for t, target in kills)
    assert plan_kills(5, 30, 4, 0) == []
    options = parse(["--seed", "9"])
    assert options.seed == 9 and options.workers == 4 and options.seconds == 30
