"""Tests of storage/crypto.py: the page cipher (I1, I2) and the key file (I3, I4, I5)."""

from __future__ import annotations

import os
import pickle
import struct
import unicodedata
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import crypto
from storage.crypto import (
    KEYFILE,
    NONCE_SIZE,
    OVERHEAD,
    TAG_SIZE,
    PageCipher,
    create_key_file,
    key_id,
    load_key_file,
    read_key_file_info,
    rewrap_key_file,
)
from storage.errors import CorruptPage, FormatError, InvalidKeyError

FAST = 10  # scrypt_log2n for tests: ~2 ms per derivation instead of ~100 ms
PASS = "correct horse battery staple"
RAW = bytes(range(32))


@pytest.fixture
def keypath(tmp_path: Path) -> str:
    return str(tmp_path / "key")


def _reseal_crc(data: bytes) -> bytes:
    """Return `data` with its trailing CRC recomputed, as a deliberate editor would."""
    body = data[:-4]
    return body + struct.pack(">I", zlib.crc32(body))


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return _reseal_crc(data[:offset] + new + data[offset + len(new) :])


# --- PageCipher ------------------------------------------------------------------------------


def test_constants() -> None:
    assert (NONCE_SIZE, TAG_SIZE, OVERHEAD) == (12, 16, 28)
    assert KEYFILE.size == 104


def test_seal_open_round_trip() -> None:
    c = PageCipher(os.urandom(32))
    page = os.urandom(4096)
    sealed = c.seal(b"page 3", page)
    assert len(sealed) == len(page) + OVERHEAD
    assert c.open(b"page 3", sealed) == page
    assert c.open(b"", c.seal(b"", b"")) == b""


@settings(max_examples=50, deadline=None)
@given(aad=st.binary(max_size=64), data=st.binary(max_size=2048))
def test_round_trip_property(aad: bytes, data: bytes) -> None:
    c = PageCipher(RAW)
    assert c.open(aad, c.seal(aad, data)) == data


def test_open_rejects_wrong_aad() -> None:
    # (I2) a page moved to another pgno does not open there
    c = PageCipher(RAW)
    sealed = c.seal(b"pgno=1", b"payload")
    assert c.open(b"pgno=2", sealed) is None
    assert c.open(b"", sealed) is None


def test_open_rejects_every_single_byte_flip() -> None:
    c = PageCipher(RAW)
    sealed = c.seal(b"aad", b"a small page body")
    for i in range(len(sealed)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(sealed)
            bad[i] ^= mask
            assert c.open(b"aad", bytes(bad)) is None, (i, mask)


def test_open_rejects_truncation_and_extension() -> None:
    c = PageCipher(RAW)
    sealed = c.seal(b"aad", b"0123456789")
    for n in range(len(sealed)):
        assert c.open(b"aad", sealed[:n]) is None, n
    assert c.open(b"aad", sealed + b"\0") is None


def test_open_rejects_other_key() -> None:
    sealed = PageCipher(RAW).seal(b"aad", b"secret page")
    assert PageCipher(os.urandom(32)).open(b"aad", sealed) is None


@settings(max_examples=100, deadline=None)
@given(aad=st.binary(max_size=16), blob=st.binary(max_size=200))
def test_open_never_raises(aad: bytes, blob: bytes) -> None:
    assert PageCipher(RAW).open(aad, blob) is None


def test_nonces_differ() -> None:
    # (I1) the same page sealed twice gives different nonces and ciphertexts
    c = PageCipher(RAW)
    seals = [c.seal(b"aad", b"same data") for _ in range(200)]
    assert len({s[:NONCE_SIZE] for s in seals}) == len(seals)
    assert len(set(seals)) == len(seals)


def test_ciphertext_hides_plaintext() -> None:
    page = b"PLAINTEXT-MARKER" * 256
    sealed = PageCipher(RAW).seal(b"aad", page)
    assert b"PLAINTEXT-MARKER" not in sealed


def test_key_id() -> None:
    import hashlib

    dek = os.urandom(32)
    c = PageCipher(dek)
    assert c.key_id == hashlib.sha256(b"mvcc-dek-id\0" + dek).digest()[:8] == key_id(dek)
    assert PageCipher(os.urandom(32)).key_id != c.key_id


def test_cipher_hides_key() -> None:
    # (I5) neither repr nor pickle exposes the DEK
    dek = os.urandom(32)
    c = PageCipher(dek)
    assert dek.hex() not in repr(c) and repr(dek) not in repr(c)
    assert c.key_id.hex() in repr(c)
    with pytest.raises(TypeError):
        pickle.dumps(c)


@pytest.mark.parametrize("bad", [b"", b"x" * 16, b"x" * 31, b"x" * 33, b"x" * 64])
def test_cipher_bad_key_length(bad: bytes) -> None:
    with pytest.raises(InvalidKeyError, match=f"got {len(bad)}"):
        PageCipher(bad)


def test_cipher_key_not_bytes() -> None:
    with pytest.raises(InvalidKeyError, match="not str"):
        PageCipher("k" * 32)  # type: ignore[arg-type]


# --- key file: create / load -----------------------------------------------------------------


def test_create_load_passphrase(keypath: str) -> None:
    dek = create_key_file(keypath, passphrase=PASS, scrypt_log2n=FAST)
    assert len(dek) == 32
    assert load_key_file(keypath, passphrase=PASS) == dek
    assert load_key_file(keypath, passphrase=PASS.encode()) == dek  # same UTF-8 bytes
    info = read_key_file_info(keypath)
    assert (info.kdf, info.log2n, info.r, info.p) == (crypto.KDF_SCRYPT, FAST, 8, 1)
    assert info.key_id == key_id(dek)
    assert os.path.getsize(keypath) == 104
    assert os.listdir(os.path.dirname(keypath)) == ["key"]  # no .tmp left behind


def test_create_load_raw_key(keypath: str) -> None:
    dek = create_key_file(keypath, key=RAW)
    assert load_key_file(keypath, key=RAW) == dek
    assert load_key_file(keypath, key=bytearray(RAW)) == dek
    info = read_key_file_info(keypath)
    assert (info.kdf, info.log2n, info.r, info.p, info.salt) == (crypto.KDF_RAW, 0, 0, 0, bytes(16))


def test_each_create_makes_a_new_dek(tmp_path: Path) -> None:
    a = create_key_file(str(tmp_path / "a"), passphrase=PASS, scrypt_log2n=FAST)
    b = create_key_file(str(tmp_path / "b"), passphrase=PASS, scrypt_log2n=FAST)
    assert a != b
    assert (
        read_key_file_info(str(tmp_path / "a")).salt != read_key_file_info(str(tmp_path / "b")).salt
    )


def test_default_cost(keypath: str) -> None:
    # The one test at the default n = 2**15 (~100 ms per derivation).
    dek = create_key_file(keypath, passphrase=PASS)
    assert read_key_file_info(keypath).log2n == crypto.DEFAULT_SCRYPT_LOG2N == 15
    assert load_key_file(keypath, passphrase=PASS) == dek


def test_create_refuses_to_overwrite(keypath: str) -> None:
    dek = create_key_file(keypath, key=RAW)
    with pytest.raises(FileExistsError):
        create_key_file(keypath, key=os.urandom(32))
    assert load_key_file(keypath, key=RAW) == dek


def test_key_file_mode(keypath: str) -> None:
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    create_key_file(keypath, key=RAW)
    assert os.stat(keypath).st_mode & 0o777 == 0o600


def test_wrong_passphrase(keypath: str) -> None:
    create_key_file(keypath, passphrase=PASS, scrypt_log2n=FAST)
    for wrong in ("Correct horse battery staple", PASS + " ", "x"):
        with pytest.raises(InvalidKeyError, match="wrong passphrase or key") as ei:
            load_key_file(keypath, passphrase=wrong)
        assert ei.value.file == keypath
        assert wrong not in str(ei.value)


def test_wrong_key(keypath: str) -> None:
    create_key_file(keypath, key=RAW)
    with pytest.raises(InvalidKeyError, match="wrong passphrase or key"):
        load_key_file(keypath, key=os.urandom(32))


def test_key_given_for_passphrase_file(keypath: str) -> None:
    create_key_file(keypath, passphrase=PASS, scrypt_log2n=FAST)
    with pytest.raises(
        InvalidKeyError, match=r"created with a passphrase: pass passphrase=, not key="
    ):
        load_key_file(keypath, key=RAW)


def test_passphrase_given_for_key_file(keypath: str) -> None:
    create_key_file(keypath, key=RAW)
    with pytest.raises(InvalidKeyError, match=r"created with a key: pass key=, not passphrase="):
        load_key_file(keypath, passphrase=PASS)


def test_missing_secret(keypath: str) -> None:
    create_key_file(keypath, key=RAW)
    with pytest.raises(
        InvalidKeyError, match=r"this database is encrypted: pass passphrase= or key="
    ):
        load_key_file(keypath)
    with pytest.raises(InvalidKeyError, match="only one"):
        load_key_file(keypath, passphrase=PASS, key=RAW)


def test_create_needs_exactly_one_secret(keypath: str) -> None:
    with pytest.raises(InvalidKeyError, match="exactly one"):
        create_key_file(keypath)
    with pytest.raises(InvalidKeyError, match="only one"):
        create_key_file(keypath, passphrase=PASS, key=RAW)
    assert not os.path.exists(keypath)


@pytest.mark.parametrize("n", [0, 1, 16, 31, 33, 64])
def test_bad_key_length(keypath: str, n: int) -> None:
    with pytest.raises(InvalidKeyError, match=f"key must be 32 bytes, got {n}"):
        create_key_file(keypath, key=b"k" * n)
    create_key_file(keypath, key=RAW)
    with pytest.raises(InvalidKeyError, match=f"got {n}"):
        load_key_file(keypath, key=b"k" * n)


@pytest.mark.parametrize("bad", ["", b"", 123, ["pw"]])
def test_bad_passphrase(keypath: str, bad: object) -> None:
    with pytest.raises(InvalidKeyError, match="passphrase"):
        create_key_file(keypath, passphrase=bad, scrypt_log2n=FAST)  # type: ignore[arg-type]


def test_key_as_str_rejected(keypath: str) -> None:
    with pytest.raises(InvalidKeyError, match="not str"):
        create_key_file(keypath, key="k" * 32)  # type: ignore[arg-type]


@pytest.mark.parametrize("log2n", [9, 23, -1, 15.0, True, "15"])
def test_scrypt_cost_range(keypath: str, log2n: object) -> None:
    with pytest.raises(FormatError, match="scrypt_log2n"):
        create_key_file(keypath, passphrase=PASS, scrypt_log2n=log2n)  # type: ignore[arg-type]
    assert not os.path.exists(keypath)


def test_unicode_nfc_nfd_equivalent(keypath: str) -> None:
    nfc = unicodedata.normalize("NFC", "Ångström café ñ 한국어")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    dek = create_key_file(keypath, passphrase=nfd, scrypt_log2n=FAST)
    assert load_key_file(keypath, passphrase=nfc) == dek
    assert load_key_file(keypath, passphrase=nfd) == dek
    assert load_key_file(keypath, passphrase=nfc.encode()) == dek  # bytes: the NFC UTF-8
    with pytest.raises(InvalidKeyError, match="wrong"):
        load_key_file(keypath, passphrase=nfd.encode())  # bytes are not normalised


def test_lone_surrogate_passphrase(keypath: str) -> None:
    with pytest.raises(InvalidKeyError, match="not valid Unicode"):
        create_key_file(keypath, passphrase="pw\udcff", scrypt_log2n=FAST)


def test_missing_file(keypath: str) -> None:
    with pytest.raises(FileNotFoundError):
        load_key_file(keypath, key=RAW)


# --- key file: damage vs wrong secret vs unknown format (I3) ---------------------------------


@pytest.mark.parametrize("kind", ["passphrase", "key"])
def test_every_byte_flip_is_corrupt_page(keypath: str, kind: str) -> None:
    # Every single-byte change is caught by the CRC32 (it detects any burst of <= 32
    # bits), so a flip anywhere, in the CRC region too, is damage: CorruptPage, never
    # InvalidKeyError (I3), never another exception, never a DEK.
    secret = {"passphrase": PASS} if kind == "passphrase" else {"key": RAW}
    create_key_file(keypath, scrypt_log2n=FAST, **secret)  # type: ignore[arg-type]
    good = Path(keypath).read_bytes()
    for i in range(len(good)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(good)
            bad[i] ^= mask
            Path(keypath).write_bytes(bytes(bad))
            with pytest.raises(CorruptPage) as ei:
                load_key_file(keypath, **secret)  # type: ignore[arg-type]
            assert ei.value.file == keypath and ei.value.pgno is None, (i, mask)


def test_truncated_or_extended_is_corrupt(keypath: str) -> None:
    create_key_file(keypath, key=RAW)
    good = Path(keypath).read_bytes()
    for n in range(len(good)):
        Path(keypath).write_bytes(good[:n])
        with pytest.raises(CorruptPage):
            load_key_file(keypath, key=RAW)
    Path(keypath).write_bytes(good + b"\0")
    with pytest.raises(CorruptPage, match="105 bytes"):
        load_key_file(keypath, key=RAW)
    Path(keypath).write_bytes(b"")
    with pytest.raises(CorruptPage, match="truncated"):
        load_key_file(keypath, key=RAW)


def test_bad_magic_is_corrupt(keypath: str) -> None:
    create_key_file(keypath, key=RAW)
    Path(keypath).write_bytes(_patch(Path(keypath).read_bytes(), 0, b"NOTAKEY\0"))
    with pytest.raises(CorruptPage, match="magic"):
        load_key_file(keypath, key=RAW)


def test_huge_file_is_corrupt(keypath: str) -> None:
    Path(keypath).write_bytes(b"MVCCKEY\0" + bytes(1 << 17))
    with pytest.raises(CorruptPage, match="over"):
        load_key_file(keypath, key=RAW)


def test_unknown_version_is_format_error(keypath: str) -> None:
    create_key_file(keypath, key=RAW)
    good = Path(keypath).read_bytes()
    Path(keypath).write_bytes(_patch(good, 8, struct.pack(">H", 2)))
    with pytest.raises(FormatError, match="version 2"):
        load_key_file(keypath, key=RAW)
    # A newer version may have another length: still FormatError, not "corrupt".
    Path(keypath).write_bytes(_reseal_crc(good[:8] + struct.pack(">H", 2) + bytes(200) + b"crc!"))
    with pytest.raises(FormatError, match="version 2"):
        load_key_file(keypath, key=RAW)


@pytest.mark.parametrize("kdf", [0, 3, 255])
def test_unknown_kdf_is_format_error(keypath: str, kdf: int) -> None:
    create_key_file(keypath, key=RAW)
    Path(keypath).write_bytes(_patch(Path(keypath).read_bytes(), 10, bytes([kdf])))
    with pytest.raises(FormatError, match=f"kdf id {kdf}"):
        load_key_file(keypath, key=RAW)


@pytest.mark.parametrize("log2n", [9, 23, 40])
def test_stored_scrypt_cost_out_of_range(keypath: str, log2n: int) -> None:
    create_key_file(keypath, passphrase=PASS, scrypt_log2n=FAST)
    Path(keypath).write_bytes(_patch(Path(keypath).read_bytes(), 11, bytes([log2n])))
    with pytest.raises(FormatError, match="scrypt cost"):
        load_key_file(keypath, passphrase=PASS)


def test_tampered_wrap_with_fixed_crc_is_wrong_secret(keypath: str) -> None:
    # The CRC is not a MAC: an editor who fixes it is indistinguishable from a wrong
    # secret, but the authenticated wrap still never yields a wrong DEK.
    create_key_file(keypath, passphrase=PASS, scrypt_log2n=FAST)
    good = Path(keypath).read_bytes()
    for offset in (16, 32, 44, 91):  # salt, nonce, wrapped DEK, tag
        Path(keypath).write_bytes(_patch(good, offset, bytes([good[offset] ^ 1])))
        with pytest.raises(InvalidKeyError, match="wrong passphrase or key"):
            load_key_file(keypath, passphrase=PASS)


def test_tampered_key_id_with_fixed_crc(keypath: str) -> None:
    create_key_file(keypath, key=RAW)
    Path(keypath).write_bytes(_patch(Path(keypath).read_bytes(), 92, bytes(8)))
    with pytest.raises(CorruptPage, match="key id"):
        load_key_file(keypath, key=RAW)


# --- rewrap (I4) -----------------------------------------------------------------------------


def test_rewrap(keypath: str) -> None:
    dek = create_key_file(keypath, passphrase=PASS, scrypt_log2n=FAST)
    salt0 = read_key_file_info(keypath).salt
    rewrap_key_file(keypath, dek, passphrase="new passphrase", scrypt_log2n=FAST)
    assert load_key_file(keypath, passphrase="new passphrase") == dek
    with pytest.raises(InvalidKeyError, match="wrong"):
        load_key_file(keypath, passphrase=PASS)
    assert read_key_file_info(keypath).salt != salt0  # fresh salt
    assert os.listdir(os.path.dirname(keypath)) == ["key"]


def test_rewrap_same_passphrase_changes_salt(keypath: str) -> None:
    dek = create_key_file(keypath, passphrase=PASS, scrypt_log2n=FAST)
    before = Path(keypath).read_bytes()
    rewrap_key_file(keypath, dek, passphrase=PASS, scrypt_log2n=FAST)
    after = Path(keypath).read_bytes()
    assert before[16:92] != after[16:92] and before[92:100] == after[92:100]
    assert load_key_file(keypath, passphrase=PASS) == dek


def test_rewrap_passphrase_to_key_and_back(keypath: str) -> None:
    dek = create_key_file(keypath, passphrase=PASS, scrypt_log2n=FAST)
    rewrap_key_file(keypath, dek, key=RAW)
    assert load_key_file(keypath, key=RAW) == dek
    with pytest.raises(InvalidKeyError, match="pass key="):
        load_key_file(keypath, passphrase=PASS)
    rewrap_key_file(keypath, dek, passphrase="back", scrypt_log2n=FAST)
    assert load_key_file(keypath, passphrase="back") == dek


def test_rewrap_refuses_foreign_dek(keypath: str) -> None:
    dek = create_key_file(keypath, key=RAW)
    with pytest.raises(InvalidKeyError, match="does not belong"):
        rewrap_key_file(keypath, os.urandom(32), key=os.urandom(32))
    assert load_key_file(keypath, key=RAW) == dek


def test_rewrap_keeps_mode(keypath: str) -> None:
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    dek = create_key_file(keypath, key=RAW)
    os.chmod(keypath, 0o640)
    rewrap_key_file(keypath, dek, key=os.urandom(32))
    assert os.stat(keypath).st_mode & 0o777 == 0o640


def _works(path: str, **secret: object) -> bool:
    try:
        load_key_file(path, **secret)  # type: ignore[arg-type]
    except InvalidKeyError:
        return False
    return True


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", ["write", "fsync", "replace", "fsync_dir"])
def test_crash_during_rewrap_leaves_exactly_one_secret(
    keypath: str, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    # (I4) stop the rewrap at each step; the key file opens with exactly one secret.
    dek = create_key_file(keypath, passphrase="old", scrypt_log2n=FAST)

    def crash(*args: object, **kwargs: object) -> None:
        raise _Crash(crash_at)

    if crash_at == "write":
        real_fdopen = os.fdopen

        class _TornFile:
            def __init__(self, fd: int, mode: str) -> None:
                self._f = real_fdopen(fd, mode)

            def __enter__(self) -> _TornFile:
                return self

            def __exit__(self, *exc: object) -> None:
                self._f.close()

            def write(self, data: bytes) -> None:
                self._f.write(data[:50])  # a torn write of the new file
                raise _Crash("write")

        monkeypatch.setattr(crypto.os, "fdopen", _TornFile)
    elif crash_at == "fsync":
        monkeypatch.setattr(crypto.os, "fsync", crash)
    elif crash_at == "replace":
        monkeypatch.setattr(crypto.os, "replace", crash)
    else:
        monkeypatch.setattr(crypto, "_fsync_dir", crash)
    with pytest.raises(_Crash):
        rewrap_key_file(keypath, dek, passphrase="new", scrypt_log2n=FAST)
    monkeypatch.undo()

    old, new = _works(keypath, passphrase="old"), _works(keypath, passphrase="new")
    assert old != new
    assert new == (crash_at == "fsync_dir")  # only a crash after the rename sees the new one
    assert os.path.exists(keypath + ".tmp") == (crash_at != "fsync_dir")
    assert load_key_file(keypath, passphrase="new" if new else "old") == dek

    # Recovery needs nothing: the next rewrap overwrites the stale .tmp.
    rewrap_key_file(keypath, dek, passphrase="third", scrypt_log2n=FAST)
    assert _works(keypath, passphrase="third") and not _works(keypath, passphrase="old")
    assert not os.path.exists(keypath + ".tmp")


def test_stale_tmp_is_ignored_by_load(keypath: str) -> None:
    dek = create_key_file(keypath, passphrase="old", scrypt_log2n=FAST)
    other = str(Path(keypath).parent / "other")
    create_key_file(other, passphrase="new", scrypt_log2n=FAST)
    os.replace(other, keypath + ".tmp")  # a complete .tmp that was never renamed
    assert load_key_file(keypath, passphrase="old") == dek
    assert not _works(keypath, passphrase="new")


# --- nothing secret on disk or in messages (I5) ----------------------------------------------


def test_no_secret_in_plaintext(tmp_path: Path) -> None:
    passphrase = "unmistakable-passphrase-" + os.urandom(8).hex()
    path = str(tmp_path / "key")
    dek = create_key_file(path, passphrase=passphrase, scrypt_log2n=FAST)
    info = read_key_file_info(path)
    data = Path(path).read_bytes()
    assert dek not in data
    assert passphrase.encode() not in data
    kek = crypto._derive_kek(info.kdf, passphrase.encode(), info.salt, info.log2n, info.r, info.p)
    assert kek not in data
    assert data.count(info.salt) == 1 and data.index(info.salt) == 16  # salt only at its place

    raw = os.urandom(32)
    rewrap_key_file(path, dek, key=raw)
    data = Path(path).read_bytes()
    assert raw not in data and dek not in data
    for name in os.listdir(tmp_path):  # nothing else in the directory holds them either
        blob = (tmp_path / name).read_bytes()
        assert dek not in blob and raw not in blob and passphrase.encode() not in blob


def test_no_secret_in_errors(keypath: str) -> None:
    dek = create_key_file(keypath, key=RAW)
    errors: list[Exception] = []
    for call in (
        lambda: load_key_file(keypath, key=os.urandom(32)),
        lambda: load_key_file(keypath, passphrase="hunter2-secret"),
        lambda: rewrap_key_file(keypath, os.urandom(32), key=RAW),
        lambda: create_key_file(keypath + "2", key=RAW[:31]),
        lambda: create_key_file(keypath + "2", passphrase="", key=None),
    ):
        with pytest.raises(InvalidKeyError) as ei:
            call()
        errors.append(ei.value)
    for err in errors:
        text = str(err) + repr(err) + repr(err.__dict__)
        for secret in (dek, RAW, RAW[:31]):
            assert secret.hex() not in text and repr(secret) not in text
        assert "hunter2" not in text
        # no InvalidTag (whose traceback frames hold the key) is chained for display
        assert err.__cause__ is None
        assert err.__context__ is None or err.__suppress_context__
        clone = pickle.loads(pickle.dumps(err))
        assert str(clone) == str(err)
