"""Per-table document schemas: a spec checked once at definition, then compiled.

`Schema.compile(spec)` takes the `schema=` dict of `db.table(...)` (DESIGN.md
section 2), checks the spec itself, and compiles every field to a tuple of
small checker closures; `Schema.validate(doc)` runs them on each write, before
anything is written (DESIGN.md section 5).  `Schema.to_spec()` gives the
normalised spec the catalog stores.

Spec: ``{field_path: {rule: value, ...}, ...}``.  A field path is a str of
non-empty dot-separated keys; ``"address.city"`` addresses
``doc["address"]["city"]``.

=============  ===========================  =====================================
rule           value                        applies to
=============  ===========================  =====================================
type           one of the type names below  every field; default "any"
required       bool; default False          every field
min, max       int or float, not NaN        int, float (inclusive bounds)
min_length,    int >= 0                     str (characters), bytes (bytes),
max_length                                  list (items)
values         non-empty list of scalars    enum, and only enum (required there)
=============  ===========================  =====================================

Types: "str", "int" (bool is not an int), "float" (an int is accepted too, as
JSON Schema's "number" accepts integers), "bool", "bytes", "list" (exactly bytes and
list, as the codec stores them), "dict", "enum" (the value equals one
of "values" *and* has the same type, so True does not match 1), "any".

Invariants
(S1) A spec that `compile` accepts is well formed: every rule is known, has a
     value of the right type and applies to the field's type; min <= max and
     min_length <= max_length; an enum has a non-empty list of scalar values;
     a path is never below a field whose type cannot hold a dict.  Anything
     else raises ValidationError naming the field and the rule.
(S2) `validate` raises only ValidationError, whose `field` is the failing
     path and whose message says what was expected and what was found.
(S3) A missing optional field passes, and so does a path whose parent dict is
     missing; a parent that is present but not a dict fails.  A present field
     whose value is None fails every type but "any" (None is a value, not an
     absence: write it as a missing field to leave it out).
(S4) NaN fails any min or max rule (it is neither >= nor <= anything).
(S5) `Schema.compile(s.to_spec()).to_spec() == s.to_spec()`, and `to_spec()`
     holds only dicts, lists, str, bool, int, float, bytes and None (msgpack).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mvcc.errors import ValidationError

__all__ = ["RULES", "TYPES", "Schema"]

RULES = ("type", "required", "min", "max", "max_length", "min_length", "values")
TYPES = ("str", "int", "float", "bool", "bytes", "list", "dict", "enum", "any")

_NUMERIC = ("int", "float")
_SIZED = ("str", "bytes", "list")
_SCALARS = (type(None), bool, int, float, str, bytes)

# A checker returns None when the value passes, else the failure reason.
# Rejected: one closure per field that re-reads the rule dict on every call;
# the rule names are resolved here, once, so validate only calls closures.
Check = Callable[[Any], str | None]
_MISSING = object()


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "float": _is_number,
    "bool": lambda v: isinstance(v, bool),
    # Exactly what the codec stores (storage/codec.py refuses tuples and
    # bytearrays, which would not round-trip): one answer in both places.
    "bytes": lambda v: type(v) is bytes,
    "list": lambda v: type(v) is list,
    "dict": lambda v: isinstance(v, dict),
}


def _type_check(type_name: str) -> Check:
    test = _TYPE_TESTS[type_name]

    def check(v: Any) -> str | None:
        return None if test(v) else f"expected {type_name}, got {_type_name(v)}"

    return check


def _min_check(lo: float) -> Check:
    def check(v: Any) -> str | None:
        return None if v >= lo else f"must be >= {lo!r}, got {v!r}"  # (S4): NaN fails

    return check


def _max_check(hi: float) -> Check:
    def check(v: Any) -> str | None:
        return None if v <= hi else f"must be <= {hi!r}, got {v!r}"

    return check


def _min_length_check(lo: int) -> Check:
    def check(v: Any) -> str | None:
        n = len(v)
        return None if n >= lo else f"length must be >= {lo}, got {n}"

    return check


def _max_length_check(hi: int) -> Check:
    def check(v: Any) -> str | None:
        n = len(v)
        return None if n <= hi else f"length must be <= {hi}, got {n}"

    return check


def _enum_check(values: list[Any]) -> Check:
    # Keyed by (type, value) so True does not match 1 nor 1.0 match 1.
    allowed = frozenset((type(x), x) for x in values)
    shown = repr(values)

    def check(v: Any) -> str | None:
        try:
            ok = (type(v), v) in allowed
        except TypeError:  # unhashable (a list, a dict): never a member
            ok = False
        return None if ok else f"must be one of {shown}, got {v!r}"

    return check


# ---------------------------------------------------------------- spec checks


def _spec_error(field: str, message: str) -> ValidationError:
    return ValidationError(f"schema for field {field!r}: {message}", field=field)


def _check_path(field: Any) -> tuple[str, ...]:
    if not isinstance(field, str):
        raise _spec_error(str(field), f"field name must be a str, got {_type_name(field)}")
    parts = tuple(field.split("."))
    if not all(parts):
        raise _spec_error(field, "field path must be non-empty keys separated by single dots")
    return parts


def _check_number(field: str, rule: str, value: Any) -> float:
    if not _is_number(value) or (isinstance(value, float) and math.isnan(value)):
        raise _spec_error(field, f"rule {rule!r} must be a number, got {value!r}")
    return value  # type: ignore[no-any-return]


def _check_length(field: str, rule: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise _spec_error(field, f"rule {rule!r} must be an int >= 0, got {value!r}")
    return value  # type: ignore[no-any-return]


def _check_values(field: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _spec_error(field, f"rule 'values' must be a non-empty list, got {value!r}")
    for i, x in enumerate(value):
        if not isinstance(x, _SCALARS):
            raise _spec_error(
                field,
                "rule 'values' must hold only scalars (None, bool, int, float, str, "
                f"bytes), got {_type_name(x)} at index {i}",
            )
        if isinstance(x, float) and math.isnan(x):
            raise _spec_error(field, f"rule 'values' cannot hold NaN (index {i})")
    return list(value)


def _normalise(field: str, rules: Any) -> dict[str, Any]:
    """One field's rules, checked (S1) and in canonical form."""
    if not isinstance(rules, dict):
        raise _spec_error(field, f"rules must be a dict, got {_type_name(rules)}")
    for rule in rules:
        if rule not in RULES:
            raise _spec_error(field, f"unknown rule {rule!r} (known: {', '.join(RULES)})")
    type_name = rules.get("type", "any")
    if type_name not in TYPES:
        raise _spec_error(field, f"unknown type {type_name!r} (known: {', '.join(TYPES)})")
    required = rules.get("required", False)
    if not isinstance(required, bool):
        raise _spec_error(field, f"rule 'required' must be a bool, got {required!r}")
    out: dict[str, Any] = {"type": type_name, "required": required}
    for rule, applies, checker in (
        ("min", _NUMERIC, _check_number),
        ("max", _NUMERIC, _check_number),
        ("min_length", _SIZED, _check_length),
        ("max_length", _SIZED, _check_length),
    ):
        if rule in rules:
            if type_name not in applies:
                raise _spec_error(field, f"rule {rule!r} does not apply to type {type_name!r}")
            out[rule] = checker(field, rule, rules[rule])
    for lo, hi in (("min", "max"), ("min_length", "max_length")):
        if lo in out and hi in out and out[lo] > out[hi]:
            raise _spec_error(
                field, f"rule {lo!r} ({out[lo]!r}) is greater than rule {hi!r} ({out[hi]!r})"
            )
    if type_name == "enum":
        if "values" not in rules:
            raise _spec_error(field, "type 'enum' requires rule 'values'")
        out["values"] = _check_values(field, rules["values"])
    elif "values" in rules:
        raise _spec_error(field, f"rule 'values' does not apply to type {type_name!r}")
    return out


def _checks(rules: dict[str, Any]) -> tuple[Check, ...]:
    """The checker closures for one normalised field, type check first."""
    type_name = rules["type"]
    if type_name == "any":
        return ()
    if type_name == "enum":
        return (_enum_check(rules["values"]),)
    checks = [_type_check(type_name)]
    for rule, make in (
        ("min", _min_check),
        ("max", _max_check),
        ("min_length", _min_length_check),
        ("max_length", _max_length_check),
    ):
        if rule in rules:
            checks.append(make(rules[rule]))
    return tuple(checks)


# ---------------------------------------------------------------- the schema

# (path, parts, required, checks) per field, in spec order.
_Field = tuple[str, tuple[str, ...], bool, tuple[Check, ...]]


class Schema:
    """A compiled schema; build it with `Schema.compile(spec)`."""

    __slots__ = ("_fields", "_spec")

    def __init__(self, spec: dict[str, dict[str, Any]], fields: list[_Field]) -> None:
        self._spec = spec
        self._fields = fields

    @classmethod
    def compile(cls, spec: dict[str, dict[str, Any]]) -> Schema:
        """Check `spec` (S1) and compile it; raises ValidationError naming the field."""
        if not isinstance(spec, dict):
            raise ValidationError(f"schema must be a dict, got {_type_name(spec)}", field="")
        normal: dict[str, dict[str, Any]] = {}
        fields: list[_Field] = []
        for field, rules in spec.items():
            parts = _check_path(field)
            norm = _normalise(field, rules)
            normal[field] = norm
            fields.append((field, parts, norm["required"], _checks(norm)))
        cls._check_parents(normal)
        return cls(normal, fields)

    @staticmethod
    def _check_parents(spec: dict[str, dict[str, Any]]) -> None:
        # "a.b" needs "a" to be able to hold a dict (S1); otherwise no doc could
        # carry both, and the error would only show up at the first write.
        for field in spec:
            parts = field.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in spec and spec[parent]["type"] not in ("dict", "any"):
                    raise _spec_error(
                        field,
                        f"parent field {parent!r} has type {spec[parent]['type']!r}, "
                        "which cannot hold a dict",
                    )

    def to_spec(self) -> dict[str, dict[str, Any]]:
        """The normalised spec, msgpack-able, for the catalog (S5)."""
        return {
            f: {k: (list(v) if isinstance(v, list) else v) for k, v in r.items()}
            for f, r in self._spec.items()
        }

    def validate(self, doc: dict[str, Any]) -> None:
        """Raise ValidationError naming the first failing field (S2, S3)."""
        if not isinstance(doc, dict):
            raise ValidationError(f"document must be a dict, got {_type_name(doc)}", field="")
        for path, parts, required, checks in self._fields:
            # The common flat field skips the path walk.
            value = doc.get(path, _MISSING) if len(parts) == 1 else _lookup(doc, path, parts)
            if value is _MISSING:
                if required:
                    raise ValidationError(f"field {path!r}: required", field=path)
                continue
            for check in checks:
                reason = check(value)
                if reason is not None:
                    raise ValidationError(f"field {path!r}: {reason}", field=path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self._spec == other._spec

    def __hash__(self) -> int:
        return hash(tuple(self._spec))

    def __repr__(self) -> str:
        return f"Schema({self._spec!r})"


def _lookup(doc: dict[str, Any], path: str, parts: tuple[str, ...]) -> Any:
    """The value at a dotted path, or _MISSING if a dict on the way lacks a key."""
    value: Any = doc
    for i, part in enumerate(parts):
        if not isinstance(value, dict):
            parent = ".".join(parts[:i])
            raise ValidationError(
                f"field {path!r}: expected dict at {parent!r}, got {_type_name(value)}",
                field=path,
            )
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value
