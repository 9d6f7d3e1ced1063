"""On-disk constants of the page file: one `struct` per byte table of docs/format.md.

Every layout the page file writes is declared here, with its size asserted next
to it, so the code and docs/format.md cannot drift apart silently (STYLE habit 2).

Page file
---------
Page 0 and page 1 are meta pages, written alternately (generation g goes to slot
g % 2).  Every other page is a branch, leaf, overflow or freelist page.  Each page
is "sealed" so that a flipped byte, a page moved to another slot, or an older copy
of the page put back at its slot is detected on read:

    plain (no key)  : CRC32(pgno || rest of page)  (4)   content (page_size - 4)
    encrypted       : nonce (12)  AES-GCM(content) (page_size - 28)  tag (16)
                      associated data = b"P" || pgno (8, big-endian) || meta prefix

A meta page starts with a 32-byte plaintext prefix (META_PREFIX) that says how to
read the file (page size, whether it is encrypted, which key); the prefix is
covered by the checksum or the GCM tag.  The sealed area follows it.

Content of every sealed page starts with PAGE_HEADER; the body follows.
"""

from __future__ import annotations

import struct

__all__ = [
    "CAPACITY_SLACK",
    "FLAG_ENCRYPTED",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_PAGE_SIZE",
    "META_BODY",
    "META_PREFIX",
    "MIN_PAGE_SIZE",
    "PAGE_BRANCH",
    "PAGE_FREELIST",
    "PAGE_HEADER",
    "PAGE_LEAF",
    "PAGE_META",
    "PAGE_OVERFLOW",
    "PAGE_TYPES",
    "PGNO",
    "SEAL_OVERHEAD",
]

MAGIC = b"MVCCPAGE"
FORMAT_VERSION = 1
MIN_PAGE_SIZE = 4096
MAX_PAGE_SIZE = 65536
DEFAULT_PAGE_SIZE = 4096
FLAG_ENCRYPTED = 0x0001

# Meta page prefix, plaintext, covered by the seal.
#   0  8  magic b"MVCCPAGE"
#   8  2  format version
#  10  2  flags (bit 0: encrypted)
#  12  4  page size
#  16  8  key id of the data key (zeros when not encrypted)
#  24  8  reserved, zero
META_PREFIX = struct.Struct(">8sHHI8s8x")
assert META_PREFIX.size == 32

# The widest seal (AES-GCM nonce + tag).  Node capacity is computed against it
# even without a key, so a tree splits identically with and without encryption.
SEAL_OVERHEAD = 28

# Header at the start of every sealed page's content.
#   0  1  page type
#   1  1  flags (reserved, zero)
#   2  2  reserved, zero
#   4  4  body length in bytes
#   8  8  generation that wrote this page
PAGE_HEADER = struct.Struct(">BBHIQ")
assert PAGE_HEADER.size == 16

PAGE_BRANCH = 1
PAGE_LEAF = 2
PAGE_OVERFLOW = 3
PAGE_META = 4
PAGE_FREELIST = 5
PAGE_TYPES = {
    PAGE_BRANCH: "branch",
    PAGE_LEAF: "leaf",
    PAGE_OVERFLOW: "overflow",
    PAGE_META: "meta",
    PAGE_FREELIST: "freelist",
}

# Bytes of a page a node body may use: the page less the seal, the page header
# and a margin for msgpack's array headers.
CAPACITY_SLACK = SEAL_OVERHEAD + PAGE_HEADER.size + 20

# Meta body (after PAGE_HEADER, whose generation is the meta's generation).
#   0  8  catalog root pgno (0: empty catalog)
#   8  8  catalog root generation
#  16  8  freelist first pgno (0: empty freelist)
#  24  8  freelist generation
#  32  4  freelist run length in pages
#  36  4  freelist encoded length in bytes
#  40  8  npages: pages in use; the file may be longer (a tail to truncate)
#  48  2  user meta length (bytes that follow, at most MAX_USER_META)
META_BODY = struct.Struct(">QQQQIIQH")
assert META_BODY.size == 50
MAX_USER_META = 512

# A page number or generation in the catalog value of a named tree.
PGNO = struct.Struct(">QQ")
assert PGNO.size == 16

# --- Shared WAL (storage/wal.py; docs/format.md "Write-ahead log") -----------------------------
#
# A segment file `wal/%016d.wal` is SEGMENT_HEADER, then frames back to back.  A frame is
# FRAME_HEADER, the payload (sealed under a key), then an 8-byte checksum chained to the
# previous frame's:  blake2b(prev_checksum || header || payload, digest_size=8); the first
# frame of a segment chains from the segment header's checksum.  A segment that was
# rotated away from ends with a segment-end frame whose payload is SEGMENT_LINK.

WAL_MAGIC = b"MVCCWAL1"
WAL_FORMAT_VERSION = 1
WAL_FLAG_ENCRYPTED = 0x0001  # segment header flags

# Segment header, plaintext.
#   0  8  magic b"MVCCWAL1"
#   8  2  format version
#  10  2  flags (bit 0: encrypted)
#  12  4  reserved, zero
#  16  8  segment number (the file's name)
#  24  8  salt: 8 random bytes, new for every segment file ever created
#  32  8  first commit ts this segment holds
#  40  8  key id of the data key (zeros when not encrypted)
#  48  8  reserved, zero
#  56  8  checksum: blake2b(bytes 0..56, digest_size=8)
SEGMENT_HEADER = struct.Struct(">8sHH4xQ8sQ8s8x8s")
assert SEGMENT_HEADER.size == 64
SEGMENT_CHECKED = 56  # bytes of the header its checksum covers

FRAME_MAGIC = b"MVWF"
FRAME_FLAG_ENCRYPTED = 0x0001  # the payload is sealed (nonce || ciphertext || tag)
FRAME_FLAG_SEGMENT_END = 0x0002  # not a commit: the log continues in the next segment

# Frame header, plaintext.
#   0  4  magic b"MVWF"
#   4  2  flags (bit 0: encrypted payload; bit 1: segment end)
#   6  2  reserved, zero
#   8  8  salt of the segment the frame belongs to
#  16  8  commit ts (segment end: the ts the next frame will carry)
#  24  4  payload length n as stored (sealed length under a key)
#  28  4  reserved, zero
#  32  n  payload
#  32+n 8 checksum: blake2b(previous checksum || bytes 0..32+n, digest_size=8)
FRAME_HEADER = struct.Struct(">4sH2x8sQI4x")
assert FRAME_HEADER.size == 32
FRAME_CHECKSUM_SIZE = 8
FRAME_OVERHEAD = FRAME_HEADER.size + FRAME_CHECKSUM_SIZE
assert FRAME_OVERHEAD == 40
MAX_FRAME_PAYLOAD = 1 << 30  # a payload as stored; the length field could say 4 GiB

# Payload of a segment-end frame (never encrypted; the chain covers it).
#   0  8  number of the next segment (this one + 1)
#   8  8  salt of the next segment's header
SEGMENT_LINK = struct.Struct(">Q8s")
assert SEGMENT_LINK.size == 16

# A log position as the layers above store it (shared state file, checkpoint meta).
#   0  8  segment number
#   8  8  byte offset in the segment
#  16  8  chain checksum at that offset
#  24  8  next commit ts
LOG_POSITION = struct.Struct(">QQ8sQ")
assert LOG_POSITION.size == 32

__all__ += [
    "FRAME_CHECKSUM_SIZE",
    "FRAME_FLAG_ENCRYPTED",
    "FRAME_FLAG_SEGMENT_END",
    "FRAME_HEADER",
    "FRAME_MAGIC",
    "FRAME_OVERHEAD",
    "LOG_POSITION",
    "MAX_FRAME_PAYLOAD",
    "SEGMENT_CHECKED",
    "SEGMENT_HEADER",
    "SEGMENT_LINK",
    "WAL_FLAG_ENCRYPTED",
    "WAL_FORMAT_VERSION",
    "WAL_MAGIC",
]
