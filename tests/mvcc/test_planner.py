"""The query planner: superset ranges (P1), leftmost prefixes (P2), Or (P3),
index choice (P4), `ordered` (P5), order_key (P6), argument errors (P7) and
determinism (P8), by example and against random documents and queries."""

from __future__ import annotations

import doctest
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mvcc.planner
from mvcc.errors import ValidationError
from mvcc.index import IndexDef, entry_key
from mvcc.planner import FULL, MAX_RANGES, Plan, Range, order_key, parse_order, plan
from mvcc.query import (
    MISSING,
    OPS,
    And,
    Compare,
    Everything,
    Or,
    Predicate,
    Query,
    Regex,
    parse_path,
    rank,
    resolve,
    where,
)
from storage.keys import ABSENT, encode_key, prefix_end, rank_bounds

AGE = IndexDef(1, ("age",))
NAME = IndexDef(2, ("last", "first"))
EMAIL = IndexDef(3, ("email",), unique=True)
INDEXES = [AGE, NAME, EMAIL]
NUMBERS_END = rank_bounds(2)[1]


def enc(*values: Any) -> bytes:
    return encode_key(values)


def after(*values: Any) -> bytes:
    end = prefix_end(enc(*values))
    assert end is not None
    return end


def in_ranges(key: bytes, ranges: tuple[Range, ...]) -> bool:
    return any(lo <= key and (hi is None or key < hi) for lo, hi in ranges)


def check_ranges(ranges: tuple[Range, ...]) -> None:
    """Sorted, non-empty, disjoint and not touching (merged)."""
    for lo, hi in ranges:
        assert hi is None or lo < hi
    for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
        assert hi is not None and hi < lo


def test_doctests() -> None:
    result = doctest.testmod(mvcc.planner, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------- arguments (P7)


def test_parse_order() -> None:
    assert parse_order(None) is None
    assert parse_order("age") == (("age",), False)
    assert parse_order("-a.b") == (("a", "b"), True)


@pytest.mark.parametrize("bad", ["", "-", "a..b", "-.a", "a.", 3, b"age", ("age",)])
def test_bad_order_by(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        plan(None, INDEXES, order_by=bad)
    assert info.value.field == "order_by"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": 1.0}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": "3"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": None}, "offset"),
        ({"offset": False}, "offset"),
    ],
)
def test_bad_limit_offset(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValidationError) as info:
        plan(None, INDEXES, **kwargs)
    assert info.value.field == name


def test_limit_offset_kept() -> None:
    p = plan(where("age") == 3, INDEXES, limit=0, offset=4)
    assert (p.limit, p.offset) == (0, 4)
    assert p.stop == 4
    assert plan(None, [], order_by="age", limit=2).stop is None  # must sort: read all


def test_query_like_is_compiled() -> None:
    assert plan({"age": 3}, INDEXES).query == (where("age") == 3)
    assert plan(None, INDEXES).query == Everything()


# ---------------------------------------------------------------- P1: no index unless required


@pytest.mark.parametrize(
    "query",
    [
        None,
        where("age") != 3,
        where("age").not_in([1, 2]),
        where("age").exists(),
        where("age").test(bool),
        ~(where("age") == 3),
        where("age") == [3],
        where("age") == {"x": 3},
        where("age").one_of([3, [3]]),
        Predicate(lambda d: True),
        where("first") == "Ann",  # not the leftmost field of (last, first)
        (where("age") == 3) | (where("email") == "x"),  # two indexes: P3
        (where("age") == 3) | where("zip").exists(),
    ],
)
def test_full_scan(query: Any) -> None:
    p = plan(query, INDEXES)
    assert p.index is None and p.ranges == FULL
    assert p.explain() == "full scan"


def test_bare_order_by_does_not_read_the_index() -> None:
    """Documents without an age have no entry: the index would drop them (P4)."""
    p = plan(None, INDEXES, order_by="age", limit=5)
    assert p.index is None and not p.ordered and p.order == (("age",), False)
    assert p.explain() == "full scan; then sort by age; limit 5"


# ---------------------------------------------------------------- P2: ranges


@pytest.mark.parametrize(
    ("query", "ranges"),
    [
        (where("age") == 18, [(enc(18), after(18))]),
        (where("age") == 18.0, [(enc(18), after(18))]),  # 18 == 18.0: one rank
        (where("age") >= 18, [(enc(18), NUMBERS_END)]),
        (where("age") > 18, [(after(18), NUMBERS_END)]),
        (where("age") <= 18, [(rank_bounds(2)[0], after(18))]),
        (where("age") < 18, [(rank_bounds(2)[0], enc(18))]),
        ((where("age") >= 18) & (where("age") < 65), [(enc(18), enc(65))]),
        ((where("age") >= 18) & (where("age") <= 18), [(enc(18), after(18))]),
        (where("age") <= None, [(enc(None), after(None))]),
        (where("age") == True, [(enc(True), after(True))]),  # noqa: E712
        (where("age") < "b", [(rank_bounds(3)[0], enc("b"))]),
        (where("age") >= b"x", [(enc(b"x"), rank_bounds(4)[1])]),
        (where("age").one_of([3, 1, 3.0]), [(enc(1), after(1)), (enc(3), after(3))]),
        (
            (where("age") < 5) | (where("age") > 60),
            [(rank_bounds(2)[0], enc(5)), (after(60), NUMBERS_END)],
        ),
        ((where("age") >= 1) | (where("age") <= 9), [rank_bounds(2)]),
    ],
)
def test_single_field_ranges(query: Query, ranges: list[Range]) -> None:
    p = plan(query, INDEXES)
    assert p.index == AGE
    assert list(p.ranges) == ranges


@pytest.mark.parametrize(
    "query",
    [
        (where("age") == 1) & (where("age") == 2),
        (where("age") > 5) & (where("age") < 5),
        (where("age") >= 5) & (where("age") == "5"),
        where("age").one_of([]),
        where("age") < None,
        where("age") > None,
        where("age") < -math.inf,
        (where("zip") == 1) & (where("zip") == 2),  # no index on zip: still nothing
    ],
)
def test_nothing_can_match(query: Query) -> None:
    p = plan(query, INDEXES)
    assert p.ranges == () and p.index == AGE  # the lowest id: read no entry of it
    assert p.explain() == "index age: nothing can match"
    no_index = plan(query, [])
    assert no_index.index is None and no_index.ranges == FULL


def test_composite_prefix_and_range() -> None:
    """The range on the second field lives under the first field's prefix."""
    p = plan((where("last") == "Smith") & (where("first") >= "B"), INDEXES)
    assert p.index == NAME
    assert p.ranges == ((enc("Smith", "B"), enc("Smith") + rank_bounds(3)[1]),)
    assert p.explain() == "index (last, first): last == 'Smith' and first >= 'B'"


def test_composite_points_product() -> None:
    q = where("last").one_of(["S", "T"]) & where("first").one_of(["A", "B"])
    p = plan(q, INDEXES)
    assert p.ranges == tuple((enc(a, b), after(a, b)) for a in ("S", "T") for b in ("A", "B"))
    assert p.explain() == "index (last, first): last in ['S', 'T'] and first in ['A', 'B']"


def test_composite_first_field_only() -> None:
    p = plan((where("last") == "S") & (where("first") != "A"), INDEXES)
    assert p.ranges == ((enc("S"), after("S")),)
    p = plan((where("last") >= "S") & (where("first") == "A"), INDEXES)
    assert p.ranges == ((enc("S"), rank_bounds(3)[1]),)  # a range ends the prefix


def test_product_cap() -> None:
    many = list(range(40))
    q = where("last").one_of(many) & where("first").one_of(many)
    assert MAX_RANGES < 40 * 40
    p = plan(q, INDEXES)
    assert p.ranges == tuple((enc(v), after(v)) for v in many)  # first field only
    p = plan(where("last").one_of(many[:30]) & where("first").one_of(many[:30]), INDEXES)
    assert len(p.ranges) == 900


def test_or_on_one_index_is_cut_to_its_branches() -> None:
    q = ((where("last") == "S") & (where("first") == "x")) | (
        (where("last") == "T") & (where("first") == "y")
    )
    p = plan(q, INDEXES)
    assert p.ranges == ((enc("S", "x"), after("S", "x")), (enc("T", "y"), after("T", "y")))
    assert p.explain() == (
        "index (last, first): last in ['S', 'T'] and first in ['x', 'y'] (cut by an or to 2 ranges)"
    )


def test_or_inside_and() -> None:
    q = (where("last") == "S") & ((where("first") == "x") | (where("first") == "y"))
    assert plan(q, INDEXES).ranges == (
        (enc("S", "x"), after("S", "x")),
        (enc("S", "y"), after("S", "y")),
    )
    # A branch that cannot match drops out of the union.
    q2 = (where("age") == 3) | ((where("age") == 1) & (where("age") == 2))
    assert plan(q2, INDEXES).ranges == ((enc(3), after(3)),)


@pytest.mark.parametrize(
    ("query", "span"),
    [
        (where("last").matches("Sm.*"), ("Sm", "Sn")),
        (where("last").matches("Smi*th"), ("Sm", "Sn")),  # the * takes the "i"
        (where("last").matches("Smith"), ("Smith", None)),  # literal: one value
        (where("last").search("^Smi"), ("Smi", "Smj")),
        (where("last").search(r"\ASm+"), ("S", "T")),
        (where("last").matches("a\U0010ffff.*"), ("a\U0010ffff", "b")),
        (where("last").matches("\U0010ffff.*"), ("\U0010ffff", "")),
        (where("last").search("Smith"), ("", "")),  # unanchored: any str
        (where("last").matches("(?i)smith"), ("", "")),  # a flag: no prefix
        (where("last").matches("Sm|Jo"), ("", "")),
        (where("last").matches("[S]mith"), ("", "")),
    ],
)
def test_regex_prefix(query: Regex, span: tuple[str, str | None]) -> None:
    """span: (prefix, next) for [prefix, next); next None: the point; "": open."""
    lo_text, hi_text = span
    lo = enc(lo_text) if lo_text else rank_bounds(3)[0]
    hi = after(lo_text) if hi_text is None else enc(hi_text) if hi_text else rank_bounds(3)[1]
    p = plan(query, INDEXES)
    assert p.index == NAME and p.ranges == ((lo, hi),)


# ---------------------------------------------------------------- P4: choice


def test_choice_unique_equality_first() -> None:
    q = (where("email") == "a@b") & (where("age") == 3)
    assert plan(q, INDEXES).index == EMAIL
    q = (where("last") == "S") & (where("first") == "A") & (where("email") == "a@b")
    assert plan(q, INDEXES).index == EMAIL  # unique beats more bound fields
    assert plan(q, [AGE, NAME, IndexDef(3, ("email",))]).index == NAME


def test_choice_more_bound_fields_then_fewer_points() -> None:
    last = IndexDef(9, ("last",))
    q = (where("last") == "S") & (where("first") == "A")
    assert plan(q, [last, NAME]).index == NAME
    q = where("last").one_of(["S", "T"]) & (where("age") == 3)
    assert plan(q, [last, AGE]).index == AGE  # one point before two


def test_choice_bounded_range_then_order_then_id() -> None:
    b = IndexDef(7, ("b",))
    q = (where("age") > 3) & (where("b") > 1) & (where("b") < 5)
    assert plan(q, [AGE, b]).index == b  # both ends bounded
    q = (where("age") > 3) & (where("b") > 1)
    assert plan(q, [AGE, b]).index == AGE  # a tie: the lower id
    assert plan(q, [b, AGE]).index == AGE  # whatever the list order
    assert plan(q, [AGE, b], order_by="-b").index == b  # a tie: the one that serves the order
    q = (where("age") > 3) & where("b").matches(".*")
    assert plan(q, [AGE, b]).index == AGE  # a whole rank is the loosest


def test_choice_range_field_beats_none() -> None:
    last = IndexDef(1, ("last",))
    q = (where("last") == "S") & (where("first") > "A")
    assert plan(q, [last, NAME]).index == NAME


# ---------------------------------------------------------------- P5: ordered


def test_ordered_without_order_by() -> None:
    assert plan(where("age") > 3, INDEXES, limit=3).ordered
    assert plan(None, INDEXES).ordered


def test_ordered_by_the_index() -> None:
    p = plan(where("age") >= 18, INDEXES, order_by="age", limit=10)
    assert p.ordered and not p.reverse and p.stop == 10
    assert p.explain() == "index age: age >= 18; order by age (index order); limit 10"
    p = plan(where("age") >= 18, INDEXES, order_by="-age", offset=2)
    assert p.ordered and p.reverse
    assert p.explain() == "index age: age >= 18; order by -age (index order, backwards); offset 2"
    p = plan(where("age").one_of([1, 5]), INDEXES, order_by="age")
    assert p.ordered  # several points on the order field itself


def test_ordered_composite() -> None:
    p = plan(where("last") == "S", INDEXES, order_by="-first")
    assert p.ordered and p.reverse
    p = plan((where("last") == "S") & (where("first") == "A"), INDEXES, order_by="last")
    assert p.ordered  # all ties: by primary key, as the entries are
    p = plan(where("last").one_of(["S", "T"]), INDEXES, order_by="first")
    assert not p.ordered and not p.reverse  # several prefixes
    assert p.explain() == "index (last, first): last in ['S', 'T']; then sort by first"
    p = plan(where("last") >= "S", INDEXES, order_by="last")
    assert not p.ordered  # ties would come by first, not by primary key
    p = plan(where("age") >= 3, INDEXES, order_by="email")
    assert not p.ordered


# ---------------------------------------------------------------- explain


@pytest.mark.parametrize(
    ("query", "kwargs", "text"),
    [
        (None, {}, "full scan"),
        (
            None,
            {"order_by": "-age", "limit": 3, "offset": 1},
            "full scan; then sort by -age; limit 3; offset 1",
        ),
        (where("age") == 18.0, {}, "index age: age == 18.0"),
        (
            where("age") > 18,
            {"order_by": "-age"},
            "index age: age > 18; order by -age (index order, backwards)",
        ),
        (where("age") <= 9, {}, "index age: age <= 9"),
        ((where("age") > 1) & (where("age") <= 9), {}, "index age: 1 < age <= 9"),
        ((where("age") < 5) | (where("age") >= 60), {}, "index age: (age < 5 or age >= 60)"),
        (where("age").one_of([2, 1]), {"limit": 2}, "index age: age in [1, 2]; limit 2"),
        (where("last").search("x"), {}, "index (last, first): last is any str"),
        (where("last").matches("Sm.*"), {}, "index (last, first): 'Sm' <= last < 'Sn'"),
        (
            where("email") == "a@b",
            {"order_by": "age"},
            "index email: email == 'a@b'; then sort by age",
        ),
        (where("age").one_of([]), {}, "index age: nothing can match"),
    ],
)
def test_explain(query: Any, kwargs: dict[str, Any], text: str) -> None:
    assert plan(query, INDEXES, **kwargs).explain() == text


# ---------------------------------------------------------------- P6: order_key


def test_order_key() -> None:
    docs: list[dict[str, Any]] = [
        {"a": b"x"},
        {"a": "x"},
        {"a": 2},
        {"a": 1.5},
        {"a": True},
        {"a": None},
        {"a": [1]},
        {"a": {"b": 1}},
        {"a": math.nan},
        {},
    ]
    keys = [order_key(d, ("a",)) for d in docs]
    assert keys[6:] == [order_key({}, ("a",))] * 4  # unordered: all equal, first
    assert sorted(keys) == keys[6:] + keys[5::-1]
    assert order_key({"a": {"b": 2}}, ("a", "b")) == order_key({"a": 2.0}, ("a",))


# ---------------------------------------------------------------- random queries

PATHS = ["a", "b", "c", "c.d"]
SCALARS = [
    None,
    False,
    True,
    0,
    -0.0,
    1,
    1.0,
    -1,
    2,
    0.5,
    -1.5,
    2**53 + 1,
    float(2**53),
    math.inf,
    -math.inf,
    "",
    "a",
    "A",
    "An",
    "Ann",
    "Anna",
    "b",
    "\x00",
    "\U0010ffff",
    b"",
    b"a",
    b"\x00",
]
scalars = st.sampled_from(SCALARS)
containers = st.lists(scalars, max_size=2) | st.dictionaries(st.sampled_from("dx"), scalars)
values = scalars | containers
documents = st.fixed_dictionaries(
    {},
    optional={
        "a": values,
        "b": values,
        "c": values | st.fixed_dictionaries({}, optional={"d": values}),
    },
)
PATTERNS = ["An.*", "Ann", "a", ".*", "^A", "(?i)ann", "A|b", "Ann?", "An+", "\U0010ffff.*"]


def _is_one(value: Any) -> bool:
    return bool(value == 1)


def _leaf(path: str, kind: str, scalar: Any, seq: list[Any], pattern: str) -> Query:
    f = where(path)
    if kind in OPS:
        return Compare(parse_path(path), kind, scalar)
    return {
        "eq_list": lambda: f == seq,
        "eq_dict": lambda: f == {"d": scalar},
        "ne_list": lambda: f != seq,
        "one_of": lambda: f.one_of(seq),
        "not_in": lambda: f.not_in(seq),
        "matches": lambda: f.matches(pattern),
        "search": lambda: f.search(pattern),
        "exists": f.exists,
        "test": lambda: f.test(_is_one),
        "predicate": lambda: Predicate(lambda d: len(d) > 1),
        "everything": Everything,
    }[kind]()


KINDS = [*OPS, *OPS, "eq_list", "eq_dict", "ne_list", "one_of", "one_of", "not_in"]
KINDS += ["matches", "search", "exists", "test", "predicate", "everything"]
leaves = st.builds(
    _leaf,
    st.sampled_from(PATHS),
    st.sampled_from(KINDS),
    scalars,
    st.lists(scalars | st.lists(scalars, max_size=1), max_size=3),
    st.sampled_from(PATTERNS),
)
queries = st.recursive(
    leaves,
    lambda q: (
        st.builds(lambda x, y: x & y, q, q)
        | st.builds(lambda x, y: x | y, q, q)
        | st.builds(lambda x: ~x, q)
    ),
    max_leaves=6,
)
index_sets = st.lists(
    st.tuples(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3, unique=True), st.booleans()),
    max_size=4,
).map(lambda specs: [IndexDef(i + 1, tuple(f), u) for i, (f, u) in enumerate(specs)])
orders = st.sampled_from([None, "a", "-a", "b", "-b", "c", "-c.d", "c.d"])


# Dense: few values, fields mostly present, conjunctions of indexable leaves,
# so that index plans with several matches, composite prefixes and ordered
# reads are common (the general strategies above mostly yield full scans).
DENSE = [None, True, 0, 1, 1.0, 2, "A", "Ann", b"a"]
dense_values = st.sampled_from(DENSE).flatmap(
    lambda v: st.sampled_from([v] * 6 + [ABSENT, [v]])  # mostly a present scalar
)


def _documents(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Documents over PATHS with field values from `values` (ABSENT: no field)."""
    c = values | st.builds(lambda d: {} if d is ABSENT else {"d": d}, values)
    return st.builds(
        lambda a, b, c: {k: v for k, v in (("a", a), ("b", b), ("c", c)) if v is not ABSENT},
        values,
        values,
        c,
    )


dense_documents = _documents(dense_values)
# Three values (1 and 1.0 are one): many ties, for the order's tie-break (P5).
tied_documents = _documents(st.sampled_from([1, 1.0, "A", None, 1, "A", ABSENT, [1]]))
DENSE_KINDS = ["==", "==", "==", "<", "<=", ">", ">=", "one_of", "one_of", "eq_list"]
DENSE_KINDS += ["matches", "search", "exists", "not_in"]
DENSE_PATTERNS = [*PATTERNS, "(?i)a.*", "(?i)ANN", "A", "n", "nn"]
dense_scalars = st.sampled_from(DENSE)


@st.composite
def dense_cases(draw: st.DrawFn) -> tuple[Query, list[dict[str, Any]]]:
    """Documents, and a query whose operands are mostly their values (lists
    included), so that matches, ties and lists in indexed fields are common."""
    docs = draw(st.lists(dense_documents, min_size=4, max_size=12))

    def operand(path: str) -> Any:
        seen = [resolve(d, parse_path(path)) for d in docs]
        seen = [v for v in seen if v is not MISSING and not isinstance(v, dict)]
        values: st.SearchStrategy[Any] = dense_scalars
        if draw(st.booleans()) and seen:
            values = st.sampled_from(seen)
        return draw(values)

    def leaf() -> Query:
        path = draw(st.sampled_from(PATHS))
        kind = draw(st.sampled_from(DENSE_KINDS))
        value = operand(path)
        lists = [v for d in docs if type(v := resolve(d, parse_path(path))) is list]
        if lists and kind in ("eq_list", "one_of") and draw(st.booleans()):
            value = draw(st.sampled_from(lists))  # a list the field holds: no entry
        if kind in OPS[2:] and rank(value) is None:
            kind = "one_of"  # lists have no order: one_of [the list] instead
        values = [value, *(operand(path) for _ in range(draw(st.integers(0, 2))))]
        seq = value if kind == "eq_list" and type(value) is list else values
        return _leaf(path, kind, value, seq, draw(st.sampled_from(DENSE_PATTERNS)))

    def tree(depth: int) -> Query:
        kind = draw(st.integers(0, 9)) if depth else 0
        if kind < 5:
            return leaf()
        if kind == 9:
            return ~tree(depth - 1)
        parts = tuple(tree(depth - 1) for _ in range(draw(st.integers(2, 3))))
        return And(parts) if kind < 8 else Or(parts)

    return tree(3), docs


dense_indexes = index_sets.filter(bool)


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(
        queries, index_sets, st.lists(documents, max_size=8), orders, st.none() | st.integers(0, 3)
    )
)
def test_random_plans(case: tuple[Query, list[IndexDef], list[dict[str, Any]], Any, Any]) -> None:
    check_plan(*case)


@settings(max_examples=250, deadline=None)
@given(dense_cases(), dense_indexes, orders)
def test_random_dense_plans(
    case: tuple[Query, list[dict[str, Any]]], indexes: list[IndexDef], order_by: str | None
) -> None:
    query, docs = case
    check_plan(query, indexes, docs, order_by, None)


@st.composite
def or_cases(draw: st.DrawFn) -> tuple[Query, list[dict[str, Any]]]:
    """An or of conjunctions on the fields of index (a, b), operands taken
    from the documents: the union and cut of ranges (P3) under test."""
    docs = draw(st.lists(dense_documents, min_size=4, max_size=12))

    def branch() -> Query:
        model = draw(st.sampled_from(docs))
        parts: list[Query] = []
        for path in ("a", "b"):
            value = model.get(path)
            kind = draw(st.sampled_from(["==", "==", "<=", ">", "one_of", "skip"]))
            if rank(value) is None or kind == "skip":
                continue
            parts.append(_leaf(path, kind, value, [value, draw(dense_scalars)], ""))
        if not parts:
            return where("a") == draw(dense_scalars)
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    branches = tuple(branch() for _ in range(draw(st.integers(2, 4))))
    query: Query = Or(branches)
    if draw(st.booleans()):  # an And around it: its needs cut the or's ranges
        query = query & (where("a") >= draw(dense_scalars))
    return query, docs


@settings(max_examples=200, deadline=None)
@given(or_cases(), index_sets, orders)
def test_random_or_plans(
    case: tuple[Query, list[dict[str, Any]]], others: list[IndexDef], order_by: str | None
) -> None:
    query, docs = case
    indexes = [IndexDef(1, ("a", "b")), *(IndexDef(i.id + 1, i.fields) for i in others)]
    check_plan(query, indexes, docs, order_by, None)


@st.composite
def ordered_cases(draw: st.DrawFn) -> tuple[Query, list[IndexDef], str, list[dict[str, Any]]]:
    """An index, equality on all its fields but one, order_by that one (P5),
    and documents; the equalities take a document's values, so that several
    documents tie on them and the order has something to order."""
    documents = draw(st.sampled_from([dense_documents, tied_documents]))
    docs = draw(st.lists(documents, min_size=4, max_size=12))
    model = draw(st.sampled_from(docs))
    fields = draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3, unique=True))
    at = draw(st.integers(0, len(fields) - 1))
    parts: list[Query] = []
    for f in fields:
        value = resolve(model, parse_path(f))
        # Mostly bound, sometimes not (then the plan must not claim the order).
        if f != fields[at] and (f == fields[0] or draw(st.integers(0, 2))):
            parts.append(where(f) == (value if rank(value) is not None else None))
    if at == 0 or draw(st.booleans()):  # the first field must be needed
        kind = draw(st.sampled_from(DENSE_KINDS[:9]))  # == < <= > >= one_of
        values = draw(st.lists(dense_scalars, max_size=3))
        value = resolve(model, parse_path(fields[at]))
        if rank(value) is None or draw(st.booleans()):
            value = draw(dense_scalars)
        parts.append(_leaf(fields[at], kind, value, [value, *values], ""))
    if draw(st.booleans()):  # and a leaf on any field
        path, kind = draw(st.sampled_from(PATHS)), draw(st.sampled_from(DENSE_KINDS))
        pattern = draw(st.sampled_from(DENSE_PATTERNS))
        parts.append(_leaf(path, kind, draw(dense_scalars), [draw(dense_scalars)], pattern))
    query = parts[0] if len(parts) == 1 else And(tuple(parts))
    order_by = draw(st.sampled_from(["", "-"])) + fields[at]
    others = [IndexDef(i.id + 1, i.fields, i.unique) for i in draw(index_sets)]  # ids unique
    return query, [IndexDef(1, tuple(fields)), *others], order_by, docs


@settings(max_examples=250, deadline=None)
@given(ordered_cases())
def test_random_ordered_plans(
    case: tuple[Query, list[IndexDef], str, list[dict[str, Any]]],
) -> None:
    query, indexes, order_by, docs = case
    check_plan(query, indexes, docs, order_by, None)


def check_plan(
    query: Query,
    indexes: list[IndexDef],
    docs: list[dict[str, Any]],
    order_by: str | None,
    limit: int | None,
) -> None:
    """P1, P5 and P8 for one query over `docs` (primary keys 0, 1, ...)."""
    p = plan(query, indexes, order_by=order_by, limit=limit)
    check_ranges(p.ranges)
    # P8: the same plan again, and whatever the order the indexes come in.
    assert plan(query, indexes, order_by=order_by, limit=limit) == p
    assert plan(query, indexes[::-1], order_by=order_by, limit=limit) == p
    matched = [(pk, doc) for pk, doc in enumerate(docs) if query(doc)]
    text = p.explain()
    if p.index is None:
        assert p.ranges == FULL and text.startswith("full scan")
    else:
        assert text.startswith(f"index {p.index.name}: ")
        index = p.index
        for pk, doc in matched:  # P1
            key = entry_key(doc, index, pk)
            assert key is not None and in_ranges(key, p.ranges), (pk, doc, p)
    if p.reverse:
        assert p.ordered and p.order is not None and p.order[1]
    if p.ordered and p.order is not None:  # P5: the read order is the sort's order
        assert p.index is not None
        path, descending = p.order
        read = sorted(matched, key=lambda m: entry_key(m[1], index, m[0]) or b"", reverse=p.reverse)

        def sort_key(m: tuple[int, dict[str, Any]]) -> tuple[Any, bytes]:
            return order_key(m[1], path), encode_key((m[0],))

        assert read == sorted(matched, key=sort_key, reverse=descending)


# Patterns: an optional anchor or flag, literals, then special characters.
regex_texts = st.text(alphabet="AAnnxa\n\U0010ffff", max_size=5)
regex_heads = st.sampled_from(["", "", "^", "\\A", "(?i)", "(?x)"])
regex_literals = st.text(alphabet="AAnna \U0010ffff", max_size=3)
pattern_parts = ["A", "n", "a", ".", "*", "+", "?", "$", "|", "(", ")", "[a-n]", "\\d", "{2}"]
pattern_parts += ["\\A", "(?:", "\n", "*", "?", "{0}"]
patterns = st.builds(
    lambda head, literal, rest: head + literal + "".join(rest),
    regex_heads,
    regex_literals,
    st.lists(st.sampled_from(pattern_parts), max_size=4),
)


@settings(max_examples=600, deadline=None)
@given(patterns, st.booleans(), regex_texts)
def test_regex_ranges(pattern: str, whole: bool, text: str) -> None:
    """P1 for matches/search: every str the pattern matches lies in the ranges."""
    try:
        re.compile(pattern)
    except re.error:
        return
    query = Regex(("s",), pattern, whole)
    index = IndexDef(1, ("s",))
    p = plan(query, [index])
    assert p.index == index
    check_ranges(p.ranges)
    if query({"s": text}):
        key = entry_key({"s": text}, index, 0)
        assert key is not None and in_ranges(key, p.ranges)


@given(values, values)
def test_order_key_agrees_with_the_index(x: Any, y: Any) -> None:
    """P6: order_key compares as the index elements (ABSENT for the unordered) do."""

    def element(v: Any) -> bytes:
        return encode_key((ABSENT if isinstance(v, (list, dict)) else v,))

    kx, ky = order_key({"f": x}, ("f",)), order_key({"f": y}, ("f",))
    assert (kx < ky) == (element(x) < element(y))
    assert (kx == ky) == (element(x) == element(y))
    assert order_key({}, ("f",)) <= kx


def test_plan_is_frozen() -> None:
    p = plan(where("age") == 1, INDEXES)
    assert isinstance(p, Plan)
    with pytest.raises(AttributeError):
        p.index = None  # type: ignore[misc]


def test_a_full_scan_serves_the_primary_key_order() -> None:
    """P5: a full scan walks primary keys in order, ascending only."""
    up = plan(None, [], order_by="_id", limit=3, primary_key="_id")
    assert up.index is None and up.ordered and up.stop == 3
    assert up.explain() == "full scan; order by _id (primary key order); limit 3"
    down = plan(None, [], order_by="-_id", primary_key="_id")
    assert not down.ordered and down.explain() == "full scan; then sort by -_id"
    assert not plan(None, [], order_by="_id").ordered  # no primary key named
    assert not plan(None, [], order_by="id", primary_key="_id").ordered


def test_exact_plans_test_only_the_first_field_by_order_comparisons() -> None:
    """P10."""
    ab = IndexDef(1, ("a", "b"))
    assert plan(where("a") == 3, [ab]).exact
    assert plan((where("a") >= 1) & (where("a") < 4), [ab]).exact
    assert plan(where("a").one_of([1, "x", None]), [ab]).exact
    assert not plan(
        (where("a") == 3) & (where("b") < 2), [ab]
    ).exact  # b: the entry has it, ranges too
    assert not plan((where("a") == 3) & (where("c") == 1), [ab]).exact
    assert not plan(where("a").matches("x.*"), [ab]).exact
    assert not plan(None, [ab]).exact  # a full scan
