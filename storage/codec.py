"""The record codec: documents and values to bytes and back (msgpack, strict about types).

Responsibility
--------------
Turn a value made of None, bool, int, float, str, bytes, list and dict (str keys),
nested at most MAX_DEPTH containers deep, into bytes that decode to an equal value
of exactly the same types; refuse everything else before any byte is produced,
naming where it is; and turn any bytes back into such a value or a CorruptPage.
Ordering values (NaN, mixed types) is the index layer's concern, not this one's:
NaN and +-inf are ordinary floats here.

Invariants
(I1) Exact round trip: for every value `validate` accepts,
     `unpack(pack(v, compress=c))` equals `v` with `type(x) is type(y)` at every
     node (str stays str, bytes stays bytes, int stays int, float stays float,
     bit for bit, NaN and -0.0 included; list stays list, dict keeps its order).
(I2) Rejection before any byte is produced: `pack` and `validate` raise
     `EncodeError(field=path)` for the first offending value of a depth-first,
     insertion-order walk, or `TooLarge`; no partial encoding is ever returned.
     The path names the value as a query would: `address.city`, `tags[3]`,
     `a.b[0].c`; the root is "".  A bad dict key is reported at the dict's path.
(I3) `unpack` never raises anything but `CorruptPage(pgno=None)`, whatever the
     input: unknown header, bad zlib, bad msgpack, trailing bytes, ext types or
     non-str map keys.
(I4) `unpack` returns only the allowed types: maps decode to dicts with str keys,
     bin to bytes, str to str, arrays to lists.
(I5) Compression never grows a value: header 0x01 is written only when
     compress=True, the msgpack payload is at least COMPRESS_MIN bytes, and the
     zlib stream is strictly shorter than the payload.
(I6) `len(pack(v, max_size=m)) <= m`, counting the header byte; a longer
     encoding raises `TooLarge` that names, for a dict, its largest top-level
     field.
(I7) Deterministic: equal values (same dict order) and options give equal bytes,
     for a given msgpack and zlib build.

Wire format of one encoded value
--------------------------------
    OFFSET  SIZE  DESCRIPTION
         0     1  encoding: 0x00 plain msgpack, 0x01 zlib-compressed msgpack
         1     n  payload: the msgpack object (0x00), or a zlib stream (RFC 1950)
                  that inflates to it (0x01); nothing may follow either

msgpack subset written: nil, false/true, positive/negative fixint and
int8..int64/uint8..uint64, float64 (never float32), fixstr/str8/16/32 (UTF-8),
bin8/16/32, fixarray/array16/32, fixmap/map16/32 with str keys.  Never ext.

Algorithm
---------
pack: (1) a fast walk that dispatches on `type(v) is ...` and builds no path;
(2) msgpack with strict_types (it checks the int range and UTF-8 that the walk
skips); (3) only if either refuses, an explaining walk re-visits the value to
find the first offence and its path, so the common case never formats a string;
(4) optional zlib; (5) the size limit.
unpack: one `msgpack.unpackb` call; only when the payload contains a bin marker
byte does it run a second, slower decode that checks every map key (below).

Concurrency and fork: every function is thread-safe and keeps no state but a
pool of idle msgpack Packers (taken and returned atomically); after `os.fork()`
the child simply reuses or rebuilds them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Any

import msgpack

from storage.errors import CorruptPage, EncodeError, TooLarge

__all__ = [
    "COMPRESS_MIN",
    "ENC_PLAIN",
    "ENC_ZLIB",
    "HEADER",
    "MAX_DEPTH",
    "MAX_VALUE_SIZE",
    "pack",
    "pack_doc",
    "unpack",
    "unpack_doc",
    "validate",
]

MAX_VALUE_SIZE = 16 * 1024 * 1024
"""Documented limit on one encoded value, header byte included (I6)."""

MAX_DEPTH = 64
"""Containers nested one in another, the outermost counting as 1.

Deep enough for any real document; the bound also turns a container that
contains itself into an EncodeError instead of a RecursionError."""

COMPRESS_MIN = 64
"""Payloads shorter than this are never compressed: zlib's 6 bytes of framing
and Huffman tables make such small values longer, so trying only wastes time."""

# The one-byte header of an encoded value (the wire format table above).
HEADER = struct.Struct(">B")
assert HEADER.size == 1
ENC_PLAIN = 0x00
ENC_ZLIB = 0x01
_PLAIN_HEADER = HEADER.pack(ENC_PLAIN)
_ZLIB_HEADER = HEADER.pack(ENC_ZLIB)

# zlib's default level.  On the 1 KB benchmark record it costs ~13% more than
# level 1 for slightly smaller output; a record is written once and read many
# times, and inflating is no slower for a higher level.
_ZLIB_LEVEL = 6

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_NoneType = type(None)
# Exact types a leaf may have.  A frozenset lookup of `type(v)` is the fast
# path's whole per-leaf test: subclasses (IntEnum, str Enum, ...) miss it.
_SCALARS = frozenset({_NoneType, bool, int, float, str, bytes})

_ALLOWED_TEXT = "None, bool, int, float, str, bytes, list and dict (with str keys)"


# -- encoding --------------------------------------------------------------------------


def validate(value: object) -> None:
    """Raise as `pack` would if `value` cannot be encoded exactly (I2); otherwise return.

    >>> validate({"tags": ["a", "b"], "n": 1})
    >>> validate({"tags": ("a", "b")})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    storage.errors.EncodeError: field 'tags': tuple is not supported: ...; use a list
    """
    _encode(value)


def pack(value: object, *, compress: bool = False, max_size: int = MAX_VALUE_SIZE) -> bytes:
    """Encode `value` as header byte + msgpack payload (module docstring, I1-I7).

    Raises EncodeError (naming the field path) for a value that would not round-trip
    exactly, and TooLarge when the encoding, after compression, exceeds `max_size`.

    >>> pack({"a": 1})
    b'\\x00\\x81\\xa1a\\x01'
    >>> unpack(pack({"a": 1}))
    {'a': 1}
    """
    payload = _encode(value)
    out = None
    # (I5) compress only where it can pay, and keep the result only if it did.
    if compress and len(payload) >= COMPRESS_MIN:
        packed = zlib.compress(payload, _ZLIB_LEVEL)
        if len(packed) < len(payload):
            out = _ZLIB_HEADER + packed
    if out is None:
        out = _PLAIN_HEADER + payload
    if len(out) > max_size:
        raise _too_large(value, len(out), max_size)
    return out


def pack_doc(
    doc: dict[str, Any], *, compress: bool = False, max_size: int = MAX_VALUE_SIZE
) -> bytes:
    """`pack` for a document: the top level must be a dict."""
    if type(doc) is not dict:
        raise EncodeError(f"a document must be a dict, got {_type_name(doc)}", field="")
    return pack(doc, compress=compress, max_size=max_size)


# Idle Packers.  Reusing one saves packb's per-call Packer construction (and its
# 256 KiB buffer allocation), about a third of the cost of packing a small
# document.  A pool rather than one shared Packer: a shared one is only safe
# while pack() runs no Python code, and a garbage collection triggered inside it
# (then a __del__ that switches threads) could interleave two outputs in one
# buffer.  list.pop/append are atomic, so a Packer is only ever used by one caller.
_PACKERS: list[Any] = []
_PACKER_BUF = 64 * 1024  # a Packer whose buffer outgrew this is not kept


def _encode(value: Any) -> bytes:
    """Validate and encode `value` as bare msgpack, or raise EncodeError (I2)."""
    t = type(value)
    if t is dict:
        ok = _dict_ok(value, 1)
    elif t is list:
        ok = _list_ok(value, 1)
    else:
        ok = t in _SCALARS
    if not ok:
        raise _explain(value)
    try:
        packer = _PACKERS.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True, strict_types=True, buf_size=_PACKER_BUF)
    try:
        payload: bytes = packer.pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        # The walk passed, so msgpack refused an int out of range or a str that
        # is not UTF-8 (or, defensively, anything the walk missed).  The Packer
        # resets its buffer on error but is dropped anyway: cheap, and certain.
        raise _explain(value, exc) from exc
    if len(payload) <= _PACKER_BUF:
        _PACKERS.append(packer)
    return payload


# The fast walk: True when every node has an allowed exact type, every dict key is
# a str and no container is nested deeper than MAX_DEPTH.  It leaves the int range
# and UTF-8 validity to msgpack, and builds no path: a False sends the caller to
# `_explain`, which finds out what and where.  Two mutually recursive functions
# rather than one that re-tests its argument's type: this is the hot loop of
# every write.


def _dict_ok(d: dict[Any, Any], depth: int) -> bool:
    for k in d:
        if type(k) is not str:
            return False
    return _list_ok(d.values(), depth)


def _list_ok(items: Iterable[Any], depth: int) -> bool:
    """Every value (of a list, or of a dict's values) is of an allowed type."""
    for v in items:
        t = type(v)
        if t in _SCALARS:
            continue
        if t is dict:
            ok = depth < MAX_DEPTH and _dict_ok(v, depth + 1)
        elif t is list:
            ok = depth < MAX_DEPTH and _list_ok(v, depth + 1)
        else:
            return False
        if not ok:
            return False
    return True


# -- explaining a refusal (error path only) ----------------------------------------------


def _explain(value: Any, exc: Exception | None = None) -> EncodeError:
    """The error for the first offending node of `value` (found by a second walk)."""
    err = _explain_node(value, "", 0)
    if err is None:  # the fast walk and this one disagree: a bug, but still refuse
        err = EncodeError(f"cannot encode: {exc or 'refused by the type walk'}", field="")
    return err


def _explain_node(v: Any, path: str, depth: int) -> EncodeError | None:
    """The error for the first offending node under `v` (at `path`), or None."""
    t = type(v)
    if t in _SCALARS:
        if t is int and not _INT_MIN <= v <= _INT_MAX:
            # msgpack's widest ints are int64 and uint64; a wider one has no encoding.
            return EncodeError(f"integer {v} is outside [-2**63, 2**64-1]", field=path)
        if t is str and not _is_utf8(v):
            return EncodeError("str is not valid UTF-8 (it has a lone surrogate)", field=path)
        return None
    if t is dict or t is list:
        if depth >= MAX_DEPTH:
            return EncodeError(
                f"nested deeper than {MAX_DEPTH} containers (does it contain itself?)",
                field=path,
            )
        if t is list:
            for i, item in enumerate(v):
                err = _explain_node(item, f"{path}[{i}]", depth + 1)
                if err is not None:
                    return err
            return None
        for k, item in v.items():
            if type(k) is not str:
                # Reported at the dict: the key itself has no path of its own.
                return EncodeError(
                    f"dict key {k!r} ({_type_name(k)}) is not a str; document keys must be str",
                    field=path,
                )
            if not _is_utf8(k):
                return EncodeError(f"dict key {k!r} is not valid UTF-8", field=path)
            err = _explain_node(item, f"{path}.{k}" if path else k, depth + 1)
            if err is not None:
                return err
        return None
    return EncodeError(_refusal(v), field=path)


def _refusal(v: object) -> str:
    """Why a value of a type outside the allowed set is refused, and what to use."""
    name = _type_name(v)
    # Tuples are refused rather than stored as arrays because they would come back
    # as lists: a silent type change is worse than an error at the write (I1).
    if isinstance(v, tuple):
        return f"{name} is not supported: it would decode as a list; use a list"
    if isinstance(v, (set, frozenset)):
        return f"{name} is not supported: msgpack has no set type; use a list"
    if isinstance(v, (bytearray, memoryview)):
        return f"{name} is not supported: it would decode as bytes; use bytes"
    # A subclass (IntEnum, str Enum, OrderedDict, defaultdict, ...) would encode
    # as its base and decode as the base type, losing the class without a word.
    for base in (int, float, str, bytes, list, dict):
        if isinstance(v, base):
            return (
                f"{name} (a subclass of {base.__name__}) is not supported: it would"
                f" decode as a plain {base.__name__}; convert it with {base.__name__}()"
            )
    return f"{name} is not supported: a document holds only {_ALLOWED_TEXT}"


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _type_name(v: object) -> str:
    t = type(v)
    if t.__module__ == "builtins":
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def _too_large(value: Any, size: int, limit: int) -> TooLarge:
    """TooLarge for `value`, naming its largest top-level field if it is a dict (I6)."""
    if type(value) is not dict:
        return TooLarge("value", size=size, limit=limit)
    field = ""
    if value:
        # Error path only: re-encode each top-level field to find the culprit.
        field = max(value, key=lambda k: len(_encode(value[k])))
    return TooLarge("document", size=size, limit=limit, field=field)


# -- decoding ------------------------------------------------------------------------------

# Everything msgpack and zlib raise on bad input derives from these (msgpack's
# ExtraData, FormatError, StackError and OutOfData are ValueErrors; invalid UTF-8 is
# a UnicodeDecodeError, also a ValueError).  TypeError covers a non-bytes argument.
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException, zlib.error)

# Marker bytes of msgpack bin8/bin16/bin32.  strict_map_key (msgpack's default)
# refuses every map key but str and bin, so a bin key is the one non-str key that
# can get through; it is only possible when one of these bytes occurs somewhere in
# the payload.  Scanning for them lets the common payload skip the object_hook, a
# Python call per map that makes a 1 KB nested document ~60% slower to decode; a
# payload that has one (any document with a bytes value) takes the checked decode.
# The needles are ints, not 1-byte bytes: `int in bytes` is a bare memchr (~20 ns),
# `bytes in bytes` sets up a substring search (~150 ns) even for one byte.
_BIN8, _BIN16, _BIN32 = 0xC4, 0xC5, 0xC6


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """Decode the output of `pack`; any malformed input raises CorruptPage (I3, I4).

    >>> unpack(b"\\x00\\x92\\x01\\xc4\\x01x")
    [1, b'x']
    >>> unpack(b"\\x07")
    Traceback (most recent call last):
    ...
    storage.errors.CorruptPage: <memory>: header: unknown value encoding 0x07
    """
    try:
        if type(data) is not bytes:
            # A bytearray or memoryview: copy, so the scan below is a memchr on
            # bytes.  Through memoryview so an int is a TypeError, not bytes(n).
            data = bytes(memoryview(data))
        head = data[:1]
        if head == _PLAIN_HEADER:
            payload = data[1:]
        elif head == _ZLIB_HEADER:
            payload = _inflate(data)
        elif not head:
            raise CorruptPage("empty value")
        else:
            raise CorruptPage(f"unknown value encoding 0x{data[0]:02x}")
        if _BIN8 in payload or _BIN16 in payload or _BIN32 in payload:
            return msgpack.unpackb(
                payload,
                raw=False,
                ext_hook=_refuse_ext,
                max_ext_len=0,
                object_hook=_require_str_keys,
            )
        return msgpack.unpackb(payload, raw=False, ext_hook=_refuse_ext, max_ext_len=0)
    except _DECODE_ERRORS as exc:
        raise CorruptPage(f"undecodable value: {type(exc).__name__}: {exc}") from exc


def unpack_doc(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """`unpack` for a document: anything but a map at the top level is CorruptPage."""
    doc = unpack(data)
    if type(doc) is not dict:
        raise CorruptPage(f"expected a document (a map), found {_type_name(doc)}")
    return doc


def _inflate(data: bytes) -> bytes:
    # A decompressobj rather than zlib.decompress: it tells a truncated stream
    # (not eof) and trailing garbage (unused_data) apart from a complete one.
    z = zlib.decompressobj()
    payload = z.decompress(data[1:])
    if not z.eof:
        raise CorruptPage("truncated zlib stream")
    if z.unused_data:
        raise CorruptPage("bytes after the end of the zlib stream")
    return payload


def _refuse_ext(code: int, data: bytes) -> Any:
    # pack never writes ext types; max_ext_len=0 refuses those with a body
    # (timestamps, code -1, among them), this hook the empty ones.
    raise CorruptPage(f"msgpack ext type {code} in a value")


def _require_str_keys(d: dict[Any, Any]) -> dict[str, Any]:
    for k in d:
        if type(k) is not str:
            raise CorruptPage(f"map key {k!r} is not a str")
    return d
