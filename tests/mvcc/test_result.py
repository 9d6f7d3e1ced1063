"""Result: a list of documents (R1), slices and copies that stay Results (R2),
pluck (R3), ids (R4), pickling (R5)."""

from __future__ import annotations

import doctest
import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mvcc.result
from mvcc.errors import ValidationError
from mvcc.query import MISSING, parse_path, resolve
from mvcc.result import Result

DOCS: list[dict[str, Any]] = [
    {"_id": 1, "name": "Ann", "addr": {"city": "Oslo"}},
    {"_id": 2, "name": None, "addr": {"city": None}},
    {"_id": 3, "addr": "nowhere"},
    {"_id": 4, "name": "Bob", "addr": {}},
]


def test_a_result_is_a_list() -> None:
    r = Result(DOCS)
    assert isinstance(r, list)
    docs = list(DOCS)
    assert r == docs and docs == r  # both directions, as list's == (R1)
    assert r != DOCS[:2] and r != DOCS[::-1]
    assert Result(DOCS, primary_key="name") == r  # the primary key is not compared
    assert repr(r) == repr(DOCS)
    assert len(r) == 4 and list(r) == DOCS and r[1] is DOCS[1] and r[-1] is DOCS[-1]
    assert json.loads(json.dumps(r)) == DOCS
    assert Result() == [] and Result().primary_key == "_id"


def test_first_and_last() -> None:
    r = Result(DOCS)
    assert r.first() is DOCS[0] and r.last() is DOCS[-1]
    assert Result().first() is None and Result().last() is None
    one = Result([{"_id": 9}])
    assert one.first() is one.last() is one[0]


def test_pluck_skips_absent_fields_and_keeps_none() -> None:
    r = Result(DOCS)
    assert r.pluck("name") == ["Ann", None, "Bob"]  # doc 3 has no name: skipped
    assert r.pluck("addr.city") == ["Oslo", None]  # "nowhere" is no dict; {} lacks city
    assert r.pluck("addr") == [{"city": "Oslo"}, {"city": None}, "nowhere", {}]
    assert r.pluck("nope") == [] and Result().pluck("a.b") == []


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", 5, None])
def test_pluck_checks_the_path(path: Any) -> None:
    with pytest.raises(ValidationError) as info:
        Result().pluck(path)  # even on an empty result
    assert info.value.field == str(path)


def test_ids() -> None:
    assert Result(DOCS).ids() == [1, 2, 3, 4]
    by_email = Result([{"email": "a@x"}, {"email": "b@x"}], primary_key="email")
    assert by_email.ids() == ["a@x", "b@x"]
    assert Result().ids() == []
    with pytest.raises(KeyError):
        Result([{"name": "no id"}]).ids()  # (R4): a table's documents always have one


def test_slices_and_copies_stay_results() -> None:
    r = Result(DOCS, primary_key="name")
    for part in (r[1:3], r[::-1], r[:0], r.copy()):
        assert type(part) is Result and part.primary_key == "name"
    assert r[1:3] == DOCS[1:3] and r[::-1] == DOCS[::-1]
    c = r.copy()
    c.append({"_id": 5})
    assert len(r) == 4  # a copy, not a view
    assert Result(DOCS)[:2].ids() == [1, 2]
    assert type(r + r) is list  # list's own + (R2)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(protocol: int) -> None:
    r = Result(DOCS, primary_key="email")
    back = pickle.loads(pickle.dumps(r, protocol=protocol))
    assert type(back) is Result and back == r and back.primary_key == "email"


def test_no_other_attributes() -> None:
    with pytest.raises(AttributeError):
        Result().extra = 1  # type: ignore[attr-defined]


def test_doctests() -> None:
    result = doctest.testmod(mvcc.result)
    assert result.failed == 0 and result.attempted > 0


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3))
nested_docs = st.recursive(
    st.dictionaries(st.sampled_from("abc"), scalars, max_size=3),
    lambda inner: st.dictionaries(st.sampled_from("abc"), st.one_of(scalars, inner), max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(docs=st.lists(nested_docs, max_size=5), path=st.sampled_from(["a", "b", "a.b", "c.a.b"]))
def test_pluck_is_resolve_without_the_absent(docs: list[dict[str, Any]], path: str) -> None:
    expected = [resolve(d, parse_path(path)) for d in docs]
    assert Result(docs).pluck(path) == [v for v in expected if v is not MISSING]
