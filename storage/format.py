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
