"""Order-preserving encoding of key tuples: bytewise order of the encoding is key order.

Owns the byte form of every primary key and index key.  The B+tree compares keys
as plain `bytes`; this module makes that comparison mean the tuple order below,
so the tree never decodes a key to compare it.

Key order
---------
A key is a tuple of elements, each None, bool, int, float, str or bytes (the
exact types: subclasses are rejected).  Elements order by type rank, then value:

    ABSENT < None < False < True < numbers < str < bytes

ABSENT is not a value but a marker: an index entry holds it where the
document has no value to index (the field is missing, or holds a list or a
dict), so that a composite index keeps an entry a prefix scan must find, and
"missing" never equals None.  It is a singleton, and sorts first.
`rank_bounds(r)` is the byte range [lo, hi) of the keys whose first element
has rank r (0 None ... 4 bytes; sort_key's first item), which a range query
on one type reads.

Numbers (int and float together) order by exact mathematical value, as Python's
mixed int/float comparison does: -inf < every finite number < +inf, and
2**53 + 1 > float(2**53).  str orders by code point, bytes by byte.  Tuples
order element-wise; a tuple that is a prefix of a longer one sorts first.
`sort_key(v)` is this order written as a Python value: `(type rank, value)`.

Invariants
(I1) Order equivalence: for keys a and b, encode_key(a) < / == / > encode_key(b)
     exactly when [sort_key(x) for x in a] < / == / > [sort_key(x) for x in b].
     In particular two keys are equal exactly when their encodings are equal.
(I2) Prefix property: every element encoding is prefix-free (no element's
     encoding is a proper prefix of another's), so encode_key(t[:k]) is a byte
     prefix of encode_key(t), and the byte range
     [encode_key(p), prefix_end(encode_key(p))) holds exactly the keys whose
     first len(p) elements equal p: this is what a composite-index prefix scan
     reads.
(I3) Canonical numbers: a number is encoded by its value alone, so 5 and 5.0
     encode identically (they are also the same dict key), as do 0, 0.0 and
     -0.0.  decode_key therefore cannot know which one was written; it returns
     an int when the value is an integer in [-2**63, 2**64 - 1] (the int range
     accepted), and a float otherwise (fractions, infinities, and integral
     floats beyond the int range such as 1e300).
(I4) Exact round trip: decode_key(encode_key(t)) == t element by element; None,
     bool, str and bytes keep their type (True never comes back as 1, b"a"
     never as "a"); numbers come back by I3 with the exact value (a float is
     never rounded).  Conversely decode_key accepts only canonical encodings:
     if it returns k then encode_key(k) == data.
(I5) Rejected keys: a key that is not a tuple, a NaN (it cannot be ordered), an
     int outside [-2**63, 2**64 - 1], and an element of any other type
     (bytearray, list, tuple, set, IntEnum, str or int subclasses, ...) raise
     EncodeError; its `field` names the element as "[i]".
(I6) decode_key raises only CorruptPage on malformed input (never IndexError,
     struct.error or UnicodeDecodeError).

Encoding
--------
The key is the concatenation of its element encodings; the empty tuple is b"".
Each element is one tag byte and a body:

    TAG   BODY                                          ELEMENT
    0x08  (none)                                        ABSENT
    0x10  (none)                                        None
    0x20  (none)                                        False
    0x21  (none)                                        True
    0x30  (none)                                        -inf
    0x31  magnitude, every byte complemented (~b)       negative finite number
    0x32  (none)                                        0, 0.0, -0.0
    0x33  magnitude                                     positive finite number
    0x34  (none)                                        +inf
    0x40  escaped UTF-8 (surrogatepass), 0x00 0x00      str
    0x50  escaped bytes, 0x00 0x00                      bytes

Magnitude of a finite nonzero number.  Write |x| = 2**E * 1.m exactly, where m
is the w bits after the leading 1 with no trailing zero bits (w == 0 when |x|
is a power of two):

    OFFSET  SIZE  DESCRIPTION
    0       2     E + 1074, unsigned big-endian; E is in [-1074, 1023]
                  (-1074: the smallest float subnormal; 63: the largest int
                  accepted; 1023: the largest float); other values are corrupt
    2       n     m left-aligned in n = ceil(w / 7) groups of 7 bits, the last
                  group zero-padded on the right; each byte is
                  group << 1 | more, more = 1 when another group follows.
                  w == 0 is the single byte 0x00 (n = 1).  n <= 9 (w <= 63
                  for ints, w <= 52 for floats); the last group is nonzero
                  unless it is that lone 0x00.

Escaped string: every 0x00 byte of the UTF-8 (or of the bytes) is written as
0x00 0xFF, and the end is 0x00 0x00.

Why this orders correctly:
- Tags order the types, and the number tags order -inf < negative < 0 <
  positive < +inf.
- Magnitudes: the fixed-width exponent decides first.  With equal exponents the
  groups compare the fractions bit by bit; where the data bits of one group are
  equal but one encoding ends (more = 0) and the other goes on (more = 1), the
  one that goes on has a further 1 bit, so it is larger, and 1 > 0 says so.
  The encoding ends with the byte whose more bit is 0, so it is prefix-free.
- Complementing every byte of prefix-free strings reverses their order (two
  different ones differ at a byte inside both), so a larger negative magnitude
  sorts lower, and the complemented form is prefix-free too.
- Escaped strings: at the first differing raw byte, or where one raw string
  ends, the 0x00 0x00 terminator or the 0x00 0xFF escape compares below any
  nonzero byte and the terminator below the escape.  UTF-8 byte order is code
  point order, lone surrogates (surrogatepass) included.
- Tuples: the first unequal elements differ at a byte inside both encodings
  (prefix-free), so that byte decides, as tuple comparison does.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

from .errors import CorruptPage, EncodeError

__all__ = [
    "ABSENT",
    "ABSENT_TAG",
    "BYTES",
    "FALSE",
    "INT_MAX",
    "INT_MIN",
    "NEG",
    "NEG_INF",
    "NONE",
    "POS",
    "POS_INF",
    "STR",
    "TRUE",
    "ZERO",
    "KeyValue",
    "decode_key",
    "encode_key",
    "prefix_end",
    "rank_bounds",
    "sort_key",
]

KeyValue: TypeAlias = bool | int | float | str | bytes | None

# Tag bytes.  Gaps between the type groups leave room for a future type without
# renumbering the ones on disk.
ABSENT_TAG = 0x08
NONE = 0x10
FALSE = 0x20
TRUE = 0x21
NEG_INF = 0x30
NEG = 0x31
ZERO = 0x32
POS = 0x33
POS_INF = 0x34
STR = 0x40
BYTES = 0x50


class _Absent:
    """The ABSENT marker's type: one instance, kept by pickling and copying."""

    __slots__ = ()
    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> str:
        return "ABSENT"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()

# The first tag of each rank (sort_key's first item), and the end of the last.
_RANK_TAGS = (NONE, FALSE, NEG_INF, STR, BYTES, BYTES + 0x10)

# The int range accepted: the union of int64 and uint64, so a key taken from
# either kind of column elsewhere fits.  Beyond it an int could not come back
# as an int from a float-sized magnitude reliably (I3), and unbounded ints would
# make keys of unbounded size.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

# E + EXP_BIAS is stored unsigned; E = -1074 is 2**-1074, the smallest subnormal.
EXP_BIAS = 1074
EXP_MIN = -1074
EXP_MAX = 1023  # the largest float exponent; ints stop at 63
MAX_GROUPS = 9  # 63 fraction bits of a uint64 need 9 groups of 7; a float needs 8

# Precomputed pieces, so the hot path concatenates instead of packing.
_NONE_B = bytes([NONE])
_ABSENT_B = bytes([ABSENT_TAG])
_FALSE_B = bytes([FALSE])
_TRUE_B = bytes([TRUE])
_NEG_INF_B = bytes([NEG_INF])
_ZERO_B = bytes([ZERO])
_POS_INF_B = bytes([POS_INF])
_STR_B = bytes([STR])
_BYTES_B = bytes([BYTES])
_ESCAPE = b"\x00\xff"
_END = b"\x00\x00"
_POW2_ONLY = b"\x00"  # the fraction of a power of two (w == 0)
_INVERT = bytes(range(255, -1, -1))  # bytes.translate table: b -> ~b & 0xFF
_MISSING: Any = object()

# A number is built as one int "word" (tag, biased exponent, group bytes) and
# written with a single int.to_bytes, rather than concatenating bytes objects
# group by group (measured for (12345,): 0.4 us this way, 1.2 us that way).
# _W8[E + EXP_BIAS] is the POS tag and exponent shifted to leave room for one
# group byte, _W16 for two.
_W8 = [(POS << 16 | b) << 8 for b in range(EXP_MAX + EXP_BIAS + 1)]
_W16 = [w << 8 for w in _W8]

# _spread moves 7-bit group j (counting from the last) from bit 7j to bit 8j in
# four mask-and-shift steps (j = 8a + 4b + 2c + d moves by 8, then 4, 2, 1;
# no moved group lands on another), rather than a Python loop over the groups:
# measured, the loop costs ~0.16 us a group (1.6 us for nine), the four steps
# ~0.5 us whatever the count.  _M8 .. _M1 select the groups that move at each
# step, at the positions they hold by then; _K8 .. _K1 the ones that stay.
_M8 = 0x7F00000000000000
_M4 = 0x00FFFFFFF0000000
_M2 = 0x0FFFC0000FFFC000
_M1 = 0x3F803F803F803F80
_K8, _K4, _K2, _K1 = ~_M8, ~_M4, ~_M2, ~_M1
# _MORE[n]: the "more" bit of every group byte but the last, for n groups.
_MORE = [sum(1 << 8 * j for j in range(1, n)) for n in range(MAX_GROUPS + 1)]


def encode_key(values: tuple[KeyValue, ...]) -> bytes:
    """Encode a key tuple so that bytewise order is key order (I1, I2).

    >>> encode_key((1, "a")) < encode_key((1, "b")) < encode_key((2,))
    True
    >>> encode_key((5,)) == encode_key((5.0,))
    True
    >>> encode_key(()) == b""
    True
    """
    if type(values) is not tuple:
        # Only a tuple: a bare str or bytes would otherwise be taken element by
        # element without complaint, and one exact type check is cheapest.
        raise EncodeError(f"key must be a tuple, not {type(values).__name__}")
    n = len(values)
    if n == 1:
        # The commonest key: a single primary-key or index column.
        return _encode_element(values[0], 0)
    if n == 2:
        # A two-column index, or an index value with its primary key: skips
        # the list and join (measured 1.0 us -> 0.7 us for (12345, "user123")).
        return _encode_element(values[0], 0) + _encode_element(values[1], 1)
    return b"".join([_encode_element(v, i) for i, v in enumerate(values)])


def _encode_element(v: Any, i: int) -> bytes:
    # Exact type checks: bool before int (True is not a number here), and
    # subclasses (IntEnum, str subclasses) are rejected rather than guessed at.
    # `v` is Any because mypy does not narrow through `t`; the typed locals
    # below say what each branch holds.
    t = type(v)
    if t is int:
        if v > 0:
            if v > INT_MAX:
                raise EncodeError(f"int {v} is above the key maximum 2**64 - 1", field=f"[{i}]")
            w = _int_word(v)
            return w.to_bytes((w.bit_length() + 7) >> 3, "big")
        if v < 0:
            if v < INT_MIN:
                raise EncodeError(f"int {v} is below the key minimum -2**63", field=f"[{i}]")
            return _negate(_int_word(-v))
        return _ZERO_B
    if t is str:
        text: str = v
        return _STR_B + text.encode("utf-8", "surrogatepass").replace(b"\x00", _ESCAPE) + _END
    if t is bytes:
        raw: bytes = v
        return _BYTES_B + raw.replace(b"\x00", _ESCAPE) + _END
    if t is float:
        return _encode_float(v, i)
    if v is None:
        return _NONE_B
    if t is bool:
        return _TRUE_B if v else _FALSE_B
    if v is ABSENT:
        return _ABSENT_B
    raise EncodeError(f"unsupported key type {t.__name__}", field=f"[{i}]")


def _encode_float(x: float, i: int) -> bytes:
    if x != x:
        raise EncodeError("NaN cannot be ordered, so it cannot be in a key", field=f"[{i}]")
    if x == 0.0:
        return _ZERO_B  # -0.0 == 0.0 == 0 (I3)
    if x == math.inf:
        return _POS_INF_B
    if x == -math.inf:
        return _NEG_INF_B
    # as_integer_ratio is exact (den is a power of two): no rounding anywhere.
    num, den = x.as_integer_ratio()
    neg = num < 0
    if neg:
        num = -num
    if den == 1:
        # Integral: drop the trailing zero bits so num is odd as below, rather
        # than spreading up to 1023 bits of zeros (1e300) through _int_word.
        k = 1 - (num & -num).bit_length()
        num >>= -k
    else:
        k = den.bit_length() - 1
    fw = num.bit_length() - 1  # fraction bits below the leading 1, the last one a 1
    ng = (fw + 6) // 7 or 1  # a power of two still has its lone 0x00 group
    x7 = (num ^ (1 << fw)) << (7 * ng - fw)  # left-align in ng groups
    w = (POS << 16 | (fw - k + EXP_BIAS)) << 8 * ng | _spread(x7, ng)
    return _negate(w) if neg else w.to_bytes((w.bit_length() + 7) >> 3, "big")


def _int_word(n: int) -> int:
    """The POS-tagged encoding of a positive integer, as an int (see _W8)."""
    e = n.bit_length() - 1
    frac = n ^ (1 << e)  # the e bits below the leading 1
    if e <= 14:
        # At most two groups (n < 32768): no loop, and left-aligning the e bits
        # in 14 keeps any trailing zeros in the padding, so only an all-zero
        # second group needs dropping.
        x = frac << (14 - e)
        lo = x & 0x7F
        if lo:
            return _W16[e + EXP_BIAS] | x >> 7 << 9 | 0x100 | lo << 1
        return _W8[e + EXP_BIAS] | x >> 6
    if not frac:
        return _W8[e + EXP_BIAS]  # a power of two: the lone 0x00 group
    ng = (e + 6) // 7
    x = frac << (7 * ng - e)
    drop = ((x & -x).bit_length() - 1) // 7  # trailing all-zero groups (canonical)
    ng -= drop
    return (POS << 16 | (e + EXP_BIAS)) << 8 * ng | _spread(x >> 7 * drop, ng)


def _spread(x: int, ng: int) -> int:
    """ng (1..9) 7-bit groups in x -> ng group bytes, each group << 1 | more."""
    if ng == 1:
        return x << 1
    if ng == 2:
        return x >> 7 << 9 | 0x100 | (x & 0x7F) << 1
    x = x & _K8 | (x & _M8) << 8
    x = x & _K4 | (x & _M4) << 4
    x = x & _K2 | (x & _M2) << 2
    x = x & _K1 | (x & _M1) << 1
    return x << 1 | _MORE[ng]


def _negate(word: int) -> bytes:
    """NEG and the complement of every magnitude byte of a POS-tagged word."""
    nbytes = (word.bit_length() + 7) >> 3
    s = 8 * nbytes - 8
    return (word ^ ((1 << s) - 1) ^ ((POS ^ NEG) << s)).to_bytes(nbytes, "big")


def decode_key(data: bytes) -> tuple[KeyValue, ...]:
    """Decode an encoded key (I3, I4); malformed or non-canonical input is CorruptPage (I6).

    `data` may be bytes, bytearray or memoryview; another type is a TypeError.

    >>> decode_key(encode_key((None, True, 5.0, 0.5, "s", b"b")))
    (None, True, 5, 0.5, 's', b'b')
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if type(data) is not bytes:
        # A caller bug, not a corrupt page: say so with the ordinary error.
        raise TypeError(f"decode_key needs bytes, not {type(data).__name__}")
    out: list[KeyValue] = []
    pos = 0
    n = len(data)
    while pos < n:
        tag = data[pos]
        pos += 1
        if tag == STR:
            raw, pos = _read_escaped(data, pos)
            try:
                out.append(raw.decode("utf-8", "surrogatepass"))
            except UnicodeDecodeError as exc:
                raise CorruptPage(f"key str element ending at byte {pos} is not UTF-8") from exc
        elif tag == BYTES:
            raw, pos = _read_escaped(data, pos)
            out.append(raw)
        elif tag in (POS, NEG):
            number, pos = _read_number(data, pos, tag == NEG)
            out.append(number)
        else:
            const = _CONSTANTS.get(tag, _MISSING)
            if const is _MISSING:
                raise CorruptPage(f"unknown key tag 0x{tag:02x} at byte {pos - 1}")
            out.append(const)
    return tuple(out)


# Tags that are the whole element.
_CONSTANTS: dict[int, KeyValue] = {
    ABSENT_TAG: ABSENT,
    NONE: None,
    FALSE: False,
    TRUE: True,
    NEG_INF: -math.inf,
    ZERO: 0,
    POS_INF: math.inf,
}


def _read_escaped(data: bytes, pos: int) -> tuple[bytes, int]:
    """Unescape a str/bytes body starting at pos; return it and the position after it."""
    start = pos
    parts = []
    n = len(data)
    while True:
        z = data.find(b"\x00", pos)
        if z < 0 or z + 1 >= n:
            raise CorruptPage(f"key string element from byte {start - 1} has no terminator")
        parts.append(data[pos:z])
        nxt = data[z + 1]
        if nxt == 0x00:
            return b"\x00".join(parts), z + 2
        if nxt != 0xFF:
            raise CorruptPage(f"bad escape 0x00 0x{nxt:02x} at key byte {z}")
        pos = z + 2


def _read_number(data: bytes, pos: int, neg: bool) -> tuple[int | float, int]:
    """Decode a magnitude at pos (complemented when neg); return the value and next pos.

    Steps: find the end (the group whose more bit is 0), undo the complement,
    rebuild |x| = (2**w + m) * 2**(E - w), then apply the canonical-number rule
    (I3), refusing anything encode_key would not have written (I4).
    """
    # 1. Find the end: at most MAX_GROUPS group bytes after the 2-byte exponent.
    last_more = 1 if neg else 0  # complemented, the last group's more bit reads 1
    end = pos + 2
    limit = min(len(data), end + MAX_GROUPS)
    while True:
        if end >= limit:
            raise CorruptPage(f"key number at byte {pos - 1} is truncated or too long")
        b = data[end]
        end += 1
        if b & 1 == last_more:
            break
    chunk = data[pos:end].translate(_INVERT) if neg else data[pos:end]
    e = (chunk[0] << 8 | chunk[1]) - EXP_BIAS
    groups = chunk[2:]
    # 2. The fraction bits: canonical means the last group carries the last 1 bit,
    #    except for the lone 0x00 of a power of two.
    if groups == _POW2_ONLY:
        frac, w = 0, 0
    else:
        if groups[-1] >> 1 == 0:
            raise CorruptPage(f"key number at byte {pos - 1} has a non-canonical fraction")
        frac = 0
        for g in groups:
            frac = frac << 7 | g >> 1
        tz = (frac & -frac).bit_length() - 1
        frac >>= tz
        w = 7 * len(groups) - tz
    if e > EXP_MAX or e - w < EXP_MIN:
        raise CorruptPage(f"key number at byte {pos - 1} has exponent {e} out of range")
    # 3. The value, and which type encode_key could have been given (I3).
    p = (1 << w) | frac
    shift = e - w
    if shift >= 0:
        n = p << shift
        if neg:
            n = -n
        if INT_MIN <= n <= INT_MAX:
            return n, end
        if w <= 52:  # an integral float beyond the int range, e.g. 1e300
            return float(n), end
    elif w <= 52:  # a fraction: only a float can be one, and it must fit 53 bits
        x = math.ldexp(float(p), shift)  # exact: p < 2**53 and 2**shift >= 2**-1074
        return (-x if neg else x), end
    raise CorruptPage(f"key number at byte {pos - 1} is neither an int nor a float")


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string that starts with `prefix`.

    A prefix scan reads the half-open range [prefix, prefix_end(prefix)).  None
    means there is no upper bound (prefix is empty or all 0xFF): scan to the end.

    >>> prefix_end(b"ab"), prefix_end(b"a\\xff"), prefix_end(b"\\xff"), prefix_end(b"")
    (b'ac', b'b', None, None)
    """
    # Trailing 0xFF bytes cannot be incremented; drop them and carry into the
    # byte before.  (Appending bytes would never work: b"ab" + anything is
    # still a string starting with b"ab".)
    stripped = bytes(prefix).rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def rank_bounds(rank: int) -> tuple[bytes, bytes]:
    """[lo, hi): the encoded keys whose first element has `rank` (0 None, 1 bool,
    2 number, 3 str, 4 bytes), whatever follows it.

    >>> lo, hi = rank_bounds(2)
    >>> lo <= encode_key((-math.inf, "x")) < encode_key((math.inf,)) < hi <= encode_key(("",))
    True
    """
    if not 0 <= rank < len(_RANK_TAGS) - 1:
        raise ValueError(f"no key rank {rank!r}")
    return bytes([_RANK_TAGS[rank]]), bytes([_RANK_TAGS[rank + 1]])


def sort_key(value: KeyValue) -> tuple[int, Any]:
    """The reference order of one key element: (type rank, value).

    The specification of I1 in Python terms, used by the tests: Python compares
    the int and float values exactly, and lists of these tuples compare as key
    tuples do.  Unsupported types and NaN raise EncodeError, as in encode_key.

    >>> sorted([b"", "", 2, 1.5, True, None], key=sort_key)
    [None, True, 1.5, 2, '', b'']
    """
    t = type(value)
    if value is None:
        return (0, 0)
    if value is ABSENT:
        return (-1, 0)
    if t is bool:
        return (1, value)
    if t is int or t is float:
        if value != value:
            raise EncodeError("NaN cannot be ordered, so it cannot be in a key")
        return (2, value)
    if t is str:
        return (3, value)
    if t is bytes:
        return (4, value)
    raise EncodeError(f"unsupported key type {t.__name__}")
