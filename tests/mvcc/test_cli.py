"""The `mvcc` command line, every command through a real subprocess: output,
`--json`, exit statuses (0 done, 1 problem or error, 2 usage), passphrases
from the environment only (cli.py L1-L3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mvcc

TIMEOUT = 60.0
PASS = "cli secret"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MVCC_")}
    return subprocess.run(
        [sys.executable, "-m", "mvcc", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,  # never a terminal: no prompt, no progress bar
        env={**clean, **(env or {})},
    )


def make(path: Path, passphrase: str | None = None, n: int = 20) -> None:
    with mvcc.open(str(path), passphrase=passphrase, autovacuum=False) as db:
        users = db.table("users", indexes=["age"], unique=["email"])
        with db.transaction():
            for i in range(n):
                users.insert({"email": f"u{i}@x", "age": i % 7, "blob": bytes([i])})


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    make(tmp_path / "plain")
    return tmp_path / "plain"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    make(tmp_path / "secret", PASS)
    return tmp_path / "secret"


def test_stats_prints_rows_and_json(plain: Path) -> None:
    done = cli("stats", str(plain))
    assert done.returncode == 0, done.stderr
    assert "page_file_bytes: " in done.stdout and "wal.frames: " in done.stdout
    data = json.loads(cli("stats", str(plain), "--json").stdout)
    assert data["tables"]["users"] == 20


def test_check_is_0_when_clean_and_1_naming_the_damage(plain: Path) -> None:
    done = cli("check", str(plain), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["problems"] == [] and report["pages"] > 0
    subprocess.run(
        [sys.executable, "-m", "mvcc", "checkpoint", str(plain)],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    pages = plain / "pages"
    data = bytearray(pages.read_bytes())
    data[len(data) - 100] ^= 0xFF  # a byte of the last page
    pages.write_bytes(bytes(data))
    done = cli("check", str(plain))
    assert done.returncode == 1
    assert "page" in done.stdout and "PROBLEMS" in done.stdout


def test_vacuum_and_checkpoint_report_what_they_did(plain: Path) -> None:
    done = cli("checkpoint", str(plain), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frames"] >= 1
    done = cli("vacuum", str(plain))
    assert done.returncode == 0, done.stderr
    assert "pages_freed: " in done.stdout


def test_the_passphrase_comes_from_the_environment_and_a_wrong_one_is_1(secret: Path) -> None:
    done = cli("stats", str(secret))  # no variable, no terminal
    assert done.returncode == 2 and "MVCC_PASSPHRASE" in done.stderr
    done = cli("stats", str(secret), env={"MVCC_PASSPHRASE": "wrong"})
    assert done.returncode == 1 and "passphrase" in done.stderr.lower()
    done = cli("check", str(secret), env={"MVCC_PASSPHRASE": PASS})
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "COMMAND"),
        (["frobnicate", "x"], "invalid choice"),
        (["stats"], "DIR"),
        (["stats", "/surely/not/a/dir"], "is not a directory"),
        (["restore", "/surely/not/a/dir", "x"], "is not a directory"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode == 2
    assert message in done.stderr


@pytest.mark.parametrize(
    "command",
    ["stats", "check", "vacuum", "checkpoint", "backup", "restore", "export", "import", "rekey"],
)
def test_every_command_has_help(command: str) -> None:
    done = cli(command, "--help")
    assert done.returncode == 0
    assert "usage: mvcc " + command in done.stdout
    assert "--json" in done.stdout


def test_the_console_script_is_installed() -> None:
    script = shutil.which("mvcc", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("mvcc is not installed with its scripts here (pip install .)")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and "rekey" in done.stdout


def test_backup_then_restore_then_stats(plain: Path, tmp_path: Path) -> None:
    done = cli("backup", str(plain), str(tmp_path / "bk"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tables"] == {"users": 20}
    done = cli("restore", str(tmp_path / "bk"), str(tmp_path / "back"))
    assert done.returncode == 0, done.stderr
    stats = json.loads(cli("stats", str(tmp_path / "back"), "--json").stdout)
    assert stats["tables"]["users"] == 20
    done = cli("restore", str(tmp_path / "bk"), str(tmp_path / "back"))  # not empty now
    assert done.returncode == 1 and "back" in done.stderr
    done = cli("restore", str(plain), str(tmp_path / "other"))  # a database, not a backup
    assert done.returncode == 1 and "backup" in done.stderr


def test_export_then_import_and_a_bad_line_names_its_number(plain: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    done = cli("export", str(plain), str(dump), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == 20
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    done = cli("import", str(fresh), str(dump))
    assert done.returncode == 0, done.stderr
    assert json.loads(cli("stats", str(fresh), "--json").stdout)["tables"]["users"] == 20
    lines = dump.read_text().splitlines()
    lines[5] = "{not json"  # lines 1-5 are good: nothing of them may land either
    dump.write_text("\n".join(lines) + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cli("import", str(empty), str(dump))
    assert done.returncode == 1 and "line 6" in done.stderr
    assert json.loads(cli("stats", str(empty), "--json").stdout)["tables"] == {}
    done = cli("import", str(empty), str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2 and "is not a file" in done.stderr


def test_rekey_takes_the_new_passphrase_from_the_environment(secret: Path, plain: Path) -> None:
    env = {"MVCC_PASSPHRASE": PASS}
    done = cli("rekey", str(secret), env=env)  # no new passphrase, no terminal
    assert done.returncode == 2 and "MVCC_NEW_PASSPHRASE" in done.stderr
    done = cli("rekey", str(secret), env={**env, "MVCC_NEW_PASSPHRASE": "fresh"})
    assert done.returncode == 0, done.stderr
    assert cli("stats", str(secret), env=env).returncode == 1  # the old one no longer opens
    assert cli("stats", str(secret), env={"MVCC_PASSPHRASE": "fresh"}).returncode == 0
    done = cli("rekey", str(plain), env={"MVCC_NEW_PASSPHRASE": "x"})
    assert done.returncode == 2 and "not encrypted" in done.stderr
