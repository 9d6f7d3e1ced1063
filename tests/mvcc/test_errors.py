"""The public error hierarchy: one base, retryable marker, pickling, translation."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import pytest

import mvcc
import mvcc.errors as E
from locking.errors import LockWaitTimeout, RegistryFull
from mvcc.versions import PageView
from storage.errors import CorruptPage, EncodeError, InvalidKeyError, LogFailed, TooLarge

SAMPLES = [
    E.Error("boom"),
    E.ConflictError(table="users", key=7),
    E.LockTimeout._adopt(LockWaitTimeout("commit", seconds=1.5, path="/d/commit.lock")),
    E.ValidationError("field 'age': must be >= 0", field="age"),
    E.UniqueViolation(table="users", field="email", value="a@b.c"),
    E.TableNotFound(table="nope"),
    E.InvalidKey._adopt(InvalidKeyError("wrong passphrase or key", file="key")),
    E.CorruptionError._adopt(CorruptPage("checksum mismatch", pgno=12, file="pages")),
    E.ReadOnlyError("write in a readonly transaction"),
    E.ClosedError("the database is closed"),
]


def test_every_public_class_is_sampled() -> None:
    public = {getattr(E, n) for n in E.__all__ if isinstance(getattr(E, n), type)}
    public -= {E.Retryable}
    assert {type(s) for s in SAMPLES} == public


@pytest.mark.parametrize("err", SAMPLES, ids=lambda e: type(e).__name__)
def test_errors_pickle_round_trip(err: E.Error) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.__dict__ == err.__dict__
    assert isinstance(back, E.Error)


def test_only_conflicts_are_retryable() -> None:
    assert [type(s).__name__ for s in SAMPLES if isinstance(s, E.Retryable)] == ["ConflictError"]


def test_messages_name_what_and_where() -> None:
    assert "users" in str(E.ConflictError(table="users", key=7))
    assert "email" in str(E.UniqueViolation(table="users", field="email", value="x"))
    corrupt = SAMPLES[7]
    assert corrupt.pgno == 12 and "page 12" in str(corrupt)
    assert isinstance(corrupt, CorruptPage)  # layer code still catches it
    assert SAMPLES[2].name == "commit" and isinstance(SAMPLES[2], LockWaitTimeout)


@pytest.mark.parametrize(
    ("raised", "public"),
    [
        (CorruptPage("bad", pgno=3, file="pages"), E.CorruptionError),
        (InvalidKeyError("wrong passphrase or key"), E.InvalidKey),
        (EncodeError("unsupported type set", field="tags"), E.ValidationError),
        (TooLarge("document", size=10, limit=5, field="blob"), E.ValidationError),
        (LockWaitTimeout("commit", seconds=2.0), E.LockTimeout),
        (RegistryFull(slots=1024), E.Error),
        (LogFailed("the log failed: fsync: EIO"), E.Error),
    ],
)
def test_translate_maps_layer_errors(raised: Exception, public: type) -> None:
    with pytest.raises(public) as info, E.translate():
        raise raised
    assert info.value.__cause__ is raised
    assert str(raised) in str(info.value)


def test_translate_passes_public_and_foreign_errors_through() -> None:
    err = E.ConflictError(table="t", key=1)
    with pytest.raises(E.ConflictError) as info, E.translate():
        raise err
    assert info.value is err
    with pytest.raises(KeyError), E.translate():
        raise KeyError("not ours")


def test_validation_error_keeps_the_field() -> None:
    with pytest.raises(E.ValidationError) as info, E.translate():
        raise EncodeError("unsupported type set", field="a.b[2]")
    assert info.value.field == "a.b[2]"


@pytest.mark.parametrize("inside", [True, False], ids=["in-a-block", "one-operation"])
def test_a_point_read_raises_the_public_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool
) -> None:
    """`get` and `in` read directly inside a block (Table._read_pk), without
    the scope that translates errors elsewhere: a damaged page found there
    still leaves as mvcc.CorruptionError, naming the page."""
    with mvcc.open(tmp_path / "db") as db:
        table = db.table("t", primary_key="id")
        table.insert({"id": 1})
        db.checkpoint()

        def damaged(self: PageView, tid: int, key: bytes, snapshot: int) -> None:
            raise CorruptPage("checksum mismatch", pgno=7, file="pages")

        monkeypatch.setattr(PageView, "read", damaged)
        block = db.transaction(readonly=True) if inside else contextlib.nullcontext()
        with block:
            with pytest.raises(E.CorruptionError, match="page 7"):
                table.get(1)
            with pytest.raises(E.CorruptionError, match="page 7"):
                assert 1 in table
