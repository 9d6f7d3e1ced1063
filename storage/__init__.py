"""storage: bytes on disk, no policy.

The page file (`pagefile`) of sealed pages (`crypto` for AES-GCM, CRC32
otherwise), copy-on-write B+trees over it (`btree`), the freelist (`freelist`),
the order-preserving key encoding (`keys`), the record codec (`codec`) and the
structural checker (`check`).  Byte layouts: `format` and docs/format.md.

Architecture invariants: `storage` imports neither `locking` nor `mvcc`; it
never decides visibility or takes a cross-process lock.  The caller serialises
writers and states the horizon (the oldest generation any reader still holds).
"""
