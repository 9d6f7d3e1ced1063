"""locking: cross-process coordination, no knowledge of records or pages.

File locks, the shared state file, the reader registry and fork safety arrive
with issue 4, together with the global lock order, which will be written here
and in ARCHITECTURE.md.

Architecture invariant: `locking` imports neither `storage` nor `mvcc`.
"""
