"""mvcc: the database (open, tables, transactions, snapshots, commits).

Today the package holds the public error hierarchy (`mvcc.errors`, re-exported
here, as DESIGN section 2 fixes) and table schemas (`mvcc.schema`);
`mvcc.open`, `Database`, `Table` and the query builder land with issues 5 and 6.
"""

from __future__ import annotations

from . import errors
from .errors import *  # noqa: F403  (the public hierarchy is part of the top-level API)

__all__ = [name for name in errors.__all__ if name != "translate"]
