"""The `mvcc` command line: maintenance of a data directory from a shell.

Responsibility: parse arguments, get the passphrase (`MVCC_PASSPHRASE` or a
prompt, never argv), run one operation through the public API, print the
result (`--json` for machines), and exit 0 (done), 1 (a problem was found or
the operation failed) or 2 (usage).

Commands so far: `vacuum [--daemon]`, `checkpoint`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from . import vacuum
from .database import KEY_FILE, Database
from .errors import Error

__all__ = ["main"]

PASSPHRASE_ENV = "MVCC_PASSPHRASE"


def _passphrase(path: str) -> str | None:
    """The directory's passphrase: from the environment, else a prompt when the
    directory is encrypted and there is a terminal to ask on."""
    given = os.environ.get(PASSPHRASE_ENV)
    if given is not None:
        return given
    if not os.path.exists(os.path.join(path, KEY_FILE)):
        return None
    if not sys.stdin.isatty():
        raise SystemExit(f"{path} is encrypted: set {PASSPHRASE_ENV} or run on a terminal")
    return getpass.getpass(f"passphrase for {path}: ")


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        for name, value in result.items():
            print(f"{name}: {value}")


def _maintenance(args: argparse.Namespace) -> int:
    if args.command == "vacuum" and args.daemon:
        if args.key_stdin:  # started by an opener (mvcc/vacuum.py spawn)
            return vacuum.run_daemon(args.dir, vacuum.read_key(sys.stdin.buffer))
        return vacuum.run_daemon(args.dir, None, _passphrase(args.dir))
    with Database(args.dir, passphrase=_passphrase(args.dir), autovacuum=False) as db:
        result = db.vacuum() if args.command == "vacuum" else db.checkpoint()
    _print(asdict(result), args.json)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvcc", description="Maintain an mvcc data directory.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    vac = commands.add_parser(
        "vacuum", help="fold the WAL, prune dead versions, free pages (now, or as a daemon)"
    )
    vac.add_argument("dir", metavar="DIR", help="the data directory")
    vac.add_argument(
        "--daemon",
        action="store_true",
        help="serve the directory in the background until no process has it open",
    )
    vac.add_argument("--key-stdin", action="store_true", help=argparse.SUPPRESS)
    vac.add_argument("--json", action="store_true", help="print the result as JSON")
    ck = commands.add_parser("checkpoint", help="fold the WAL into the page file now")
    ck.add_argument("dir", metavar="DIR", help="the data directory")
    ck.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 on a usage error
    if not os.path.isdir(args.dir):
        print(f"mvcc: {args.dir} is not a directory", file=sys.stderr)
        return 2
    try:
        return _maintenance(args)
    except Error as exc:
        print(f"mvcc {args.command}: {exc}", file=sys.stderr)
        return 1
