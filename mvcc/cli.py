"""The `mvcc` command line: maintenance of a data directory from a shell.

Responsibility: parse arguments, get the passphrase, run one operation through
the public API, print the result (`--json` for machines), and exit.

Invariants
(L1) A passphrase never comes from argv (it would show in `ps` and in shell
     history): it is `MVCC_PASSPHRASE`, else a prompt on the terminal; for
     `rekey` the new one is `MVCC_NEW_PASSPHRASE`, else a prompt asked twice.
     No terminal and no variable for an encrypted directory is an error.
(L2) Exit status: 0 done (for `check`: no problem), 1 a problem was found or
     the operation failed (an `mvcc.Error`: wrong passphrase, corruption, a
     lock timeout...; the message names it on stderr), 2 usage (argparse's,
     or a path that is not what the command needs).
(L3) Progress bars go to stderr, and only on a terminal: stdout stays the
     result alone, for pipes and `--json`.

Commands: stats, check, vacuum [--daemon], checkpoint, backup, restore,
export, import, rekey (`mvcc COMMAND --help` for each).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TextIO

from . import vacuum
from .backup import restore
from .check import check
from .database import KEY_FILE, Database
from .errors import Error

__all__ = ["main"]

PASSPHRASE_ENV = "MVCC_PASSPHRASE"
NEW_PASSPHRASE_ENV = "MVCC_NEW_PASSPHRASE"
BAR_WIDTH = 30
BAR_EVERY = 0.1  # seconds between two redraws of a progress bar


class Usage(Exception):
    """A usage error found after parsing (L2: exit 2)."""


def _passphrase(path: str) -> str | None:
    """The directory's passphrase (L1); None when it is not encrypted."""
    given = os.environ.get(PASSPHRASE_ENV)
    if given is not None:
        return given
    if not os.path.exists(os.path.join(path, KEY_FILE)):
        return None
    if not sys.stdin.isatty():
        raise Usage(f"{path} is encrypted: set {PASSPHRASE_ENV} or run on a terminal")
    return getpass.getpass(f"passphrase for {path}: ")


def _new_passphrase() -> str:
    given = os.environ.get(NEW_PASSPHRASE_ENV)
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise Usage(f"rekey: set {NEW_PASSPHRASE_ENV} or run on a terminal")
    first = getpass.getpass("new passphrase: ")
    if getpass.getpass("new passphrase again: ") != first:
        raise Usage("rekey: the two new passphrases differ")
    return first


class Bar:
    """A progress bar on stderr when it is a terminal (L3), else silent; used
    as the `progress(done, total)` callback of long operations."""

    def __init__(self, label: str, unit: str = "", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.label, self.unit = label, unit
        self._next = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.on or now < self._next:
            return
        self._next = now + BAR_EVERY
        if total:
            filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            text = f"{self.label} [{bar}] {100 * done // total:3d}% {done}/{total}{self.unit}"
        else:
            text = f"{self.label} {done}{self.unit}"
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.on and self._next:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested dict as `a.b: value` rows, for the text output."""
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for name, inner in value.items():
            rows.extend(_flat(inner, f"{prefix}{name}."))
        return rows
    return [(prefix.rstrip("."), value)]


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True, default=str))
    else:
        for name, value in _flat(result):
            print(f"{name}: {value}")


def _open(path: str, **options: Any) -> Database:
    return Database(path, passphrase=_passphrase(path), autovacuum=False, **options)


def _with_bar(label: str, unit: str, work: Callable[[Bar], dict[str, Any]]) -> dict[str, Any]:
    bar = Bar(label, unit)
    try:
        return work(bar)
    finally:
        bar.close()


# -- commands: each returns its exit status --------------------------------------


def _stats(args: argparse.Namespace) -> int:
    with _open(args.dir) as db:
        _print(db.stats(), args.json)
    return 0


def _check(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args.dir)
    bar = Bar("check", " pages")
    try:
        report = check(args.dir, passphrase=passphrase, progress=bar)
    finally:
        bar.close()
    if args.json:
        result = {
            "ok": report.ok,
            "problems": [str(p) for p in report.problems],
            "notes": report.notes,
            **{k: v for k, v in asdict(report).items() if k not in ("problems", "notes", "path")},
        }
        print(json.dumps(result, sort_keys=True))
    else:
        print(report)
    return 0 if report.ok else 1


def _vacuum(args: argparse.Namespace) -> int:
    if args.daemon:
        if args.key_stdin:  # started by an opener (mvcc/vacuum.py spawn)
            return vacuum.run_daemon(args.dir, vacuum.read_key(sys.stdin.buffer))
        return vacuum.run_daemon(args.dir, None, _passphrase(args.dir))
    with _open(args.dir) as db:
        _print(asdict(db.vacuum()), args.json)
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    with _open(args.dir) as db:
        _print(asdict(db.checkpoint()), args.json)
    return 0


def _backup(args: argparse.Namespace) -> int:
    with _open(args.dir) as db:
        result = _with_bar(
            "backup", " records", lambda bar: asdict(db.backup(args.dest, progress=bar))
        )
    _print(result, args.json)
    return 0


def _restore(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args.src)
    result = _with_bar(
        "restore",
        " bytes",
        lambda bar: asdict(
            restore(
                args.src, args.dest, overwrite=args.overwrite, passphrase=passphrase, progress=bar
            )
        ),
    )
    _print(result, args.json)
    return 0


def _export(args: argparse.Namespace) -> int:
    with _open(args.dir) as db:
        result = _with_bar("export", " records", lambda bar: db.export(args.file, progress=bar))
    _print(result, args.json)
    return 0


def _import(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.file):
        raise Usage(f"import: {args.file} is not a file")
    with _open(args.dir) as db:
        result = _with_bar("import", " lines", lambda bar: db.import_(args.file, progress=bar))
    _print(result, args.json)
    return 0


def _rekey(args: argparse.Namespace) -> int:
    if not os.path.exists(os.path.join(args.dir, KEY_FILE)):
        raise Usage(f"rekey: {args.dir} is not encrypted")
    with _open(args.dir) as db:
        db.rekey(_new_passphrase())
    _print({"rekeyed": args.dir}, args.json)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "stats": (_stats, "sizes, records, versions, the oldest snapshot and the vacuum process"),
    "check": (_check, "check every tree, chain, index and WAL frame; exit 1 on a problem"),
    "vacuum": (_vacuum, "fold the WAL, prune dead versions, free pages (now, or as a daemon)"),
    "checkpoint": (_checkpoint, "fold the WAL into the page file now"),
    "backup": (_backup, "write a compact, consistent copy of DIR to DEST, online"),
    "restore": (_restore, "check the backup SRC and copy it to DEST"),
    "export": (_export, "write every table's records as JSON Lines to FILE, from one snapshot"),
    "import": (
        _import,
        "add the records of a JSON Lines FILE; every line is checked before any is written",
    ),
    "rekey": (_rekey, f"re-wrap the data key under a new passphrase (${NEW_PASSPHRASE_ENV})"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvcc",
        description=f"Maintain an mvcc data directory. The passphrase of an encrypted "
        f"directory comes from ${PASSPHRASE_ENV} or a prompt, never from the command line. "
        f"Exit status: 0 done, 1 a problem found or an error, 2 bad usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = {
        name: commands.add_parser(name, help=h, description=h) for name, (_, h) in COMMANDS.items()
    }
    for name in ("stats", "check", "vacuum", "checkpoint", "backup", "export", "import", "rekey"):
        sub[name].add_argument("dir", metavar="DIR", help="the data directory")
    sub["vacuum"].add_argument(
        "--daemon",
        action="store_true",
        help="serve the directory in the background until no process has it open",
    )
    sub["vacuum"].add_argument("--key-stdin", action="store_true", help=argparse.SUPPRESS)
    sub["backup"].add_argument("dest", metavar="DEST", help="the backup directory (new or empty)")
    sub["restore"].add_argument("src", metavar="SRC", help="a backup directory")
    sub["restore"].add_argument("dest", metavar="DEST", help="the data directory to create")
    sub["restore"].add_argument(
        "--overwrite", action="store_true", help="replace DEST even if it is not empty"
    )
    sub["export"].add_argument("file", metavar="FILE", help="the JSON Lines file to write")
    sub["import"].add_argument("file", metavar="FILE", help="the JSON Lines file to read")
    for p in sub.values():
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 on a usage error
    source = args.src if args.command == "restore" else args.dir
    if not os.path.isdir(source):
        print(f"mvcc {args.command}: {source} is not a directory", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command][0](args)
    except Usage as exc:
        print(f"mvcc {args.command}: {exc}", file=sys.stderr)
        return 2
    except Error as exc:
        print(f"mvcc {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mvcc {args.command}: interrupted", file=sys.stderr)
        return 1
