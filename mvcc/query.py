"""Queries: `where(...)` builds an immutable tree of nodes, checked once, matched per document.

Owns what `find`, `find_one`, `count`, `update` and `delete` accept as a query
(DESIGN.md section 2) and what it means for one document.  A query is a tree of
the node classes below; the planner reads its public attributes to pick an
index, and a scan calls it: ``q(doc) -> bool``.

    where("age") >= 18                    Compare(("age",), ">=", 18)
    where("a.b") == 1                     Compare(("a", "b"), "==", 1)
    where("tag").one_of(["x", "y"])       OneOf(("tag",), ("x", "y"))
    where("tag").not_in(["x", "y"])       NotIn(("tag",), ("x", "y"))
    where("name").matches("A.*")          Regex(("name",), "A.*", whole=True)
    where("name").search("nn")            Regex(("name",), "nn", whole=False)
    where("email").exists()               Exists(("email",))
    where("age").test(is_prime)           Test(("age",), is_prime)
    q1 & q2,  q1 | q2,  ~q                And((q1, q2)), Or((q1, q2)), Not(q)
    None, {}                              Everything()
    {"name": "Ann", "a.b": 1}             And of Compare "==" (one key: the Compare)
    any other callable doc -> bool        Predicate(fn), opaque to the planner

A path is a str of non-empty keys separated by single dots: ``"a.b"``
addresses ``doc["a"]["b"]``.  A node holds it split, as a tuple of keys.

Reading a query (the planner's view): every node is a frozen dataclass whose
public fields are its constructor's arguments, as in the table above.  The
nodes that test one path subclass `FieldQuery` (`path`, `path_text`):
Compare (`op` in OPS, `value`), OneOf and NotIn (`values`, a tuple), Regex
(`pattern`, `whole`), Exists, Test (`fn`).  And and Or have `parts`, Not has
`part`, Predicate has `fn`.  No node class subclasses another public one, so
an isinstance test names exactly one kind.  `rank(v)` tells whether an
operand can bound an index range; `resolve(doc, path)` fetches a value the
way matching does (MISSING when absent).

Values
------
A value's rank is its place in the index order of storage/keys.py,
``sort_key(v)[0]``: None 0, bool 1, number (int and float, not bool) 2,
str 3, bytes 4.  `rank` gives it, and None for a list, a dict or anything
else ("unordered").  Types are exact, as the codec stores them: a bool is
not a number, a str subclass or an IntEnum has no rank, a tuple is not a list.

Invariants
(Q1) Build time, not scan time: every node checks its arguments when it is
     made, so a node that exists is well formed.  A bad path, operator, regex,
     operand (NaN, a type no document holds, a list or dict for an order
     comparison), a non-callable for test() or Predicate, a `&`/`|` operand
     that is not a node, or a bare `where("x")` used as a query raises
     `mvcc.errors.ValidationError` whose `field` is the path ("" where there
     is none).  Matching raises nothing of its own for any document; only a
     user's function (test(), Predicate) can raise mid-scan.
(Q2) Index agreement: for scalar x (no NaN) and a scalar operand v,
     ``where(f) OP v`` matches ``{f: x}`` exactly when rank(x) == rank(v) and
     ``sort_key(x) OP sort_key(v)``; so ``==`` matches exactly when
     ``encode_key((x,)) == encode_key((v,))``: 5 == 5.0, True != 1,
     "a" != b"a".  A value of another rank matches no order comparison, and
     a comparison across types never raises.  NaN in a document matches no
     comparison but `!=` and not_in (it equals nothing, as in the index,
     which cannot hold it).
(Q3) Containers compare by strict equality: ``where(f) == [..]`` or ``{..}``
     matches a list (dict) value whose items (values under the same keys) are
     strictly equal, recursively, by the rule of Q2: [1] == [1.0] but
     [True] != [1]; list order counts, dict order does not.  A list or dict
     operand cannot be ordered: `<` with one is a build-time error (Q1).
(Q4) Absence: a path whose key is missing, or that runs through a value that
     is not a dict, is absent.  An absent field matches no field node:
     not `==`, `!=`, `<`, one_of, not_in, matches, search, exists nor test
     (whose function is never called on it).  Only `~` turns that into a
     match: ``~where("x").exists()`` is how to ask for a missing field.
     A present None is a value: exists() matches it and ``== None`` does.
(Q5) `!=` is `not ==` on a present field and does not match an absent one
     (as SQL's ``<>`` does not match NULL); likewise not_in is ``not one_of``
     on a present field.  `~q` is plain negation: it matches every document q
     does not, absent fields included.  one_of matches when `==` matches one
     of its values.
(Q6) matches (re.fullmatch) and search (re.search) match only str values.
(Q7) Canonical shape: nodes are immutable; And and Or hold at least two
     parts and never a part of their own class (nested ones are flattened);
     `~~q` is q.  Nodes compare and hash by structure, with operands compared
     by the Q3 rule, so ``where("a") == 1`` equals ``where("a") == 1.0`` but
     not ``where("a") == True`` (one_of and not_in values as a set).  An
     operand is copied when the node is built, so changing the caller's list
     afterwards changes nothing.  A node pickles when its functions do.
(Q8) A node has no truth value: bool(node) raises ValidationError, so that
     ``if where("a") == 1:``, ``q1 and q2`` or ``1 < where("x") < 9`` (which
     Python runs as ``(1 < x) and (x < 9)``) fail loudly instead of silently
     testing one side.

Matching is per document in a scan, so a node does its work when it is
built: the path is split, the regex compiled, the operand's rank found, and
the value test chosen as one closure.  A match is then one ``doc.get`` (a
one-key path) or a short dict walk, and one call; no exception is raised or
caught, and absence is the MISSING sentinel, which no value test accepts.

Concurrency: nodes are immutable and share nothing, so any thread or process
may use one (a forked child included).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeAlias, cast

from .errors import ValidationError

__all__ = [
    "MISSING",
    "OPS",
    "And",
    "Compare",
    "Everything",
    "Exists",
    "Field",
    "FieldQuery",
    "Not",
    "NotIn",
    "OneOf",
    "Or",
    "Predicate",
    "Query",
    "QueryLike",
    "Regex",
    "Test",
    "compile_query",
    "parse_path",
    "rank",
    "resolve",
    "where",
]

OPS = ("==", "!=", "<", "<=", ">", ">=")

# Exact types, as storage.keys.sort_key ranks them: a dict lookup on type(v)
# is the whole rank test in the hot path (an isinstance chain would also have
# to put bool before int).
_RANKS: dict[type, int] = {type(None): 0, bool: 1, int: 2, float: 2, str: 3, bytes: 4}
_rank_of = _RANKS.get

Doc: TypeAlias = dict[str, Any]
ValueTest: TypeAlias = Callable[[Any], bool]


class _Missing:
    """The type of MISSING: what `resolve` returns for an absent path."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"  # pickles as the module global: one instance per process


MISSING: Any = _Missing()


def rank(value: Any) -> int | None:
    """The index-order rank of a value (Values above), None when it has none.

    >>> [rank(v) for v in (None, False, 3, 2.5, "s", b"b", [1], {})]
    [0, 1, 2, 2, 3, 4, None, None]
    """
    return _rank_of(type(value))


def resolve(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at a split path, or MISSING when it is absent (Q4).

    >>> resolve({"a": {"b": None}}, ("a", "b")), resolve({"a": 5}, ("a", "b"))
    (None, MISSING)
    """
    value = doc
    for key in path:
        # MISSING is not a dict, so once a key is missing every later step
        # lands here too: no early-exit test in the loop.
        if not isinstance(value, dict):
            return MISSING
        value = value.get(key, MISSING)
    return value


def parse_path(path: Any) -> tuple[str, ...]:
    """Split a dot path into its keys; ValidationError unless every key is non-empty.

    >>> parse_path("a.b")
    ('a', 'b')
    """
    if not isinstance(path, str):
        raise ValidationError(
            f"a field path must be a str, not {_type_name(path)}: {path!r}", field=str(path)
        )
    parts = tuple(path.split("."))
    if not all(parts):
        raise ValidationError(
            f"field path {path!r} must be non-empty keys separated by single dots", field=path
        )
    return parts


def _check_parts(parts: Any) -> None:
    """A node's path: a non-empty tuple of non-empty str keys without dots (Q1)."""
    if type(parts) is not tuple or not parts:
        raise ValidationError(
            f"a node's path must be a non-empty tuple of keys (see parse_path), got {parts!r}",
            field=str(parts),
        )
    for key in parts:
        # A dot inside a key could not be written as a where() path, and
        # path_text would name another field.
        if not isinstance(key, str) or not key or "." in key:
            raise ValidationError(
                f"path key {key!r} of {parts!r} must be a non-empty str without dots",
                field=".".join(map(str, parts)),
            )


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _field_text(path: tuple[str, ...]) -> str:
    return f"where({'.'.join(path)!r})"


# ---------------------------------------------------------------- operands


def _operand(value: Any, path: str, what: str) -> Any:
    """A checked copy of a ==/one_of operand: a ranked scalar (not NaN), or a
    list or dict (str keys) of such, recursively (Q1, Q3).

    The copy makes the node immune to the caller mutating its list later.
    """
    t = type(value)
    if t in _RANKS:
        if t is float and value != value:
            raise ValidationError(
                f"{what}: NaN equals and orders against nothing, so it cannot be an "
                "operand; test for it with .test(math.isnan)",
                field=path,
            )
        return value
    if t is list:
        return [_operand(x, path, what) for x in value]
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise ValidationError(
                    f"{what}: a dict operand has only str keys, as documents do; got {k!r}",
                    field=path,
                )
        return {k: _operand(v, path, what) for k, v in value.items()}
    hint = ""
    if isinstance(value, (bool, int, float, str, bytes)):
        hint = " (convert the subclass to its base type, e.g. int(x) or x.value)"
    elif isinstance(value, (Query, Field)):
        hint = " (comparing two fields is not supported; use a callable doc -> bool)"
    raise ValidationError(
        f"{what}: cannot compare with {_type_name(value)} {value!r}; a document holds "
        f"only None, bool, int, float, str, bytes, list and dict{hint}",
        field=path,
    )


def _freeze(value: Any) -> Any:
    """A hashable form of a value in which equality is Q3's strict equality.

    Scalars become (rank, value): 1 and 1.0 stay equal (and hash equal, as
    Python guarantees), True and 1 do not.  Total on any document value: a
    type no operand can hold becomes (7, id), equal to nothing an operand
    freezes to.
    """
    t = type(value)
    r = _rank_of(t)
    if r is not None:
        return (r, value)
    if t is list:
        return (5, tuple(map(_freeze, value)))
    if t is dict:
        return (6, frozenset((k, _freeze(v)) for k, v in value.items()))
    return (7, id(value))


def _eq_test(value: Any) -> ValueTest:
    """The test of ``== value`` (Q2, Q3); False for MISSING, which has no rank."""
    r = _rank_of(type(value))
    if r is None:  # a list or dict (checked by _operand): strict, recursive
        frozen = _freeze(value)
        kind = type(value)
        return lambda v: type(v) is kind and _freeze(v) == frozen
    return lambda v: _rank_of(type(v)) == r and v == value


def _ne_test(eq: ValueTest) -> ValueTest:
    """The test of ``!=``: not ``==``, on a present value only (Q5)."""
    return lambda v: v is not MISSING and not eq(v)


# Within a rank Python's order is sort_key's (Q2), so after the rank test a
# plain comparison decides.  One lambda per operator rather than
# operator.lt & co. through one closure: a C call and a bool() less per document.
_ORDER_TESTS: dict[str, Callable[[int, Any], ValueTest]] = {
    "<": lambda r, x: lambda v: _rank_of(type(v)) == r and v < x,
    "<=": lambda r, x: lambda v: _rank_of(type(v)) == r and v <= x,
    ">": lambda r, x: lambda v: _rank_of(type(v)) == r and v > x,
    ">=": lambda r, x: lambda v: _rank_of(type(v)) == r and v >= x,
}


def _order_test(op: str, value: Any) -> ValueTest:
    """The test of ``<``, ``<=``, ``>`` or ``>=`` value (Q2); False for MISSING."""
    r = _rank_of(type(value))
    assert r is not None, "Compare refuses an unordered operand first"
    if r == 0:  # None has no order but equality: None <= None, not None < None
        if op in ("<=", ">="):
            return lambda v: v is None
        return lambda v: False
    return _ORDER_TESTS[op](r, value)


def _values(values: Any, path: str, what: str) -> tuple[Any, ...]:
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise ValidationError(
            f"{what} takes a list, tuple or set of values, not {_type_name(values)} {values!r}",
            field=path,
        )
    return tuple(_operand(v, path, f"{what} value [{i}]") for i, v in enumerate(values))


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


# ---------------------------------------------------------------- nodes


class Query:
    """A query node: call it on a document.  Combine with ``&``, ``|`` and ``~``."""

    __slots__ = ()

    def __call__(self, doc: Doc) -> bool:
        raise NotImplementedError

    def _args(self) -> tuple[Any, ...]:
        """The constructor's arguments: what pickling and equality start from."""
        return tuple(getattr(self, f.name) for f in fields(cast(Any, self)) if f.init)

    def _identity(self) -> tuple[Any, ...]:
        return self._args()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._identity()))

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt through the constructor: the derived private fields (compiled
        # regex, value-test closure) are recomputed rather than pickled.
        return (type(self), self._args())

    def __and__(self, other: object) -> And:
        return And((self, _combinable(other, "&")))

    def __or__(self, other: object) -> Or:
        return Or((self, _combinable(other, "|")))

    def __rand__(self, other: object) -> And:
        return And((_combinable(other, "&"), self))

    def __ror__(self, other: object) -> Or:
        return Or((_combinable(other, "|"), self))

    def __invert__(self) -> Query:
        return Not(self)

    def __bool__(self) -> bool:
        raise ValidationError(
            f"a query has no truth value (Q8): {self!r}; call it on a document, and "
            "combine queries with & | ~ rather than and/or/not or chained comparisons",
            field=getattr(self, "path_text", ""),
        )


def _combinable(other: object, op: str) -> Query:
    if isinstance(other, Query):
        return other
    if isinstance(other, Field):
        raise other._not_a_query()
    raise ValidationError(
        f"{op} combines queries, not {_type_name(other)} {other!r}; turn it into one "
        "with compile_query() (a dict or a callable doc -> bool)",
        field="",
    )


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class FieldQuery(Query):
    """A node that tests the value at one path; `path` is the split path.

    Subclasses run this __post_init__ first.  Their __call__ fetches the value
    inline, ``doc.get(_key)`` for a one-key path of a plain dict and `resolve`
    otherwise, rather than through a shared method: a call more per document
    costs a quarter of a simple comparison.
    """

    path: tuple[str, ...]
    _key: str | None = field(init=False)  # path[0] when the path has one key

    def __post_init__(self) -> None:
        _check_parts(self.path)
        object.__setattr__(self, "_key", self.path[0] if len(self.path) == 1 else None)

    @property
    def path_text(self) -> str:
        """The path as written in where(): keys joined by dots."""
        return ".".join(self.path)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Compare(FieldQuery):
    """``where(path) op value``; op is one of OPS (Q2-Q5)."""

    op: str
    value: Any
    # The value test, chosen once: it answers False for MISSING (Q4), which
    # has no rank and is no list, dict or None, so __call__ need not ask.
    _test: ValueTest = field(init=False)

    def __post_init__(self) -> None:
        FieldQuery.__post_init__(self)  # not super(): slots=True rebuilds the class
        text = self.path_text
        what = f"{_field_text(self.path)} {self.op}"
        if self.op not in OPS:
            raise ValidationError(f"{what}: unknown operator (known: {' '.join(OPS)})", field=text)
        value = _operand(self.value, text, what)
        object.__setattr__(self, "value", value)
        if self.op in _ORDER_TESTS:
            if _rank_of(type(value)) is None:
                raise ValidationError(
                    f"{what}: a {_type_name(value)} has no order; only None, bool, "
                    "numbers, str and bytes can be compared with < <= > >=",
                    field=text,
                )
            test = _order_test(self.op, value)
        elif self.op == "==":
            test = _eq_test(value)
        else:
            test = _ne_test(_eq_test(value))
        object.__setattr__(self, "_test", test)

    def __call__(self, doc: Doc) -> bool:
        key = self._key
        value = doc.get(key, MISSING) if key and type(doc) is dict else resolve(doc, self.path)
        return self._test(value)

    def _identity(self) -> tuple[Any, ...]:
        return (self.path, self.op, _freeze(self.value))

    def __repr__(self) -> str:
        return f"{_field_text(self.path)} {self.op} {self.value!r}"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class _Membership(FieldQuery):
    """What OneOf and NotIn share.  Neither subclasses the other, so that a
    planner's isinstance(node, OneOf) never takes a NotIn for one."""

    values: tuple[Any, ...]
    # One set lookup per document instead of a test per value; frozen values
    # make the set compare as `==` does (Q2, Q3).
    _members: frozenset[Any] = field(init=False)

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        FieldQuery.__post_init__(self)
        values = _values(self.values, self.path_text, f"{_field_text(self.path)}.{self.method}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "_members", frozenset(map(_freeze, values)))

    def _present_member(self, doc: Doc) -> bool | None:
        """None when the path is absent, else whether the value is a member."""
        key = self._key
        value = doc.get(key, MISSING) if key and type(doc) is dict else resolve(doc, self.path)
        if value is MISSING:
            return None
        r = _rank_of(type(value))
        return ((r, value) if r is not None else _freeze(value)) in self._members

    def _identity(self) -> tuple[Any, ...]:
        return (self.path, self._members)

    def __repr__(self) -> str:
        return f"{_field_text(self.path)}.{self.method}({list(self.values)!r})"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class OneOf(_Membership):
    """``where(path).one_of(values)``: `==` matches one of the values (Q5)."""

    method: ClassVar[str] = "one_of"

    def __call__(self, doc: Doc) -> bool:
        return self._present_member(doc) is True


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class NotIn(_Membership):
    """``where(path).not_in(values)``: present and not one_of (Q5)."""

    method: ClassVar[str] = "not_in"

    def __call__(self, doc: Doc) -> bool:
        return self._present_member(doc) is False


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Regex(FieldQuery):
    """``where(path).matches(pattern)`` (whole=True, re.fullmatch) or
    ``.search(pattern)`` (whole=False, re.search); str values only (Q6)."""

    pattern: str
    whole: bool
    _match: Callable[[str], Any] = field(init=False)  # the compiled pattern's method

    def __post_init__(self) -> None:
        FieldQuery.__post_init__(self)
        object.__setattr__(self, "whole", bool(self.whole))
        what = f"{_field_text(self.path)}.{self._method}"
        if type(self.pattern) is not str:
            raise ValidationError(
                f"{what} takes a str pattern (flags inline, e.g. '(?i)ann'), "
                f"not {_type_name(self.pattern)} {self.pattern!r}",
                field=self.path_text,
            )
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValidationError(
                f"{what}: pattern {self.pattern!r} does not compile: {exc}", field=self.path_text
            ) from exc
        object.__setattr__(self, "_match", compiled.fullmatch if self.whole else compiled.search)

    @property
    def _method(self) -> str:
        return "matches" if self.whole else "search"

    def __call__(self, doc: Doc) -> bool:
        key = self._key
        value = doc.get(key, MISSING) if key and type(doc) is dict else resolve(doc, self.path)
        return type(value) is str and self._match(value) is not None

    def __repr__(self) -> str:
        return f"{_field_text(self.path)}.{self._method}({self.pattern!r})"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Exists(FieldQuery):
    """``where(path).exists()``: the path is present, None included (Q4)."""

    def __call__(self, doc: Doc) -> bool:
        key = self._key
        if key and type(doc) is dict:
            return key in doc
        return resolve(doc, self.path) is not MISSING

    def __repr__(self) -> str:
        return f"{_field_text(self.path)}.exists()"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Test(FieldQuery):
    """``where(path).test(fn)``: bool(fn(value)), called only on a present value (Q4)."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    fn: Callable[[Any], Any]

    def __post_init__(self) -> None:
        FieldQuery.__post_init__(self)
        if not callable(self.fn):
            raise ValidationError(
                f"{_field_text(self.path)}.test takes a callable value -> bool, "
                f"not {_type_name(self.fn)} {self.fn!r}",
                field=self.path_text,
            )

    def __call__(self, doc: Doc) -> bool:
        key = self._key
        value = doc.get(key, MISSING) if key and type(doc) is dict else resolve(doc, self.path)
        return value is not MISSING and bool(self.fn(value))

    def __repr__(self) -> str:
        return f"{_field_text(self.path)}.test({_fn_name(self.fn)})"


def _wrap(node: Query) -> str:
    """A part's repr inside & | ~: comparisons and compounds in parentheses,
    as Python's precedence needs (& binds tighter than ==) and readers want."""
    text = repr(node)
    return f"({text})" if isinstance(node, (Compare, _Compound)) else text


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class _Compound(Query):
    """What And and Or share: checked, flattened parts (Q7).  Neither
    subclasses the other, so isinstance(node, And) means an And."""

    parts: tuple[Query, ...]

    symbol: ClassVar[str] = ""

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.parts, (tuple, list)):
            raise ValidationError(f"{name} takes a tuple of queries, not {self.parts!r}", field="")
        flat: list[Query] = []
        for part in self.parts:
            if type(part) is type(self):
                flat.extend(part.parts)  # already flat: one level is enough
            else:
                flat.append(_combinable(part, self.symbol))
        if len(flat) < 2:
            raise ValidationError(f"{name} needs at least two queries, got {len(flat)}", field="")
        object.__setattr__(self, "parts", tuple(flat))

    def __repr__(self) -> str:
        return f" {self.symbol} ".join(map(_wrap, self.parts))


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class And(_Compound):
    """``q1 & q2 & ...``: every part matches."""

    symbol: ClassVar[str] = "&"

    def __call__(self, doc: Doc) -> bool:
        # A loop, not all(genexpr): measured 150 ns against 420 ns for two parts.
        for part in self.parts:  # noqa: SIM110
            if not part(doc):
                return False
        return True


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Or(_Compound):
    """``q1 | q2 | ...``: some part matches."""

    symbol: ClassVar[str] = "|"

    def __call__(self, doc: Doc) -> bool:
        for part in self.parts:  # noqa: SIM110 - a loop, as in And.__call__
            if part(doc):
                return True
        return False


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Not(Query):
    """``~q``: q does not match, absent fields included (Q5)."""

    part: Query

    def __post_init__(self) -> None:
        _combinable(self.part, "~")

    def __call__(self, doc: Doc) -> bool:
        return not self.part(doc)

    def __invert__(self) -> Query:
        return self.part  # ~~q is q (Q7)

    def __repr__(self) -> str:
        return f"~{_wrap(self.part)}"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Everything(Query):
    """The query None and {} stand for: every document matches."""

    def __call__(self, doc: Doc) -> bool:
        return True

    def __repr__(self) -> str:
        return "Everything()"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Predicate(Query):
    """A user's callable doc -> bool: matched by calling it, opaque to the planner."""

    fn: Callable[[Doc], Any]

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ValidationError(
                f"Predicate takes a callable doc -> bool, not {_type_name(self.fn)}", field=""
            )

    def __call__(self, doc: Doc) -> bool:
        return bool(self.fn(doc))

    def __repr__(self) -> str:
        return f"Predicate({_fn_name(self.fn)})"


# ---------------------------------------------------------------- the builder


class Field:
    """``where(path)``: a field to compare, not yet a query (Q1, Q8)."""

    __slots__ = ("path",)

    def __init__(self, path: tuple[str, ...]) -> None:
        _check_parts(path)
        self.path = path

    @property
    def path_text(self) -> str:
        """The path as written in where()."""
        return ".".join(self.path)

    # Comparison operators build nodes instead of answering, as SQLAlchemy's
    # columns do; `5 < where("x")` reaches __gt__ by Python's reflection.
    def __eq__(self, value: object) -> Compare:  # type: ignore[override]
        return Compare(self.path, "==", value)

    def __ne__(self, value: object) -> Compare:  # type: ignore[override]
        return Compare(self.path, "!=", value)

    def __lt__(self, value: object) -> Compare:
        return Compare(self.path, "<", value)

    def __le__(self, value: object) -> Compare:
        return Compare(self.path, "<=", value)

    def __gt__(self, value: object) -> Compare:
        return Compare(self.path, ">", value)

    def __ge__(self, value: object) -> Compare:
        return Compare(self.path, ">=", value)

    __hash__ = None  # type: ignore[assignment]  # __eq__ builds a query: no set or dict key

    def one_of(self, values: Iterable[Any]) -> OneOf:
        """The value `==` one of `values` (a list, tuple or set)."""
        return OneOf(self.path, cast(Any, values))

    def not_in(self, values: Iterable[Any]) -> NotIn:
        """The field is present and its value `==` none of `values` (Q5)."""
        return NotIn(self.path, cast(Any, values))

    def matches(self, pattern: str) -> Regex:
        """The whole str value matches `pattern` (re.fullmatch)."""
        return Regex(self.path, pattern, True)

    def search(self, pattern: str) -> Regex:
        """Some part of the str value matches `pattern` (re.search)."""
        return Regex(self.path, pattern, False)

    def exists(self) -> Exists:
        """The field is present, even as None (Q4)."""
        return Exists(self.path)

    def test(self, fn: Callable[[Any], Any]) -> Test:
        """bool(fn(value)), with fn called only when the field is present."""
        return Test(self.path, fn)

    def _not_a_query(self) -> ValidationError:
        return ValidationError(
            f"{self!r} is a field, not a query: compare it, e.g. {self!r} == value "
            f"or {self!r}.exists()",
            field=self.path_text,
        )

    def _refuse(self, *_: object) -> Any:
        raise self._not_a_query()

    __and__ = __rand__ = __or__ = __ror__ = __invert__ = __bool__ = __call__ = _refuse

    def __repr__(self) -> str:
        return _field_text(self.path)


def where(path: str) -> Field:
    """The field at a dot path, to compare: ``where("age") >= 18``.

    >>> q = (where("age") >= 18) & ~where("banned").exists()
    >>> q({"age": 20}), q({"age": 20, "banned": None}), q({"age": "20"})
    (True, False, False)
    >>> q
    (where('age') >= 18) & ~where('banned').exists()
    """
    return Field(parse_path(path))


QueryLike: TypeAlias = Query | dict[str, Any] | Callable[[Doc], Any] | None


def compile_query(query: QueryLike) -> Query:
    """What a table call was given as a query, as a node (Q1).

    None and {} match everything; a dict is equality on every field (one
    `Compare` for one key, an `And` of them for more); a node is itself; any
    other callable doc -> bool becomes a `Predicate`.

    >>> compile_query({"name": "Ann", "a.b": 1})
    (where('name') == 'Ann') & (where('a.b') == 1)
    """
    if query is None:
        return Everything()
    if isinstance(query, Query):
        return query
    if isinstance(query, Field):
        raise query._not_a_query()
    if isinstance(query, dict):
        return _from_dict(query)
    if callable(query):
        return Predicate(query)
    raise ValidationError(
        "a query is None, a dict of field values, a where(...) query or a callable "
        f"doc -> bool, not {_type_name(query)} {query!r:.100}",
        field="",
    )


def _from_dict(query: dict[Any, Any]) -> Query:
    parts = [Compare(parse_path(path), "==", value) for path, value in query.items()]
    if not parts:
        return Everything()
    if len(parts) == 1:
        return parts[0]
    return And(tuple(parts))
