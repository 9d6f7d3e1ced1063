"""mvcc: the database (open, tables, transactions, snapshots, commits).

`mvcc.open` returns a `Database` (mvcc/database.py); `db.table(...)` a `Table`;
the public error hierarchy (`mvcc.errors`) is re-exported here, as DESIGN
section 2 fixes, with `where` (mvcc/query.py), `Result` (mvcc/result.py) and
`check` with its `CheckReport` (mvcc/check.py), and `restore` (mvcc/backup.py;
`db.backup(dest)` makes what it restores).
"""

from __future__ import annotations

import logging
from typing import Any

from . import errors
from .backup import restore
from .check import CheckReport, check
from .database import Database
from .errors import *  # noqa: F403  (the public hierarchy is part of the top-level API)
from .query import where
from .result import Result
from .table import Table

# Silent by default, as a library should be: the application configures logging.
logging.getLogger("mvcc").addHandler(logging.NullHandler())

__all__ = [
    "CheckReport",
    "Database",
    "Result",
    "Table",
    "check",
    "open",
    "restore",
    "where",
    *(name for name in errors.__all__ if name != "translate"),
]


def open(path: str, **options: Any) -> Database:
    """Open (creating if missing) the data directory at `path`: DESIGN section 2."""
    return Database(path, **options)
