"""locking: cross-process coordination, no knowledge of records or pages.

- `filelock`: named file locks (`FileLock`, `LockSet`) with timeouts and a
  spin-then-block wait that hands off in microseconds.
- `statefile`: the shared state, a mapped file of coordination numbers that
  any process reads in ~1 µs without a lock and without torn reads.
- `registry`: the reader registry, one slot per live process holding its
  oldest snapshot, liveness by lock probe, the horizon by register-then-confirm.
- `forksafe`: after `os.fork()` every object re-arms in the child.

The global lock order (also in ARCHITECTURE.md and filelock.py):

    recovery -> open -> vacuum -> checkpoint -> sync -> gate0 -> gate1 -> commit -> sequence

A process may take a later lock while holding an earlier one, never the
reverse.  Registry slots are held for a process's life and are not ordered
against these: no code waits for a slot.

Architecture invariant: `locking` imports neither `storage` nor `mvcc`.
"""
