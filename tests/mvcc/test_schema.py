"""Schemas: spec checks (S1), per-rule validation (S2-S4), round trip (S5)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvcc.errors import ValidationError
from mvcc.schema import RULES, TYPES, Schema

# ---------------------------------------------------------------- per-rule table

# (spec for field "f" or a dotted path, doc, error substring or None for a pass)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    ("f", {"type": "str"}, {"f": "x"}, None),
    ("f", {"type": "str"}, {"f": 1}, "field 'f': expected str, got int"),
    ("f", {"type": "str"}, {"f": None}, "field 'f': expected str, got None"),
    ("f", {"type": "str"}, {}, None),
    ("f", {"type": "str", "required": True}, {}, "field 'f': required"),
    ("f", {"type": "any", "required": True}, {"f": None}, None),
    ("f", {"type": "any", "required": True}, {}, "field 'f': required"),
    ("f", {"type": "int"}, {"f": 3}, None),
    ("f", {"type": "int"}, {"f": True}, "field 'f': expected int, got bool"),
    ("f", {"type": "int"}, {"f": 3.0}, "field 'f': expected int, got float"),
    ("f", {"type": "int", "min": 0}, {"f": -3}, "field 'f': must be >= 0, got -3"),
    ("f", {"type": "int", "min": 0}, {"f": 0}, None),
    ("f", {"type": "int", "max": 10}, {"f": 11}, "field 'f': must be <= 10, got 11"),
    ("f", {"type": "int", "max": 10}, {"f": 10}, None),
    ("f", {"type": "float"}, {"f": 2}, None),
    ("f", {"type": "float"}, {"f": 2.5}, None),
    ("f", {"type": "float"}, {"f": False}, "field 'f': expected float, got bool"),
    ("f", {"type": "float", "min": 0.5}, {"f": 0.25}, "must be >= 0.5, got 0.25"),
    ("f", {"type": "float", "min": 0}, {"f": math.nan}, "must be >= 0, got nan"),
    ("f", {"type": "float", "max": 0}, {"f": math.nan}, "must be <= 0, got nan"),
    ("f", {"type": "bool"}, {"f": False}, None),
    ("f", {"type": "bool"}, {"f": 0}, "field 'f': expected bool, got int"),
    ("f", {"type": "bytes"}, {"f": b"ab"}, None),
    ("f", {"type": "bytes"}, {"f": "ab"}, "expected bytes, got str"),
    ("f", {"type": "bytes", "max_length": 1}, {"f": b"ab"}, "length must be <= 1, got 2"),
    ("f", {"type": "str", "min_length": 2}, {"f": "a"}, "field 'f': length must be >= 2, got 1"),
    ("f", {"type": "str", "max_length": 2}, {"f": "ab"}, None),
    ("f", {"type": "list"}, {"f": [1]}, None),
    ("f", {"type": "list"}, {"f": (1,)}, "expected list, got tuple"),
    ("f", {"type": "list"}, {"f": {}}, "expected list, got dict"),
    ("f", {"type": "list", "min_length": 1}, {"f": []}, "length must be >= 1, got 0"),
    ("f", {"type": "dict"}, {"f": {"a": 1}}, None),
    ("f", {"type": "dict"}, {"f": [1]}, "expected dict, got list"),
    ("f", {"type": "enum", "values": ["new", "done"]}, {"f": "new"}, None),
    (
        "f",
        {"type": "enum", "values": ["new", "done"]},
        {"f": "old"},
        "field 'f': must be one of ['new', 'done'], got 'old'",
    ),
    ("f", {"type": "enum", "values": [1, 2]}, {"f": True}, "must be one of [1, 2], got True"),
    ("f", {"type": "enum", "values": [1, 2]}, {"f": 1.0}, "got 1.0"),
    ("f", {"type": "enum", "values": [1, 2]}, {"f": [1]}, "got [1]"),
    ("f", {"type": "enum", "values": [None, 1]}, {"f": None}, None),
    ("f", {"type": "any"}, {"f": {"x": [1, None]}}, None),
    ("f", {}, {"f": object()}, None),
    ("a.b", {"type": "int"}, {"a": {"b": 1}}, None),
    ("a.b", {"type": "int"}, {"a": {"b": "x"}}, "field 'a.b': expected int, got str"),
    ("a.b", {"type": "int"}, {"a": {}}, None),
    ("a.b", {"type": "int"}, {}, None),
    ("a.b", {"type": "int", "required": True}, {"a": {}}, "field 'a.b': required"),
    ("a.b", {"type": "int", "required": True}, {}, "field 'a.b': required"),
    ("a.b", {"type": "int"}, {"a": 5}, "field 'a.b': expected dict at 'a', got int"),
    ("a.b", {"type": "int"}, {"a": None}, "field 'a.b': expected dict at 'a', got None"),
    ("a.b.c", {"type": "str"}, {"a": {"b": {"c": 1}}}, "field 'a.b.c': expected str, got int"),
    ("a.b.c", {"type": "str"}, {"a": {"b": 2}}, "expected dict at 'a.b', got int"),
    ("a.b", {"type": "int"}, {"a.b": "x"}, None),  # a dotted path is not a dotted key
]


@pytest.mark.parametrize(("field", "rules", "doc", "error"), CASES)
def test_rule_table(
    field: str, rules: dict[str, Any], doc: dict[str, Any], error: str | None
) -> None:
    schema = Schema.compile({field: rules})
    if error is None:
        schema.validate(doc)
        return
    with pytest.raises(ValidationError) as info:
        schema.validate(doc)
    assert error in str(info.value)
    assert info.value.field == field


def test_first_failing_field_is_named() -> None:
    schema = Schema.compile(
        {
            "email": {"type": "str", "required": True, "max_length": 200},
            "age": {"type": "int", "min": 0},
            "status": {"type": "enum", "values": ["new", "done"]},
        }
    )
    schema.validate({"email": "ann@example.com", "age": 31, "status": "done", "x": 1})
    with pytest.raises(ValidationError, match="field 'age': must be >= 0, got -3"):
        schema.validate({"email": "a", "age": -3})
    with pytest.raises(ValidationError, match="field 'email': required"):
        schema.validate({"age": 3})


def test_document_must_be_a_dict() -> None:
    with pytest.raises(ValidationError, match="document must be a dict"):
        Schema.compile({}).validate([1])  # type: ignore[arg-type]


# ---------------------------------------------------------------- bad specs

BAD_SPECS: list[tuple[Any, str, str]] = [
    (
        {"age": {"type": "int", "minimum": 0}},
        "age",
        "schema for field 'age': unknown rule 'minimum' (known: type, required, min, max, "
        "max_length, min_length, values)",
    ),
    ({"age": {"type": "integer"}}, "age", "unknown type 'integer'"),
    ({"age": {"type": 3}}, "age", "unknown type 3"),
    ({"age": {"type": "int", "required": 1}}, "age", "rule 'required' must be a bool"),
    ({"age": {"type": "int", "min": "0"}}, "age", "rule 'min' must be a number, got '0'"),
    ({"age": {"type": "int", "max": True}}, "age", "rule 'max' must be a number"),
    ({"age": {"type": "float", "max": math.nan}}, "age", "rule 'max' must be a number"),
    ({"age": {"type": "int", "min": 5, "max": 3}}, "age", "rule 'min' (5) is greater than"),
    ({"s": {"type": "str", "min_length": 3, "max_length": 2}}, "s", "rule 'min_length' (3)"),
    ({"s": {"type": "str", "max_length": -1}}, "s", "rule 'max_length' must be an int >= 0"),
    ({"s": {"type": "str", "max_length": 2.0}}, "s", "rule 'max_length' must be an int >= 0"),
    ({"s": {"type": "str", "min": 0}}, "s", "rule 'min' does not apply to type 'str'"),
    ({"n": {"type": "int", "max_length": 3}}, "n", "rule 'max_length' does not apply"),
    ({"n": {"type": "int", "values": [1]}}, "n", "rule 'values' does not apply to type 'int'"),
    ({"e": {"type": "enum"}}, "e", "type 'enum' requires rule 'values'"),
    ({"e": {"type": "enum", "values": []}}, "e", "rule 'values' must be a non-empty list"),
    ({"e": {"type": "enum", "values": "ab"}}, "e", "rule 'values' must be a non-empty list"),
    ({"e": {"type": "enum", "values": ["a", [1]]}}, "e", "got list at index 1"),
    ({"e": {"type": "enum", "values": [{"a": 1}]}}, "e", "got dict at index 0"),
    ({"e": {"type": "enum", "values": [math.nan]}}, "e", "cannot hold NaN"),
    ({"f": "int"}, "f", "rules must be a dict, got str"),
    ({"a..b": {"type": "int"}}, "a..b", "field path must be non-empty keys"),
    ({"": {"type": "int"}}, "", "field path must be non-empty keys"),
    ({".a": {"type": "int"}}, ".a", "field path must be non-empty keys"),
    ({3: {"type": "int"}}, "3", "field name must be a str, got int"),
    (
        {"a": {"type": "int"}, "a.b": {"type": "str"}},
        "a.b",
        "parent field 'a' has type 'int', which cannot hold a dict",
    ),
]


@pytest.mark.parametrize(("spec", "field", "error"), BAD_SPECS)
def test_bad_spec(spec: Any, field: str, error: str) -> None:
    with pytest.raises(ValidationError) as info:
        Schema.compile(spec)
    assert error in str(info.value)
    assert info.value.field == field


def test_spec_must_be_a_dict() -> None:
    with pytest.raises(ValidationError, match="schema must be a dict"):
        Schema.compile([("a", {})])  # type: ignore[arg-type]


def test_parent_of_dict_or_any_type_is_allowed() -> None:
    schema = Schema.compile({"a": {"type": "dict"}, "a.b": {"type": "int"}, "c": {}, "c.d": {}})
    schema.validate({"a": {"b": 1}, "c": {"d": None}})
    with pytest.raises(ValidationError, match=r"field 'a\.b'"):
        schema.validate({"a": {"b": "x"}})


def test_to_spec_normalises_and_round_trips() -> None:
    spec = {"x": {}, "e": {"type": "enum", "values": ("a", b"b", None, 1, 2.5, True)}}
    schema = Schema.compile(spec)
    out = schema.to_spec()
    assert out == {
        "x": {"type": "any", "required": False},
        "e": {"type": "enum", "required": False, "values": ["a", b"b", None, 1, 2.5, True]},
    }
    assert Schema.compile(out) == schema
    assert msgpack.unpackb(msgpack.packb(out)) == out
    out["e"]["values"].append("z")  # to_spec hands out a copy
    assert schema.to_spec()["e"]["values"][-1] is True


# ---------------------------------------------------------------- properties

KEYS = st.sampled_from(["a", "b", "c", "d"])
PATHS = st.lists(KEYS, min_size=1, max_size=3).map(".".join)
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text()
    | st.binary()
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def field_rules(draw: st.DrawFn) -> dict[str, Any]:
    """Valid rules for one field, with bounds that some value can satisfy."""
    t = draw(st.sampled_from(TYPES))
    rules: dict[str, Any] = {"type": t}
    if draw(st.booleans()):
        rules["required"] = draw(st.booleans())
    if t in ("int", "float"):
        number = st.integers(-100, 100) if t == "int" else st.floats(-1e6, 1e6)
        lo, hi = sorted([draw(number), draw(number)])
        if draw(st.booleans()):
            rules["min"] = lo
        if draw(st.booleans()):
            rules["max"] = hi
    elif t in ("str", "bytes", "list"):
        lo, hi = sorted(draw(st.lists(st.integers(0, 5), min_size=2, max_size=2)))
        if draw(st.booleans()):
            rules["min_length"] = lo
        if draw(st.booleans()):
            rules["max_length"] = hi
    elif t == "enum":
        values = st.lists(SCALAR.filter(lambda x: x == x), min_size=1, max_size=4)
        rules["values"] = draw(values)
    return rules


def _leaf_paths(paths: list[str]) -> list[str]:
    """Paths none of which is a prefix of another, so one doc can carry them all."""
    out: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p.startswith(q + ".") or q.startswith(p + ".") for q in out):
            out.append(p)
    return out


SPECS = st.lists(st.tuples(PATHS, field_rules()), max_size=5).map(
    lambda items: dict(zip(_leaf_paths([p for p, _ in items]), [r for _, r in items]))
)


def satisfying(rules: dict[str, Any]) -> st.SearchStrategy[Any]:
    t = rules["type"]
    lo_len, hi_len = rules.get("min_length", 0), rules.get("max_length", 5)
    if t == "int":
        return st.integers(rules.get("min", -(10**6)), rules.get("max", 10**6))
    if t == "float":  # ints are accepted too; the rule table covers that
        return st.floats(rules.get("min"), rules.get("max"), allow_nan=False)
    if t == "str":
        return st.text(min_size=lo_len, max_size=hi_len)
    if t == "bytes":
        return st.binary(min_size=lo_len, max_size=hi_len)
    if t == "list":
        return st.lists(SCALAR, min_size=lo_len, max_size=hi_len)
    if t == "dict":
        return st.dictionaries(KEYS, VALUE, max_size=3)
    if t == "bool":
        return st.booleans()
    if t == "enum":
        return st.sampled_from(rules["values"])
    return VALUE


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


@settings(max_examples=150, deadline=None)
@given(spec=SPECS, data=st.data())
def test_built_doc_always_passes(spec: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    schema = Schema.compile(spec)
    doc: dict[str, Any] = {}
    for path, rules in spec.items():
        if rules.get("required") or data.draw(st.booleans()):
            _put(doc, path, data.draw(satisfying(rules)))
    schema.validate(doc)


@settings(max_examples=200, deadline=None)
@given(spec=st.lists(st.tuples(PATHS, field_rules()), max_size=5).map(dict), doc=VALUE)
def test_random_doc_passes_or_raises_validation_error(
    spec: dict[str, dict[str, Any]], doc: Any
) -> None:
    try:
        schema = Schema.compile(spec)
    except ValidationError as exc:  # only the parent-type rule can reject these
        assert "parent field" in str(exc)
        return
    try:
        schema.validate(doc)
    except ValidationError as exc:
        assert exc.field in spec or exc.field == ""


RAW_RULES = st.dictionaries(
    st.sampled_from([*RULES, "minimum"]),
    st.sampled_from(TYPES) | SCALAR | st.lists(SCALAR | st.lists(SCALAR), max_size=3),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(spec=st.dictionaries(PATHS | st.text(max_size=3), RAW_RULES | SCALAR, max_size=4))
def test_random_spec_compiles_or_raises_validation_error(spec: dict[Any, Any]) -> None:
    try:
        schema = Schema.compile(spec)
    except ValidationError as exc:
        assert str(exc).startswith("schema for field")
        return
    assert Schema.compile(schema.to_spec()) == schema
    assert schema.to_spec() == Schema.compile(schema.to_spec()).to_spec()


@settings(max_examples=100, deadline=None)
@given(spec=SPECS)
def test_to_spec_round_trips_through_msgpack(spec: dict[str, dict[str, Any]]) -> None:
    out = Schema.compile(spec).to_spec()
    back = msgpack.unpackb(msgpack.packb(out, use_bin_type=True), raw=False)
    assert Schema.compile(back).to_spec() == out
