"""Queries: semantics per operator (Q2-Q6), build-time errors (Q1), shape (Q7, Q8),
and agreement with the index order of storage/keys.py."""

from __future__ import annotations

import dataclasses
import doctest
import enum
import pickle
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mvcc.query
from mvcc.errors import ValidationError
from mvcc.query import (
    MISSING,
    OPS,
    And,
    Compare,
    Everything,
    Exists,
    Field,
    FieldQuery,
    Not,
    NotIn,
    OneOf,
    Or,
    Predicate,
    Query,
    Regex,
    Test,
    compile_query,
    parse_path,
    rank,
    resolve,
    where,
)
from storage.errors import EncodeError
from storage.keys import encode_key, sort_key

NAN = float("nan")
INF = float("inf")


def is_even(v: Any) -> bool:
    return isinstance(v, int) and v % 2 == 0


class Color(enum.IntEnum):
    RED = 1


# ---------------------------------------------------------------- semantics table

DOC = {
    "age": 31,
    "score": 2.5,
    "name": "Ann",
    "blob": b"Ann",
    "flag": True,
    "off": False,
    "none": None,
    "tags": ["a", 1, True],
    "nums": [1, 2.0],
    "addr": {"city": "Oslo", "zip": 150, "geo": {"lat": 59.9}},
    "empty": {},
    "big": 2**53 + 1,
    "nan": NAN,
    "a.b": "dotted key",
}

# (query, expected on DOC); each line pins one rule of the module docstring.
CASES: list[tuple[Query, bool]] = [
    # == and != by rank and value (Q2)
    (where("age") == 31, True),
    (where("age") == 31.0, True),  # int and float by value
    (where("score") == 2.5, True),
    (where("age") == "31", False),
    (where("flag") == True, True),  # noqa: E712 - the builder, not a truth test
    (where("flag") == 1, False),  # True is not 1
    (where("off") == 0, False),
    (where("off") == False, True),  # noqa: E712
    (where("name") == "Ann", True),
    (where("name") == b"Ann", False),  # str is not bytes
    (where("blob") == b"Ann", True),
    (where("blob") == "Ann", False),
    (where("none") == None, True),  # noqa: E711 - a present None is a value (Q4)
    (where("none") != None, False),  # noqa: E711
    (where("age") == None, False),  # noqa: E711
    (where("big") == float(2**53), False),  # exact value, no float rounding
    (where("big") == 2**53 + 1, True),
    (where("age") != 31, False),
    (where("age") != 32, True),
    (where("age") != "31", True),  # another rank: != matches
    (where("flag") != 1, True),
    (where("nan") != 1.0, True),  # NaN equals nothing
    (where("nan") == 1.0, False),
    (where("nan") >= -INF, False),  # ... and orders against nothing
    # order: same rank only, then sort_key order (Q2)
    (where("age") >= 18, True),
    (where("age") > 31, False),
    (where("age") >= 31.0, True),
    (where("age") < 31.5, True),
    (where("age") <= INF, True),
    (where("age") > -INF, True),
    (where("age") < "z", False),  # another rank never matches
    (where("age") > True, False),
    (where("flag") > False, True),
    (where("flag") < 2, False),
    (where("name") > "Al", True),
    (where("name") < "B", True),
    (where("name") < b"B", False),
    (where("blob") < b"B", True),
    (where("none") < None, False),
    (where("none") <= None, True),
    (where("none") >= None, True),
    (where("none") > None, False),
    (where("none") < 1, False),
    (where("tags") > 0, False),  # a list has no rank
    (where("addr") < "x", False),
    # containers: strict, recursive equality (Q3)
    (where("tags") == ["a", 1, True], True),
    (where("tags") == ["a", 1.0, True], True),
    (where("tags") == ["a", True, True], False),  # True is not 1 inside a list either
    (where("tags") == ["a", 1, 1], False),
    (where("tags") == [1, "a", True], False),  # order counts
    (where("tags") == ["a", 1], False),
    (where("tags") != ["a", 1], True),
    (where("nums") == [1.0, 2], True),
    # dict order does not count
    (where("addr") == {"zip": 150.0, "city": "Oslo", "geo": {"lat": 59.9}}, True),
    (where("addr") == {"zip": 150, "city": "Oslo"}, False),
    (where("addr") == {"zip": True, "city": "Oslo", "geo": {"lat": 59.9}}, False),
    (where("empty") == {}, True),
    (where("empty") == [], False),
    (where("tags") == "a", False),  # no membership: == compares the whole value
    # nested paths and absence (Q4)
    (where("addr.city") == "Oslo", True),
    (where("addr.geo.lat") > 59, True),
    (where("addr.zip") == "150", False),
    (where("addr.city.x") == "Oslo", False),  # through a str: absent
    (where("addr.nope") != 1, False),
    (where("tags.0") == "a", False),  # through a list: absent (no indexing)
    (where("a.b") == "dotted key", False),  # a path is not a dotted key
    (where("missing") == None, False),  # noqa: E711
    (where("missing") != None, False),  # noqa: E711 - != does not match absent (Q5)
    (where("missing") < 1, False),
    (where("missing").exists(), False),
    (~where("missing").exists(), True),
    (~(where("missing") == 1), True),  # ~ matches absent
    (where("none").exists(), True),
    (where("empty").exists(), True),
    (where("addr.geo").exists(), True),
    (where("addr.geo.lon").exists(), False),
    # one_of / not_in (Q5)
    (where("age").one_of([1, 31]), True),
    (where("age").one_of((31.0,)), True),
    (where("age").one_of({"31", 30}), False),
    (where("flag").one_of([1]), False),
    (where("flag").one_of([1, True]), True),
    (where("none").one_of([None]), True),
    (where("tags").one_of([["a", 1, True]]), True),
    (where("tags").one_of([["a", True, True]]), False),
    (where("age").one_of([]), False),
    (where("missing").one_of([None]), False),
    (where("age").not_in([1, 2]), True),
    (where("age").not_in([31.0]), False),
    (where("flag").not_in([1]), True),
    (where("missing").not_in([1]), False),
    (where("age").not_in([]), True),
    (where("nan").not_in([1.0]), True),
    (where("nan").one_of([1.0]), False),
    # regexes: str values only (Q6)
    (where("name").matches("A.*"), True),
    (where("name").matches("A"), False),  # whole string
    (where("name").search("nn"), True),
    (where("name").search("^n"), False),
    (where("name").matches("(?i)ann"), True),
    (where("blob").search("A"), False),
    (where("age").search("3"), False),
    (where("missing").search(""), False),
    # test()
    (where("addr.zip").test(is_even), True),
    (where("age").test(is_even), False),
    (where("none").test(lambda v: v is None), True),
    (where("missing").test(lambda v: True), False),
    (where("age").test(lambda v: v), True),  # any truthy result counts
    # combinators
    ((where("age") > 18) & (where("name") == "Ann"), True),
    ((where("age") > 18) & (where("name") == "Bob"), False),
    ((where("age") < 18) | (where("name") == "Ann"), True),
    ((where("age") < 18) | (where("name") == "Bob"), False),
    (~(where("age") < 18), True),
    (Everything(), True),
    (~Everything(), False),
    (Predicate(lambda d: d["age"] > 30), True),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[repr(q) for q, _ in CASES])
def test_semantics(query: Query, expected: bool) -> None:
    assert query(DOC) is expected


def test_test_function_is_called_only_on_present_values() -> None:
    seen: list[Any] = []
    q = where("a.b").test(lambda v: seen.append(v) or True)
    assert not q({}) and not q({"a": 1}) and not q({"a": {}})
    assert q({"a": {"b": None}}) and seen == [None]


def test_non_dict_documents_have_no_fields() -> None:
    for doc in (None, 5, "a", [("a", 1)]):
        assert not (where("a") == 1)(doc)  # type: ignore[arg-type]
        assert not where("a").exists()(doc)  # type: ignore[arg-type]


def test_dict_subclass_documents_resolve() -> None:
    class D(dict[str, Any]):
        pass

    assert (where("a.b") == 1)(D(a=D(b=1)))
    assert (where("a") == 1)(D(a=1))


# ---------------------------------------------------------------- compile_query


def test_compile_query_forms() -> None:
    assert compile_query(None) == Everything()
    assert compile_query({}) == Everything()
    q = where("x") == 1
    assert compile_query(q) is q
    assert compile_query({"a": 1}) == Compare(("a",), "==", 1)
    two = compile_query({"name": "Ann", "a.b": [1]})
    assert isinstance(two, And)
    assert two.parts == (Compare(("name",), "==", "Ann"), Compare(("a", "b"), "==", [1]))

    def adult(doc: dict[str, Any]) -> bool:
        return bool(doc.get("age", 0) >= 18)

    p = compile_query(adult)
    assert isinstance(p, Predicate) and p.fn is adult
    assert p({"age": 20}) is True and p({}) is False
    assert compile_query(lambda d: 1)({}) is True  # coerced to bool


def test_dict_shorthand_is_strict_equality() -> None:
    q = compile_query({"active": 1, "a.b": "x"})
    assert q({"active": 1, "a": {"b": "x"}})
    assert q({"active": 1.0, "a": {"b": "x"}})
    assert not q({"active": True, "a": {"b": "x"}})
    assert not q({"active": 1, "a.b": "x"})
    assert not q({"a": {"b": "x"}})


# ---------------------------------------------------------------- build-time errors (Q1)


def _raises(build: Callable[[], Any], field: str, *needles: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        build()
    err = info.value
    assert err.field == field
    for needle in needles:
        assert needle in str(err), (needle, str(err))
    return err


ERRORS: list[tuple[str, Callable[[], Any], str, tuple[str, ...]]] = [
    # paths
    ("empty path", lambda: where(""), "", ("non-empty keys",)),
    ("empty key", lambda: where("a..b"), "a..b", ("'a..b'",)),
    ("leading dot", lambda: where(".a"), ".a", ()),
    ("trailing dot", lambda: where("a."), "a.", ()),
    ("non-str path", lambda: where(5), "5", ("must be a str", "int")),  # type: ignore[arg-type]
    ("None path", lambda: where(None), "None", ("must be a str",)),  # type: ignore[arg-type]
    ("tuple to node", lambda: Compare("ab", "==", 1), "ab", ("tuple",)),  # type: ignore[arg-type]
    ("empty tuple", lambda: Exists(()), "()", ("non-empty tuple",)),
    ("dot in key", lambda: Exists(("a.b",)), "a.b", ("without dots",)),
    ("empty key in tuple", lambda: Exists(("a", "")), "a.", ("without dots",)),
    ("non-str key", lambda: Exists(("a", 1)), "a.1", ()),  # type: ignore[arg-type]
    # operands
    ("nan", lambda: where("a") == NAN, "a", ("NaN", "math.isnan")),
    ("nan <", lambda: where("a") < NAN, "a", ("NaN",)),
    ("nested nan", lambda: where("a") == [1, {"x": NAN}], "a", ("NaN",)),
    ("list order", lambda: where("a") < [1], "a", ("has no order", "list")),
    ("dict order", lambda: where("a") >= {"x": 1}, "a", ("has no order", "dict")),
    ("set", lambda: where("a") == {1, 2}, "a", ("cannot compare with set",)),
    ("tuple", lambda: where("a") == (1,), "a", ("cannot compare with tuple",)),
    ("object", lambda: where("a") != object(), "a", ("cannot compare with object",)),
    ("int subclass", lambda: where("a") == Color.RED, "a", ("Color", "subclass")),
    ("str key", lambda: where("a") == {1: 2}, "a", ("str keys",)),
    ("two fields", lambda: where("a") == where("b"), "a", ("two fields",)),
    ("query operand", lambda: where("a") == (where("b") == 1), "a", ("Compare",)),
    ("operator", lambda: Compare(("a",), "=~", 1), "a", ("unknown operator", "=~")),
    # one_of / not_in
    ("one_of str", lambda: where("a").one_of("abc"), "a", ("list, tuple or set", "str")),  # type: ignore[arg-type]
    ("one_of int", lambda: where("a").one_of(5), "a", ("list",)),  # type: ignore[arg-type]
    ("not_in dict", lambda: where("a").not_in({"x": 1}), "a", ("not_in",)),
    ("one_of nan", lambda: where("a").one_of([1, NAN]), "a", ("NaN", "[1]")),
    ("not_in set", lambda: where("a.b").not_in([{1}]), "a.b", ("cannot compare with set",)),
    # regexes
    ("bad regex", lambda: where("a").matches("("), "a", ("does not compile", "missing )")),
    ("bad search", lambda: where("a").search("[z-a]"), "a", ("bad character range",)),
    ("bytes regex", lambda: where("a").search(b"x"), "a", ("str pattern", "bytes")),  # type: ignore[arg-type]
    ("compiled", lambda: where("a").matches(re.compile("x")), "a", ("str pattern",)),  # type: ignore[arg-type]
    # callables
    ("test", lambda: where("a").test(5), "a", ("callable",)),  # type: ignore[arg-type]
    ("predicate", lambda: Predicate(5), "", ("callable",)),  # type: ignore[arg-type]
    # combining
    ("& dict", lambda: (where("a") == 1) & {"b": 1}, "", ("& combines", "compile_query")),
    ("| int", lambda: (where("a") == 1) | 5, "", ("| combines", "int")),
    ("dict &", lambda: {"b": 1} & (where("a") == 1), "", ("& combines",)),  # type: ignore[operator]
    ("bool |", lambda: True | (where("a") == 1), "", ("| combines",)),  # type: ignore[operator]
    ("lambda &", lambda: (where("a") == 1) & (lambda d: True), "", ("function",)),
    ("And of one", lambda: And((where("a") == 1,)), "", ("at least two",)),
    ("And of junk", lambda: And((where("a") == 1, 5)), "", ("combines",)),  # type: ignore[arg-type]
    ("Or not tuple", lambda: Or(where("a") == 1), "", ("tuple",)),  # type: ignore[arg-type]
    ("Not junk", lambda: Not(5), "", ("combines",)),  # type: ignore[arg-type]
    # a bare field used as a query
    ("q & field", lambda: (where("a") == 1) & where("b"), "b", ("is a field", "compare it")),
    ("field & q", lambda: where("b") & (where("a") == 1), "b", ("is a field",)),
    ("field | q", lambda: where("b") | (where("a") == 1), "b", ("is a field",)),
    ("~field", lambda: ~where("b"), "b", ("is a field",)),
    ("bool(field)", lambda: bool(where("b")), "b", ("is a field",)),
    ("field(doc)", lambda: where("b")({}), "b", ("where('b') == value",)),  # type: ignore[operator]
    ("compile field", lambda: compile_query(where("x.y")), "x.y", ("is a field",)),  # type: ignore[arg-type]
    # compile_query
    ("compile int", lambda: compile_query(5), "", ("not int 5",)),  # type: ignore[arg-type]
    ("compile str", lambda: compile_query("age > 3"), "", ("not str 'age > 3'",)),  # type: ignore[arg-type]
    ("compile list", lambda: compile_query([("a", 1)]), "", ("not list",)),  # type: ignore[arg-type]
    ("dict empty key", lambda: compile_query({"": 1}), "", ("non-empty keys",)),
    ("dict int key", lambda: compile_query({5: 1}), "5", ("must be a str",)),
    ("dict nan", lambda: compile_query({"a": NAN}), "a", ("NaN",)),
    # no truth value (Q8)
    ("bool(node)", lambda: bool(where("a") == 1), "a", ("no truth value",)),
    ("if node", lambda: 1 if where("a").exists() else 0, "a", ("no truth value",)),
    ("chained", lambda: 1 < where("x") < 9, "x", ("no truth value",)),
    ("and", lambda: (where("a") == 1) and (where("b") == 1), "a", ("& | ~",)),
    ("not", lambda: not (where("a") == 1), "a", ()),  # noqa: SIM201 - `not` is the point
    ("bool(and)", lambda: bool((where("a") == 1) & (where("b") == 1)), "", ()),
]


@pytest.mark.parametrize(
    ("build", "field", "needles"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_build_time_errors(build: Callable[[], Any], field: str, needles: tuple[str, ...]) -> None:
    _raises(build, field, *needles)


def test_errors_are_raised_when_building_not_when_matching() -> None:
    # Every document shape below is matched without an error of the query's own.
    q = (
        (where("a") < 5)
        | (where("a") == [1])
        | where("a").one_of([{"x": 1}, 2])
        | where("a.b").matches("x+")
    )
    for value in (None, NAN, INF, {1, 2}, (1,), object(), [[]], {"b": b"x"}, Color.RED, "s"):
        assert q({"a": value}) in (True, False)


# ---------------------------------------------------------------- shape (Q7), repr, pickle


def test_nodes_expose_their_structure() -> None:
    q = where("a.b") <= 3
    assert isinstance(q, Compare) and isinstance(q, FieldQuery)
    assert (q.path, q.op, q.value, q.path_text) == (("a", "b"), "<=", 3, "a.b")
    o = where("t").one_of(["x", 1])
    assert isinstance(o, OneOf) and o.values == ("x", 1)
    n = where("t").not_in({2})
    assert isinstance(n, NotIn) and not isinstance(n, OneOf) and n.values == (2,)
    r = where("n").search("a+")
    assert isinstance(r, Regex) and (r.pattern, r.whole) == ("a+", False)
    assert where("n").matches("a+").whole is True
    assert isinstance(where("e").exists(), Exists)
    t = where("x").test(is_even)
    assert isinstance(t, Test) and t.fn is is_even
    assert isinstance(~t, Not) and (~t).part is t
    assert ~~t is t
    assert isinstance(where("x"), Field) and where("x").path == ("x",)


def test_and_or_flatten() -> None:
    a, b, c, d = (where(k) == 1 for k in "abcd")
    assert ((a & b) & (c & d)).parts == (a, b, c, d)
    assert (a & (b & c)).parts == (a, b, c)
    assert ((a | b) | c).parts == (a, b, c)
    mixed = (a & b) | (c & d)
    assert isinstance(mixed, Or) and [type(p) for p in mixed.parts] == [And, And]
    assert And((a, And((b, c)))).parts == (a, b, c)
    assert Or([a, b]).parts == (a, b)  # a list is taken as a tuple


def test_operands_are_copied() -> None:
    tags = ["a", {"k": [1]}]
    q = where("t") == tags
    tags[1]["k"].append(2)  # type: ignore[index, union-attr]
    assert q.value == ["a", {"k": [1]}]
    assert q({"t": ["a", {"k": [1]}]})


def test_nodes_are_immutable() -> None:
    q = where("a") == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.op = "<"  # type: ignore[misc]
    # slots: no new attributes either (CPython 3.11's frozen slots dataclass
    # says so with a TypeError from its __setattr__, later ones AttributeError).
    with pytest.raises((AttributeError, TypeError)):
        q.extra = 1  # type: ignore[attr-defined]


def test_equality_and_hash_are_structural_and_strict() -> None:
    assert (where("a") == 1) == (where("a") == 1.0)
    assert hash(where("a") == 1) == hash(where("a") == 1.0)
    assert (where("a") == 1) != (where("a") == True)  # noqa: E712
    assert (where("a") == [1]) != (where("a") == [True])
    assert (where("a") == 1) != (where("a") != 1)
    assert (where("a") == 1) != (where("b") == 1)
    assert where("a").one_of([1, 2]) == where("a").one_of({2, 1.0})
    assert where("a").one_of([1]) != where("a").not_in([1])
    assert where("a").matches("x") != where("a").search("x")
    assert (where("a") == 1) & where("b").exists() == (where("a") == 1) & where("b").exists()
    assert Everything() == Everything()
    assert len({where("a") == 1, where("a") == 1.0, where("a") == True}) == 2  # noqa: E712
    assert (where("a") == {"x": [1]}) in {where("a") == {"x": [1.0]}}


REPRS: list[tuple[Query, str]] = [
    (where("age") >= 18, "where('age') >= 18"),
    (where("a.b") == 1, "where('a.b') == 1"),
    (where("x") != None, "where('x') != None"),  # noqa: E711
    (where("b") < b"z", "where('b') < b'z'"),
    (where("t").one_of(["a", 1]), "where('t').one_of(['a', 1])"),
    (where("t").not_in((b"x",)), "where('t').not_in([b'x'])"),
    (where("n").matches("A.*"), "where('n').matches('A.*')"),
    (where("n").search("nn"), "where('n').search('nn')"),
    (where("e").exists(), "where('e').exists()"),
    (where("x").test(is_even), "where('x').test(is_even)"),
    ((where("a") == 1) & ~where("b").exists(), "(where('a') == 1) & ~where('b').exists()"),
    (
        (where("a") == 1) | (where("b") == 2) & where("c").exists(),
        "(where('a') == 1) | ((where('b') == 2) & where('c').exists())",
    ),
    (~((where("a") == 1) | where("b").exists()), "~((where('a') == 1) | where('b').exists())"),
    (~(where("a") < 1), "~(where('a') < 1)"),
    (Everything(), "Everything()"),
    (Predicate(is_even), "Predicate(is_even)"),
]


@pytest.mark.parametrize(("query", "text"), REPRS, ids=[t for _, t in REPRS])
def test_repr(query: Query, text: str) -> None:
    assert repr(query) == text


def test_repr_of_field() -> None:
    assert repr(where("a.b")) == "where('a.b')"


def test_nodes_pickle() -> None:
    q = (
        ((where("a.b") >= 2) & where("c").one_of([1, [2]]))
        | ~where("d").matches("x+")
        | where("e").not_in([None])
        | where("f").test(is_even)
        | Predicate(is_even)
        | Everything()
    )
    back = pickle.loads(pickle.dumps(q))
    assert back == q and repr(back) == repr(q)
    doc = {"a": {"b": 3}, "c": [2], "d": "y"}
    assert back(doc) is q(doc) is True
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


# ---------------------------------------------------------------- helpers


def test_rank_and_resolve_and_parse_path() -> None:
    assert [rank(v) for v in (None, True, 0, 0.5, "", b"")] == [0, 1, 2, 2, 3, 4]
    for v in ([], {}, (), {1}, Color.RED, bytearray(b"x"), object()):
        assert rank(v) is None
    assert resolve({"a": {"b": None}}, ("a", "b")) is None
    assert resolve({"a": {"b": 1}}, ("a", "c")) is MISSING
    assert resolve({"a": [1]}, ("a", "0")) is MISSING
    assert resolve({"a": 1}, ("a",)) == 1
    assert parse_path("a.b.c") == ("a", "b", "c")


def test_doctests() -> None:
    result = doctest.testmod(mvcc.query, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------- properties

# Scalars of every rank, with the values where ranks and types meet: 0 and
# 0.0 and False, 1 and 1.0 and True, 2**53 + 1 and its float neighbour.
EDGES = [0, 0.0, -0.0, 1, 1.0, True, False, 2**53, 2**53 + 1, float(2**53), -(2**63), 2**63]
EDGES += [INF, -INF, "", "a", b"", b"a", None, 1e300, 5e-324]
scalars = st.one_of(
    st.sampled_from(EDGES),
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.integers(-3, 3),
    st.floats(allow_nan=False),
    st.sampled_from([-1.5, -1.0, 0.5, 2.0, 3.0]),
    st.text(max_size=3),
    st.binary(max_size=3),
)

EXPECT: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _twin(x: Any) -> Any:
    """A value of another type that is, or nearly is, x: the cases Q2 decides."""
    if type(x) is bool:
        return int(x)
    if type(x) is int:
        return float(x)  # rounded beyond 2**53: a near miss
    if type(x) is float and x.is_integer() and abs(x) <= 2**63:  # the ints drawn
        return int(x)
    if type(x) is str:
        return x.encode()
    if type(x) is bytes:
        return x.decode("latin-1")
    return x


pairs = st.one_of(st.tuples(scalars, scalars), scalars.map(lambda x: (x, _twin(x))))


@settings(max_examples=500, deadline=None)
@given(pair=pairs, op=st.sampled_from(OPS))
def test_comparisons_agree_with_the_index_order(pair: tuple[Any, Any], op: str) -> None:
    """(Q2): rank, then sort_key; == exactly when the index keys are equal."""
    x, v = pair
    q = Compare(("f",), op, v)
    same_rank = rank(x) == rank(v)
    assert rank(x) == sort_key(x)[0]
    if op == "!=":
        expected = not (same_rank and sort_key(x) == sort_key(v))
    else:
        expected = same_rank and EXPECT[op](sort_key(x), sort_key(v))
    assert q({"f": x}) is expected
    assert (where("f") == v)({"f": x}) is (encode_key((x,)) == encode_key((v,)))
    assert (where("f").one_of([v]))({"f": x}) is (where("f") == v)({"f": x})
    assert q({"g": x}) is False  # absent: no comparison matches (Q4, Q5)


# Documents: small nested dicts over a few keys, so that paths hit, miss, and
# run through non-dicts; values of every rank, NaN, and containers.
KEYS = ("a", "b", "c")
leaf_values = st.one_of(
    scalars, st.just(NAN), st.lists(scalars, max_size=2), st.sampled_from([[1], ["a"], []])
)


def _dicts(values: st.SearchStrategy[Any], required: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        dict.fromkeys(KEYS[:required], values), optional=dict.fromkeys(KEYS[required:], values)
    )


nested = st.recursive(
    _dicts(leaf_values, 0), lambda inner: _dicts(st.one_of(inner, leaf_values), 1), max_leaves=6
)
docs = _dicts(st.one_of(leaf_values, nested), 2)  # "a" and "b" always, "c" sometimes
paths = st.sampled_from([("a",), ("b",), ("c",), ("a", "b"), ("b", "a"), ("c", "a", "b")])
operands = st.one_of(scalars, st.sampled_from([[1], ["a"], [], {"b": 1}]))
PATTERNS = ["a", "a*", "(?i)A.", "^$", "b|", "."]
FUNCTIONS = [is_even, lambda v: v is None, lambda v: isinstance(v, str)]


def _compare(path: tuple[str, ...], op: str, value: Any) -> Compare:
    if op in ("<", "<=", ">", ">=") and rank(value) is None:
        op = "=="  # an unordered operand may only be ==/!= (Q1)
    return Compare(path, op, value)


leaves = st.one_of(
    st.builds(_compare, paths, st.sampled_from(OPS), operands),
    st.builds(OneOf, paths, st.lists(operands, max_size=3).map(tuple)),
    st.builds(NotIn, paths, st.lists(operands, max_size=3).map(tuple)),
    st.builds(Regex, paths, st.sampled_from(PATTERNS), st.booleans()),
    st.builds(Exists, paths),
    st.builds(Test, paths, st.sampled_from(FUNCTIONS)),
    st.just(Everything()),
    st.just(Predicate(lambda d: len(d) > 1)),
)
queries = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.builds(lambda a, b: a & b, kids, kids),
        st.builds(lambda a, b: a | b, kids, kids),
        st.builds(lambda a: ~a, kids),
    ),
    max_leaves=6,
)


def _model_eq(x: Any, v: Any) -> bool:
    """Q3's strict equality, written independently of query.py."""
    if type(v) is list:
        return type(x) is list and len(x) == len(v) and all(map(_model_eq, x, v))
    if type(v) is dict:
        return type(x) is dict and x.keys() == v.keys() and all(_model_eq(x[k], v[k]) for k in v)
    try:
        return sort_key(x) == sort_key(v)  # the rank is the first element
    except EncodeError:  # NaN, a list or dict against a scalar: equal to nothing
        return False


def _model_get(doc: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if type(doc) is not dict or key not in doc:
            return False, None
        doc = doc[key]
    return True, doc


def _model(q: Query, doc: dict[str, Any]) -> bool:
    """The documented meaning of each node, by a second route."""
    if isinstance(q, And):
        return all(_model(p, doc) for p in q.parts)
    if isinstance(q, Or):
        return any(_model(p, doc) for p in q.parts)
    if isinstance(q, Not):
        return not _model(q.part, doc)
    if isinstance(q, (Everything, Predicate)):
        return q(doc)
    assert isinstance(q, FieldQuery)
    present, x = _model_get(doc, q.path)
    if not present:
        return False
    if isinstance(q, Compare):
        if q.op == "==":
            return _model_eq(x, q.value)
        if q.op == "!=":
            return not _model_eq(x, q.value)
        try:
            kx, kv = sort_key(x), sort_key(q.value)
        except EncodeError:
            return False
        return kx[0] == kv[0] and EXPECT[q.op](kx, kv)
    if isinstance(q, OneOf):
        return any(_model_eq(x, v) for v in q.values)
    if isinstance(q, NotIn):
        return not any(_model_eq(x, v) for v in q.values)
    if isinstance(q, Regex):
        if not isinstance(x, str):
            return False
        return (re.fullmatch if q.whole else re.search)(q.pattern, x) is not None
    if isinstance(q, Exists):
        return True
    assert isinstance(q, Test)
    return bool(q.fn(x))


@settings(max_examples=300, deadline=None)
@given(q=queries, doc=docs)
def test_queries_match_the_model(q: Query, doc: dict[str, Any]) -> None:
    assert q(doc) is _model(q, doc)


@settings(max_examples=200, deadline=None)
@given(a=queries, b=queries, doc=docs)
def test_boolean_laws(a: Query, b: Query, doc: dict[str, Any]) -> None:
    assert (a & b)(doc) is (a(doc) and b(doc))
    assert (a | b)(doc) is (a(doc) or b(doc))
    assert (~a)(doc) is (not a(doc))
    assert (~~a)(doc) is a(doc)
    assert (~(a & b))(doc) is (~a | ~b)(doc)  # De Morgan
    assert (~(a | b))(doc) is (~a & ~b)(doc)


@settings(max_examples=200, deadline=None)
@given(path=paths, op=st.sampled_from(OPS), v=operands, doc=docs)
def test_absence_and_not_equal(path: tuple[str, ...], op: str, v: Any, doc: dict[str, Any]) -> None:
    """(Q4, Q5): != and not_in are the negations of == and one_of on a present
    field; on an absent one no field node matches, and ~ does."""
    eq, ne = Compare(path, "==", v), Compare(path, "!=", v)
    present = Exists(path)(doc)
    assert ne(doc) is (present and not eq(doc))
    assert NotIn(path, (v,))(doc) is (present and not OneOf(path, (v,))(doc))
    if not present:
        nodes = (_compare(path, op, v), OneOf(path, (v,)), NotIn(path, (v,)), Regex(path, "", 0))
        for q in nodes:
            assert q(doc) is False
            assert (~q)(doc) is True


# Valid inputs from wide ranges: any path of non-empty dot-free keys, any
# operand a document could hold (no NaN), any escaped pattern.
path_texts = st.lists(
    st.text(st.characters(blacklist_characters="."), min_size=1, max_size=4), min_size=1, max_size=3
).map(".".join)
deep_operands = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
weird_values = st.one_of(
    leaf_values,
    st.sampled_from([{1, 2}, (1,), frozenset(), Color.RED, object(), bytearray(b"a"), NAN]),
)
weird_docs = st.recursive(
    st.dictionaries(st.text(max_size=2), weird_values, max_size=3),
    lambda inner: st.dictionaries(st.text(max_size=2), st.one_of(weird_values, inner), max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    path=path_texts,
    op=st.sampled_from(OPS),
    v=deep_operands,
    text=st.text(max_size=5),
    doc=weird_docs,
)
def test_valid_queries_build_and_never_raise_when_matching(
    path: str, op: str, v: Any, text: str, doc: dict[str, Any]
) -> None:
    f = where(path)
    if rank(v) is None:
        op = "=="
    built = [
        Compare(f.path, op, v),
        f.one_of([v, 1]),
        f.not_in((v,)),
        f.matches(re.escape(text)),
        f.search(text and re.escape(text[0])),
        f.exists(),
        compile_query({path: v}),
    ]
    q = Or(tuple(built)) & ~And((built[0], built[4]))
    assert compile_query(q) is q
    for node in built + [q]:
        assert node(doc) in (True, False)
        assert node({path.split(".")[0]: doc}) in (True, False)
    assert hash(q) == hash(pickle.loads(pickle.dumps(q)))
