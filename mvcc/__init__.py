"""mvcc: the database (open, tables, transactions, snapshots, commits).

The public API of ../shared/DESIGN.md section 2 lands with issue 5; until then
the package holds no names.
"""

from __future__ import annotations

__all__: list[str] = []
