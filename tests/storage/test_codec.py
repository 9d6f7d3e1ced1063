"""Tests of storage/codec.py: exact round trip, refusals with their field path,
size limits, compression, and an unpack that only ever raises CorruptPage.

Invariant numbers (I1..I7) refer to the codec module's docstring.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import doctest
import enum
import math
import os
import struct
import threading
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import codec
from storage.codec import (
    COMPRESS_MIN,
    ENC_PLAIN,
    ENC_ZLIB,
    MAX_DEPTH,
    MAX_VALUE_SIZE,
    pack,
    pack_doc,
    unpack,
    unpack_doc,
    validate,
)
from storage.errors import CorruptPage, EncodeError, TooLarge

# -- helpers -----------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equality that also demands identical types at every node (I1).

    NaN equals NaN, -0.0 differs from 0.0, dict key order counts, and True is not 1.
    """
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return (
            list(a) == list(b)
            and all(type(k) is str for k in b)
            and all(same(a[k], b[k]) for k in a)
        )
    return bool(a == b)


def test_same_is_strict() -> None:
    assert same({"a": [1, 2.0, float("nan")]}, {"a": [1, 2.0, float("nan")]})
    assert not same(1, 1.0)
    assert not same(True, 1)
    assert not same("a", b"a")
    assert not same(0.0, -0.0)
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same([[1]], [(1,)])


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5)
    ),
    max_leaves=30,
)
documents = st.dictionaries(st.text(max_size=10), values, max_size=8)

# -- I1: exact round trip ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(doc=documents, compress=st.booleans())
def test_documents_round_trip_exactly(doc: dict[str, Any], compress: bool) -> None:
    data = pack_doc(doc, compress=compress)
    assert same(unpack_doc(data), doc)
    assert same(unpack(data), doc)
    assert pack_doc(doc, compress=compress) == data  # (I7) deterministic
    validate(doc)


@settings(max_examples=100, deadline=None)
@given(value=values, compress=st.booleans())
def test_any_value_round_trips_exactly(value: Any, compress: bool) -> None:
    assert same(unpack(pack(value, compress=compress)), value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**64 - 1,
        2**63,
        -1,
        0.0,
        -0.0,
        float("nan"),
        float("inf"),
        float("-inf"),
        5e-324,
        "",
        "naïve ☃ 𝄞",
        b"",
        b"\x00\xff",
        [],
        {},
        {"": {"": []}},
        [1, 1.0, True, "1", b"1", None],
    ],
    ids=repr,
)
def test_edge_values_round_trip(value: Any) -> None:
    for compress in (False, True):
        assert same(unpack(pack(value, compress=compress)), value)


def nested(levels: int) -> Any:
    """`levels` containers nested one in another, alternating dict and list."""
    value: Any = 1
    for i in range(levels):
        value = {"d": value} if i % 2 else [value]
    return value


def path_to_level(value: Any, level: int) -> str:
    """The path of the container at nesting `level` (the root is level 1)."""
    path = ""
    for _ in range(level - 1):
        if type(value) is dict:
            path, value = (f"{path}.d" if path else "d"), value["d"]
        else:
            path, value = f"{path}[0]", value[0]
    return path


def test_depth_limit_is_max_depth_containers() -> None:
    ok = nested(MAX_DEPTH)
    assert same(unpack(pack(ok)), ok)
    too_deep = nested(MAX_DEPTH + 1)
    with pytest.raises(EncodeError, match="nested deeper than 64") as info:
        pack(too_deep)
    assert info.value.field == path_to_level(too_deep, MAX_DEPTH + 1)
    assert info.value.field.startswith("[0].d[0].d")


def test_a_container_that_contains_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="contain itself"):
        pack(loop)
    doc: dict[str, Any] = {}
    doc["self"] = doc
    with pytest.raises(EncodeError) as info:
        pack_doc(doc)
    assert info.value.field == ".".join(["self"] * MAX_DEPTH)


# -- I2: refusals name the field ------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


class Mode(str, enum.Enum):
    FAST = "fast"


class MyFloat(float):
    pass


class MyList(list):  # type: ignore[type-arg]
    pass


class MyBytes(bytes):
    pass


Point = collections.namedtuple("Point", "x y")

REFUSED = [
    # (document, field, fragment of the message)
    ({"s": {1, 2}}, "s", "set is not supported"),
    ({"s": frozenset()}, "s", "use a list"),
    ({"t": (1, 2)}, "t", "tuple is not supported: it would decode as a list; use a list"),
    ({"p": Point(1, 2)}, "p", "would decode as a list"),
    ({"tags": ["a", "b", "c", (1,)]}, "tags[3]", "tuple"),
    ({"a": {"b": [{"c": set()}]}}, "a.b[0].c", "set"),
    ({"a": {"b": {"c": [1, [2, {"d": frozenset()}]]}}}, "a.b.c[1][1].d", "set"),
    (
        {"b": bytearray(b"x")},
        "b",
        "bytearray is not supported: it would decode as bytes; use bytes",
    ),
    ({"m": memoryview(b"x")}, "m", "use bytes"),
    ({"when": datetime.datetime(2024, 1, 1)}, "when", "datetime.datetime is not supported"),
    ({"d": datetime.date(2024, 1, 1)}, "d", "datetime.date"),
    ({"x": decimal.Decimal("1.5")}, "x", "decimal.Decimal"),
    ({"c": 1j}, "c", "complex is not supported"),
    ({"o": object()}, "o", "object is not supported"),
    ({"f": len}, "f", "builtin_function_or_method"),
    ({"e": Color.RED}, "e", "(a subclass of int) is not supported"),
    ({"e": Mode.FAST}, "e", "(a subclass of str)"),
    ({"f": MyFloat(1.5)}, "f", "subclass of float"),
    ({"l": MyList()}, "l", "subclass of list"),
    ({"b": MyBytes(b"x")}, "b", "subclass of bytes"),
    ({"o": collections.OrderedDict(a=1)}, "o", "OrderedDict (a subclass of dict)"),
    ({"dd": collections.defaultdict(list)}, "dd", "convert it with dict()"),
    ({"address": {1: "x"}}, "address", "dict key 1 (int) is not a str"),
    ({"a": [{"ok": 1, None: 2}]}, "a[0]", "dict key None"),
    ({(1, 2): "x"}, "", "dict key (1, 2) (tuple)"),
    ({b"k": 1}, "", "dict key b'k' (bytes)"),
    ({Mode.FAST: 1}, "", "dict key <Mode.FAST: 'fast'>"),
    ({"n": 2**64}, "n", "integer 18446744073709551616 is outside"),
    ({"n": -(2**63) - 1}, "n", "outside [-2**63, 2**64-1]"),
    ({"x": [0, 2**70]}, "x[1]", "outside"),
    ({"s": "ok\ud800"}, "s", "not valid UTF-8"),
    ({"a": {"k\udfff": 1}}, "a", "dict key 'k\\udfff' is not valid UTF-8"),
    # The first offence of a depth-first walk in insertion order is the one reported.
    ({"a": 1, "b": {"c": [1, set()]}, "d": (1,)}, "b.c[1]", "set"),
    ({"big": 2**64, "t": ()}, "big", "integer"),
    ({"t": (), "big": 2**64}, "t", "tuple"),
]


@pytest.mark.parametrize(("doc", "field", "message"), REFUSED, ids=lambda x: repr(x)[:40])
def test_refused_values_name_their_field(doc: Any, field: str, message: str) -> None:
    for call in (pack, pack_doc, validate, lambda d: pack(d, compress=True)):
        with pytest.raises(EncodeError) as info:
            call(doc)
        assert info.value.field == field
        assert message in info.value.reason


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ((1, 2), "", "tuple"),
        ({1, 2}, "", "set"),
        ([1, set()], "[1]", "set"),
        ([[0, [1, bytearray()]]], "[0][1][1]", "bytearray"),
        (2**64, "", "outside"),
        ("\ud800", "", "UTF-8"),
        (Color.RED, "", "subclass of int"),
    ],
)
def test_refused_values_at_the_root(value: Any, field: str, message: str) -> None:
    with pytest.raises(EncodeError) as info:
        pack(value)
    assert (info.value.field, message in info.value.reason) == (field, True)


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        (5, "int"),
        ([{"a": 1}], "list"),
        (None, "NoneType"),
        (collections.OrderedDict(), "collections.OrderedDict"),
    ],
)
def test_pack_doc_requires_a_dict(doc: Any, name: str) -> None:
    with pytest.raises(EncodeError) as info:
        pack_doc(doc)
    assert info.value.field == ""
    assert info.value.reason.startswith(f"a document must be a dict, got {name}")


bad_leaves = st.sampled_from(
    [(1, 2), {3}, bytearray(b"x"), 2**64, Color.RED, datetime.date(2000, 1, 1), "\ud800"]
)
keys = st.text(alphabet="abcxyz_", min_size=1, max_size=5)
steps = st.lists(st.one_of(keys, st.integers(min_value=0, max_value=3)), max_size=8)


@settings(max_examples=100, deadline=None)
@given(steps=steps, bad=bad_leaves, before=values, after=values)
def test_bad_leaf_anywhere_is_named_by_its_path(
    steps: list[str | int], bad: Any, before: Any, after: Any
) -> None:
    """A bad leaf wrapped in random containers, with valid siblings before and after."""
    value = bad
    for step in reversed(steps):
        if isinstance(step, str):
            value = {"_" + step: before, step: value, step + "_": after}
        else:
            value = [before] * step + [value, after]
    path = "doc"
    for step in steps:
        path += f".{step}" if isinstance(step, str) else f"[{step}]"
    with pytest.raises(EncodeError) as info:
        pack({"doc": value})
    assert info.value.field == path


def test_refusal_produces_no_bytes_and_keeps_the_codec_usable() -> None:
    # (I2) the failed call returns nothing; the pooled Packer it used is not poisoned.
    for bad in ({"n": 2**64}, {"s": "\ud800"}, {"t": ()}):
        with pytest.raises(EncodeError):
            pack(bad)
        assert pack({"a": 1}) == b"\x00\x81\xa1a\x01"


# -- I6: size limits ------------------------------------------------------------------------


def test_too_large_document_names_its_largest_field() -> None:
    doc = {"small": "x", "big": "y" * 1000, "medium": b"z" * 300}
    size = len(pack(doc))
    with pytest.raises(TooLarge) as info:
        pack_doc(doc, max_size=500)
    err = info.value
    assert (err.what, err.field, err.size, err.limit) == ("document", "big", size, 500)


def test_too_large_value_has_no_field() -> None:
    with pytest.raises(TooLarge) as info:
        pack(["a" * 100], max_size=50)
    assert (info.value.what, info.value.field, info.value.limit) == ("value", "", 50)


def test_max_size_counts_the_whole_encoding() -> None:
    doc = {"a": "b" * 100}
    n = len(pack(doc))
    assert len(pack(doc, max_size=n)) == n
    with pytest.raises(TooLarge):
        pack(doc, max_size=n - 1)


def test_size_limit_applies_after_compression() -> None:
    doc = {"text": "abcd" * 2000}
    with pytest.raises(TooLarge):
        pack(doc, max_size=1000)
    data = pack(doc, compress=True, max_size=1000)
    assert data[0] == ENC_ZLIB and len(data) <= 1000
    assert same(unpack(data), doc)


def test_default_limit_is_max_value_size() -> None:
    assert MAX_VALUE_SIZE == 16 * 1024 * 1024
    with pytest.raises(TooLarge) as info:
        pack_doc({"a": 1, "blob": bytes(MAX_VALUE_SIZE)})
    assert (info.value.limit, info.value.field) == (MAX_VALUE_SIZE, "blob")


# -- I5: compression ----------------------------------------------------------------------


def test_compressible_large_documents_are_compressed() -> None:
    doc = {"name": "x", "lines": ["the same line of text, again"] * 50}
    plain, packed = pack(doc), pack(doc, compress=True)
    assert plain[0] == ENC_PLAIN
    assert packed[0] == ENC_ZLIB
    assert len(packed) < len(plain) // 4
    assert zlib.decompress(packed[1:]) == plain[1:]
    assert same(unpack(packed), doc)


def test_small_payloads_are_never_compressed() -> None:
    doc = {"a": "a" * 40}  # compressible, but the payload is under COMPRESS_MIN
    assert len(pack(doc)) - 1 < COMPRESS_MIN
    assert pack(doc, compress=True) == pack(doc)


def test_incompressible_payloads_stay_plain() -> None:
    doc = {"key": os.urandom(500)}
    assert pack(doc, compress=True) == pack(doc)


# -- I3, I4: unpack raises only CorruptPage --------------------------------------------------


def corrupt(data: Any) -> CorruptPage:
    with pytest.raises(CorruptPage) as info:
        unpack(data)
    assert info.value.pgno is None
    return info.value


def zlib_payload(obj: Any) -> bytes:
    return bytes([ENC_ZLIB]) + zlib.compress(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty value"),
        (b"\x02\xc0", "unknown value encoding 0x02"),
        (b"\xff", "unknown value encoding 0xff"),
        (b"\x00", "undecodable"),  # no payload
        (b"\x00\xc0\xc0", "ExtraData"),  # trailing bytes
        (b"\x00\x92\x01", "undecodable"),  # truncated array
        (b"\x00\xa1\xff", "UnicodeDecodeError"),
        (b"\x00\xc1", "undecodable"),  # the one byte msgpack never uses
        (b"\x00\x81\x01\x01", "int is not allowed for map key"),
        (b"\x00\x81\x90\x01", "not allowed for map key"),  # array key
        (b"\x00\x81\xc4\x01k\x01", "map key b'k' is not a str"),
        (b"\x00\x91\x81\xa1a\x81\xc5\x00\x01k\xc0", "map key b'k' is not a str"),
        (b"\x00\xd4\x05\x00", "ext"),  # fixext1
        (b"\x00\xc7\x00\x05", "ext type 5"),  # empty ext8, reaches ext_hook
        (b"\x00\xd6\xff\x00\x00\x00\x00", "max_ext_len"),  # timestamp ext
        (b"\x00\xdd\xff\xff\xff\xff", "undecodable"),  # array32 of 4G elements
        (b"\x00" + b"\x91" * 5000 + b"\xc0", "undecodable"),  # deeper than msgpack's stack
        (b"\x01not zlib", "error"),
        (zlib_payload({"a": 1})[:-3], "truncated zlib stream"),
        (zlib_payload({"a": 1}) + b"junk", "bytes after the end of the zlib stream"),
        (zlib_payload({"a": 1}) + b"\x00", "bytes after the end"),
        (zlib_payload({b"k": 1}), "map key b'k' is not a str"),
        (zlib_payload([1]) + b"", None),  # valid: a control row, checked below
    ],
)
def test_malformed_input_is_corrupt_page(data: bytes, reason: str | None) -> None:
    if reason is None:
        assert unpack(data) == [1]
        return
    assert reason in str(corrupt(data))


@pytest.mark.parametrize("data", [None, 5, 10**12, "\x00\xc0", object(), [0, 192]])
def test_non_bytes_input_is_corrupt_page(data: Any) -> None:
    corrupt(data)


def test_bytes_like_input_is_accepted() -> None:
    data = pack({"a": [b"x"]}, compress=False)
    for view in (bytearray(data), memoryview(data), memoryview(b"pad" + data)[3:]):
        assert same(unpack(view), {"a": [b"x"]})


def test_unpack_doc_requires_a_map() -> None:
    assert unpack_doc(pack({"a": 1})) == {"a": 1}
    value: Any
    for value in (1, [], None, "doc"):
        assert "expected a document" in str(corrupt_doc(pack(value)))


def corrupt_doc(data: bytes) -> CorruptPage:
    with pytest.raises(CorruptPage) as info:
        unpack_doc(data)
    return info.value


def unpack_or_corrupt(data: bytes) -> None:
    """Decoding may succeed; if it fails it must be with CorruptPage (I3), and what it
    returns holds only the allowed types (I4)."""
    try:
        value = unpack(data)
    except CorruptPage:
        return
    validate_decoded(value)


def validate_decoded(value: Any) -> None:
    t = type(value)
    assert t in (type(None), bool, int, float, str, bytes, list, dict)
    if t is list:
        for item in value:
            validate_decoded(item)
    elif t is dict:
        for k, item in value.items():
            assert type(k) is str
            validate_decoded(item)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_never_raise_anything_but_corrupt_page(data: bytes) -> None:
    unpack_or_corrupt(data)


@settings(max_examples=300, deadline=None)
@given(head=st.sampled_from([b"\x00", b"\x01"]), body=st.binary(max_size=64))
def test_random_payloads_never_raise_anything_but_corrupt_page(head: bytes, body: bytes) -> None:
    unpack_or_corrupt(head + body)
    unpack_or_corrupt(head + zlib.compress(body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, compress=st.booleans(), data=st.data())
def test_damaged_encodings_never_raise_anything_but_corrupt_page(
    doc: dict[str, Any], compress: bool, data: st.DataObject
) -> None:
    good = pack_doc(doc, compress=compress)
    for end in range(len(good)):  # every truncation
        unpack_or_corrupt(good[:end])
    for _ in range(20):  # bit flips
        bit = data.draw(st.integers(min_value=0, max_value=len(good) * 8 - 1))
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        unpack_or_corrupt(bytes(flipped))


# -- the module's own contracts -------------------------------------------------------------


def test_wire_format_constants() -> None:
    assert codec.HEADER.size == 1
    assert (ENC_PLAIN, ENC_ZLIB) == (0x00, 0x01)
    assert pack(None) == b"\x00\xc0"
    assert pack([1.5]) == b"\x00\x91\xcb" + struct.pack(">d", 1.5)  # float64, never float32


def test_doctests() -> None:
    result = doctest.testmod(codec, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_concurrent_packing_is_safe() -> None:
    """The Packer pool hands each Packer to one caller at a time."""
    docs = [{"i": i, "s": "x" * (i % 50), "l": list(range(i % 7))} for i in range(200)]
    expected = [msgpack.packb(d, use_bin_type=True) for d in docs]
    failures: list[str] = []

    def work() -> None:
        for _ in range(10):
            for d, want in zip(docs, expected):
                if pack(d)[1:] != want:
                    failures.append(repr(d))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_value_larger_than_the_packer_buffer_round_trips() -> None:
    doc = {"blob": os.urandom(200_000), "n": 1}
    assert same(unpack(pack(doc)), doc)
    assert pack({"a": 1}) == b"\x00\x81\xa1a\x01"
