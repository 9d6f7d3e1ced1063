"""Tests of storage/keys.py: order equivalence (I1), prefixes (I2), canonical
numbers and round trips (I3, I4), rejected keys (I5), corrupt input (I6)."""

from __future__ import annotations

import doctest
import enum
import math
import sys
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from storage import keys
from storage.errors import CorruptPage, EncodeError
from storage.keys import (
    ABSENT,
    INT_MAX,
    INT_MIN,
    KeyValue,
    decode_key,
    encode_key,
    prefix_end,
    rank_bounds,
    sort_key,
)

# ---------------------------------------------------------------- strategies

INT_EDGES = [
    INT_MIN,
    INT_MIN + 1,
    -(2**53) - 1,
    -(2**53),
    -1,
    0,
    1,
    127,
    128,
    255,
    256,
    2**14,
    2**15,
    2**53,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**63 + 1,
    INT_MAX - 1,
    INT_MAX,
]
FLOAT_EDGES = [
    0.0,
    -0.0,
    5e-324,  # smallest subnormal
    -5e-324,
    2.225073858507201e-308,  # largest subnormal
    2.2250738585072014e-308,  # smallest normal
    sys.float_info.max,
    -sys.float_info.max,
    math.inf,
    -math.inf,
    0.5,
    1.5,
    0.1,
    -0.1,
    1e300,
    -1e300,
    1e-300,
    float(2**53),
    float(2**53 + 2),
    -float(2**53),
    float(2**63),
    -float(2**63),
    float(2**64),  # just above INT_MAX: stays a float
    -float(2**64),
    18446744073709549568.0,  # the largest float below 2**64: decodes as an int
]
# Values that are equal or adjacent across types, so pairs often tie or differ late.
POOL: list[KeyValue] = [
    None,
    False,
    True,
    0,
    0.0,
    -0.0,
    1,
    1.0,
    -1,
    5,
    5.0,
    2**53,
    float(2**53),
    2**53 + 1,
    "",
    "a",
    "a\x00",
    "\x00",
    b"",
    b"a",
    b"\x00",
    b"\xff",
]

ints = st.one_of(
    st.integers(INT_MIN, INT_MAX),
    st.integers(-300, 300),
    st.integers(-(2**20), 2**20),
    st.sampled_from(INT_EDGES),
    st.integers(2**53 - 4, 2**53 + 4),
    st.integers(-(2**53) - 4, -(2**53) + 4),
)
floats = st.one_of(
    st.floats(allow_nan=False),
    st.floats(min_value=-1e-305, max_value=1e-305),  # subnormals and tiny normals
    st.sampled_from(FLOAT_EDGES),
    st.integers(-(2**65), 2**65).map(float),  # integral floats around the int range
    st.integers(2**53 - 4, 2**53 + 4).map(float),
    st.integers(-300, 300).map(float),
)
numbers = st.one_of(ints, floats)
texts = st.text(
    st.one_of(
        st.characters(exclude_categories=()),  # surrogates included
        st.sampled_from("\x00\x01\x7f\x80\ud7ff\ud800\udbff\udc00\udfff\ue000\uffff\U0010ffff"),
    ),
    max_size=6,
)
binaries = st.one_of(
    st.binary(max_size=6),
    st.lists(st.sampled_from([0x00, 0x01, 0xFE, 0xFF]), max_size=6).map(bytes),
)
elements = st.one_of(
    st.none(), st.booleans(), ints, floats, texts, binaries, st.sampled_from(POOL), st.just(ABSENT)
)


def key_tuples(max_size: int = 4) -> st.SearchStrategy[tuple[KeyValue, ...]]:
    return st.lists(elements, max_size=max_size).map(tuple)


@st.composite
def key_pairs(draw: st.DrawFn) -> tuple[tuple[KeyValue, ...], tuple[KeyValue, ...]]:
    """Two keys that share a common prefix, so comparisons often go past element 0."""
    common = draw(key_tuples(3))
    return common + draw(key_tuples(3)), common + draw(key_tuples(3))


# ---------------------------------------------------------------- helpers


def ref(key: tuple[KeyValue, ...]) -> list[tuple[int, Any]]:
    """The reference order: element-wise sort_key, with list (= tuple) semantics."""
    return [sort_key(v) for v in key]


def cmp(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def canonical(v: KeyValue) -> KeyValue:
    """What decode_key returns for v (I3)."""
    if type(v) is float and v.is_integer() and INT_MIN <= v <= INT_MAX:
        return int(v)
    return v


def decode_strictly(data: bytes) -> None:
    """decode_key either refuses data with CorruptPage or took a canonical encoding (I4, I6)."""
    try:
        decoded = decode_key(data)
    except CorruptPage:
        return
    assert encode_key(decoded) == data


def spec_magnitude(e: int, frac_bits: str) -> bytes:
    """The magnitude table of the module docstring, written out slowly and literally."""
    if not frac_bits:
        groups = b"\x00"
    else:
        bits = frac_bits + "0" * (-len(frac_bits) % 7)
        gs = [int(bits[i : i + 7], 2) for i in range(0, len(bits), 7)]
        groups = bytes(g << 1 | (j < len(gs) - 1) for j, g in enumerate(gs))
    return (e + 1074).to_bytes(2, "big") + groups


def spec_number(x: int | float) -> bytes:
    """A number's element bytes from the docstring: tag, then |x| = 2**E * 1.m."""
    if x == 0:
        return b"\x32"
    if x == math.inf:
        return b"\x34"
    if x == -math.inf:
        return b"\x30"
    num, den = x.as_integer_ratio()
    mag = spec_magnitude(
        abs(num).bit_length() - den.bit_length(),  # E = floor(log2 |x|), den a power of 2
        format(abs(num), "b")[1:].rstrip("0"),
    )
    return b"\x31" + bytes(255 - b for b in mag) if num < 0 else b"\x33" + mag


# ---------------------------------------------------------------- I1: order


@settings(max_examples=600)
@given(key_pairs())
def test_byte_order_is_key_order(pair: tuple[tuple[KeyValue, ...], tuple[KeyValue, ...]]) -> None:
    a, b = pair
    ea, eb = encode_key(a), encode_key(b)
    assert cmp(ea, eb) == cmp(ref(a), ref(b))
    assert (ea == eb) == (ref(a) == ref(b))


@settings(max_examples=600)
@given(numbers, numbers)
def test_numbers_order_by_exact_value(x: int | float, y: int | float) -> None:
    # ints near 2**53 against floats: Python's mixed comparison is exact, and so are we.
    assert cmp(encode_key((x,)), encode_key((y,))) == cmp(x, y)


@settings(max_examples=150)
@given(st.lists(key_tuples(), max_size=25))
def test_sorting_by_encoding_equals_sorting_by_reference(
    items: list[tuple[KeyValue, ...]],
) -> None:
    by_ref = sorted(items, key=ref)
    assert [encode_key(k) for k in by_ref] == sorted(encode_key(k) for k in items)


@settings(max_examples=300)
@given(key_tuples(max_size=3).filter(lambda k: bool(k)))
def test_rank_bounds_hold_exactly_the_keys_of_that_rank(key: tuple[KeyValue, ...]) -> None:
    encoded = encode_key(key)
    rank = ref(key)[0][0]
    for r in range(5):
        lo, hi = rank_bounds(r)
        assert (lo <= encoded < hi) == (r == rank)


def test_absent_is_a_singleton_below_none() -> None:
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT
    assert copy.deepcopy(ABSENT) is ABSENT and type(ABSENT)() is ABSENT
    assert encode_key((ABSENT,)) < encode_key((None,)) < encode_key((False,))
    assert decode_key(encode_key((ABSENT, None, 1))) == (ABSENT, None, 1)
    assert encode_key((ABSENT,)) == bytes([keys.ABSENT_TAG])
    with pytest.raises(ValueError, match="rank"):
        rank_bounds(5)


def test_type_order_and_number_edges() -> None:
    ordered: list[KeyValue] = [
        None,
        False,
        True,
        -math.inf,
        -sys.float_info.max,
        float(INT_MIN) * 2,
        INT_MIN,
        -(2**53) - 1,
        -float(2**53),
        -1,
        -0.5,
        -5e-324,
        0,
        5e-324,
        0.5,
        1,
        2**53,
        2**53 + 1,
        float(2**53 + 2),
        2**63 - 1,
        INT_MAX,
        float(2**64),
        sys.float_info.max,
        math.inf,
        "",
        "\x00",
        "\x00\x00",
        "\x01",
        "\ud7ff",
        "\ud800",  # surrogates sort by code point, between U+D7FF and U+E000
        "\udfff",
        "\ue000",
        "\U0010ffff",
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x00\xff",
        b"\x01",
        b"\xff",
    ]
    encoded = [encode_key((v,)) for v in ordered]
    assert encoded == sorted(encoded)
    assert len(set(encoded)) == len(encoded)
    # bool is not a number: True sorts below every number, and 1 is not True.
    assert encode_key((True,)) < encode_key((-math.inf,))
    assert encode_key((True,)) != encode_key((1,))


# ---------------------------------------------------------------- I2: prefixes


@settings(max_examples=300)
@given(key_tuples(6))
def test_every_tuple_prefix_is_a_byte_prefix(key: tuple[KeyValue, ...]) -> None:
    full = encode_key(key)
    for k in range(len(key)):
        part = encode_key(key[:k])
        assert full.startswith(part)
        assert part < full


@settings(max_examples=400)
@given(key_pairs(), st.integers(0, 6))
def test_prefix_range_holds_exactly_the_keys_with_that_prefix(
    pair: tuple[tuple[KeyValue, ...], tuple[KeyValue, ...]], k: int
) -> None:
    a, b = pair
    p = a[:k]
    lo = encode_key(p)
    hi = prefix_end(lo)
    eb = encode_key(b)
    inside = ref(b)[: len(p)] == ref(p)
    assert (lo <= eb and (hi is None or eb < hi)) == inside
    if not inside and ref(b) > ref(p):
        # A key just past the prefix range is at or above its end.
        assert hi is not None and eb >= hi


@settings(max_examples=400)
@given(st.binary(max_size=5), st.binary(max_size=5), st.binary(max_size=7))
def test_prefix_end_is_the_least_upper_bound(prefix: bytes, suffix: bytes, other: bytes) -> None:
    end = prefix_end(prefix)
    if end is None:
        assert prefix.strip(b"\xff") == b""
        return
    assert prefix < end and not end.startswith(prefix)
    assert prefix + suffix < end
    # Minimal: any string above the prefix that does not start with it is >= end.
    if other > prefix and not other.startswith(prefix):
        assert other >= end
    if other.startswith(prefix):
        assert other < end


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"", None),
        (b"\xff", None),
        (b"\xff\xff", None),
        (b"a", b"b"),
        (b"a\xff", b"b"),
        (b"a\xfe", b"a\xff"),
        (b"\x00", b"\x01"),
        (b"a\x00\xff\xff", b"a\x01"),
    ],
)
def test_prefix_end_examples(prefix: bytes, end: bytes | None) -> None:
    assert prefix_end(prefix) == end


def test_composite_index_prefix_scan() -> None:
    rows = [(1, "a"), (1, "b"), (1, None), (1.5, "x"), (2, ""), (0, "z"), (1, "\uffff", b"")]
    lo = encode_key((1,))
    hi = prefix_end(lo)
    assert hi is not None
    hits = {r for r in rows if lo <= encode_key(r) < hi}
    assert hits == {(1, "a"), (1, "b"), (1, None), (1, "\uffff", b"")}


# ---------------------------------------------------------------- I3, I4: round trip


@settings(max_examples=500)
@given(key_tuples(6))
def test_round_trip_is_exact_with_canonical_numbers(key: tuple[KeyValue, ...]) -> None:
    decoded = decode_key(encode_key(key))
    assert len(decoded) == len(key)
    for got, v in zip(decoded, key, strict=True):
        want = canonical(v)
        assert type(got) is type(want)  # str stays str, bytes bytes, bool bool
        assert got == want
    assert encode_key(decoded) == encode_key(key)


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        (5.0, 5),
        (-0.0, 0),
        (0.0, 0),
        (float(INT_MIN), INT_MIN),
        (18446744073709549568.0, 18446744073709549568),
        (float(2**64), float(2**64)),  # beyond the int range: stays a float
        (-float(2**64), -float(2**64)),
        (1e300, 1e300),
        (0.5, 0.5),
        (math.inf, math.inf),
        (True, True),
        (False, False),
        (1, 1),
    ],
)
def test_canonical_number_rule(value: KeyValue, decoded: KeyValue) -> None:
    (got,) = decode_key(encode_key((value,)))
    assert type(got) is type(decoded) and got == decoded


@pytest.mark.parametrize(
    ("a", "b"), [(5, 5.0), (0, -0.0), (0.0, -0.0), (2**53, float(2**53)), (INT_MIN, -(2.0**63))]
)
def test_equal_numbers_encode_identically(a: KeyValue, b: KeyValue) -> None:
    assert encode_key((a,)) == encode_key((b,))


@settings(max_examples=500)
@given(numbers)
def test_number_bytes_match_the_documented_table(x: int | float) -> None:
    assert encode_key((x,)) == spec_number(x)


@pytest.mark.parametrize(
    ("key", "hexbytes"),
    [
        ((), ""),
        ((None,), "10"),
        ((False, True), "2021"),
        ((-math.inf, 0, math.inf), "303234"),
        ((1,), "33043200"),  # E = 0, w = 0: the lone 0x00 group
        ((5,), "33043440"),  # E = 2, m = 01 -> group 0100000
        ((0.5,), "33043100"),
        ((-5,), "31fbcbbf"),
        ((12345,), "33043f81e4"),  # two groups: more bit set on the first
        ((INT_MAX,), "330471fffffffffffffffffe"),
        ((5e-324,), "33000000"),
        (("a\x00",), "406100ff0000"),
        ((b"\x00\xff",), "5000ffff0000"),
        (("\ud800",), "40eda0800000"),
    ],
)
def test_pinned_encodings(key: tuple[KeyValue, ...], hexbytes: str) -> None:
    # These bytes are on disk: changing one is a file format change (docs/format.md).
    assert encode_key(key).hex() == hexbytes
    assert decode_key(bytes.fromhex(hexbytes)) == tuple(canonical(v) for v in key)


def test_tag_constants_are_the_documented_bytes() -> None:
    assert (keys.NONE, keys.FALSE, keys.TRUE) == (0x10, 0x20, 0x21)
    assert (keys.NEG_INF, keys.NEG, keys.ZERO, keys.POS, keys.POS_INF) == (
        0x30,
        0x31,
        0x32,
        0x33,
        0x34,
    )
    assert (keys.STR, keys.BYTES) == (0x40, 0x50)


def test_decode_accepts_bytes_like() -> None:
    data = encode_key((1, "a"))
    assert decode_key(bytearray(data)) == decode_key(memoryview(data)) == (1, "a")
    with pytest.raises(TypeError):
        decode_key("not bytes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- I5: rejected keys


class Color(enum.IntEnum):
    RED = 1


class MyStr(str):
    pass


class MyFloat(float):
    pass


@pytest.mark.parametrize(
    "bad",
    [
        set(),
        [],
        (),
        [1],
        (1,),
        bytearray(b"a"),
        memoryview(b"a"),
        Color.RED,
        MyStr("a"),
        MyFloat(1.0),
        1j,
        object(),
        frozenset(),
    ],
    ids=lambda v: type(v).__name__,
)
@pytest.mark.parametrize("position", [0, 2])
def test_unsupported_types_are_rejected_by_position(bad: Any, position: int) -> None:
    key = (*(1, "a")[:position], bad)
    with pytest.raises(EncodeError) as info:
        encode_key(key)
    assert info.value.field == f"[{position}]"
    assert info.value.reason == f"unsupported key type {type(bad).__name__}"


@pytest.mark.parametrize("position", [0, 1, 3])
def test_nan_is_rejected_by_position(position: int) -> None:
    key = (*(None, 1, "a", b"b")[:position], math.nan)
    with pytest.raises(EncodeError) as info:
        encode_key(key)
    assert info.value.field == f"[{position}]"
    assert "NaN cannot be ordered" in info.value.reason
    with pytest.raises(EncodeError):
        encode_key((-math.nan,))


@pytest.mark.parametrize("n", [INT_MAX + 1, INT_MIN - 1, 2**100, -(2**100)])
def test_ints_outside_the_range_are_rejected(n: int) -> None:
    with pytest.raises(EncodeError) as info:
        encode_key(("x", n))
    assert info.value.field == "[1]"
    assert str(n) in info.value.reason


@pytest.mark.parametrize("key", [[1], "ab", b"ab", 1, None])
def test_key_must_be_a_tuple(key: Any) -> None:
    with pytest.raises(EncodeError, match="key must be a tuple"):
        encode_key(key)


def test_sort_key_rejects_what_encode_key_rejects() -> None:
    with pytest.raises(EncodeError, match="NaN"):
        sort_key(math.nan)
    with pytest.raises(EncodeError, match="unsupported key type Color"):
        sort_key(Color.RED)


# ---------------------------------------------------------------- I6: corrupt input


def _pos(e: int, frac_bits: str) -> bytes:
    return b"\x33" + spec_magnitude(e, frac_bits)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",  # unknown tag
        b"\xff",
        b"\x33",  # truncated number
        b"\x33\x04",
        b"\x33\x04\x34\x01",  # a group says more follows; nothing does
        b"\x31\xfb",
        b"\x33\x04\x34" + b"\x01" * 10,  # more groups than any int or float has
        b"\x33\x04\x34\x01\x00",  # last group all zero: not canonical
        b"\x33\x04\x32\x01\x00",  # the same with E = 0
        b"\x33\xff\xff\x00",  # exponent above 1023
        b"\x33\x00\x00\x80",  # E = -1074 with a fraction bit: below 2**-1074's grid
        _pos(0, "0" * 52 + "1"),  # 54 significant bits, not an integer: no float has it
        _pos(64, "0" * 52 + "1"),  # an integer above the int range that is no float
        b"\x31" + bytes(255 - b for b in spec_magnitude(63, "0" * 62 + "1")),  # -(2**63 + 1)
        b"\x40abc",  # unterminated str
        b"\x40abc\x00",
        b"\x40a\x00\x01\x00\x00",  # bad escape
        b"\x40\xff\x00\x00",  # not UTF-8
        b"\x40\xc0\x80\x00\x00",  # overlong UTF-8
        b"\x50",  # unterminated bytes
        b"\x50\x00\xfe",
        b"\x10\x33",  # a valid element, then garbage
    ],
)
def test_corrupt_encodings_raise_corrupt_page(data: bytes) -> None:
    with pytest.raises(CorruptPage) as info:
        decode_key(data)
    assert info.value.pgno is None


@settings(max_examples=800)
@given(st.binary(max_size=24))
def test_random_bytes_decode_canonically_or_raise_corrupt_page(data: bytes) -> None:
    decode_strictly(data)


@settings(max_examples=800)
@given(
    st.sampled_from([0x10, 0x20, 0x21, 0x30, 0x31, 0x32, 0x33, 0x34, 0x40, 0x50]),
    st.binary(max_size=14),
)
def test_tagged_random_bodies_decode_canonically_or_raise_corrupt_page(
    tag: int, body: bytes
) -> None:
    decode_strictly(bytes([tag]) + body)


@settings(max_examples=500)
@given(key_tuples(4), st.data())
def test_mutated_encodings_decode_canonically_or_raise_corrupt_page(
    key: tuple[KeyValue, ...], data: st.DataObject
) -> None:
    enc = encode_key(key)
    assume(enc)
    i = data.draw(st.integers(0, len(enc) - 1))
    byte = data.draw(st.integers(0, 255))
    for mutated in (
        enc[:i],  # truncated
        enc[:i] + bytes([byte]) + enc[i + 1 :],  # one byte replaced
        enc[:i] + bytes([byte]) + enc[i:],  # one byte inserted
        enc[:i] + enc[i + 1 :],  # one byte deleted
    ):
        decode_strictly(mutated)


# ---------------------------------------------------------------- documentation


def test_docstring_examples() -> None:
    result = doctest.testmod(keys, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
