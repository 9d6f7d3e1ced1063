"""mvcc: the database (open, tables, transactions, snapshots, commits).

Today the package holds the public error hierarchy (`mvcc.errors`, re-exported
here, as DESIGN section 2 fixes); `mvcc.open`, `Database`, `Table` and the
query builder land with issue 5 and 6.
"""

from __future__ import annotations

from .errors import (
    ClosedError,
    ConflictError,
    CorruptionError,
    Error,
    InvalidKey,
    LockTimeout,
    ReadOnlyError,
    Retryable,
    TableNotFound,
    UniqueViolation,
    ValidationError,
)

__all__ = [
    "ClosedError",
    "ConflictError",
    "CorruptionError",
    "Error",
    "InvalidKey",
    "LockTimeout",
    "ReadOnlyError",
    "Retryable",
    "TableNotFound",
    "UniqueViolation",
    "ValidationError",
]
