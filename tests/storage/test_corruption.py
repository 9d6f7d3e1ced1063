"""Damage is detected, named, and never decoded as data (P4)."""

from __future__ import annotations

import os
import random

import pytest

from storage.check import check_pagefile
from storage.crypto import PageCipher
from storage.device import MemoryDevice
from storage.errors import CorruptPage
from storage.pagefile import PageFile

from .conftest import TEST_DEK

# Every test here damages pages on purpose; each checks the damage is found.
pytestmark = pytest.mark.damaged

SECRET_KEY = b"SECRETKEY-%05d"
SECRET_VALUE = b"PLAINTEXT-VALUE-%05d-" + b"z" * 40


def _build(encrypted: bool) -> PageFile:
    pf = PageFile.memory(cipher=PageCipher(TEST_DEK) if encrypted else None)
    with pf.begin() as txn:
        tree = txn.tree(b"users", create=True)
        for i in range(300):
            tree.put(SECRET_KEY % i, SECRET_VALUE % i)
        tree.put(b"big", b"OVERFLOW-SECRET" * 1000)
        txn.tree(b"other", create=True).put(b"a", b"b")
    with pf.begin() as txn:  # some frees, so there is a freelist run
        tree = txn.tree(b"users")
        for i in range(0, 300, 7):
            tree.delete(SECRET_KEY % i)
    return pf


def _reachable_pages(pf: PageFile) -> list[int]:
    report = check_pagefile(pf)
    assert report.ok, str(report)
    free = {p for p, _g in pf.freelist(pf.meta).pages()}
    return [p for p in range(2, pf.meta.npages) if p not in free]


def _offsets(page_size: int) -> list[int]:
    # Every byte of the first 64 (seal, header, body start), then a stride.
    return list(range(64)) + list(range(64, page_size, 61)) + [page_size - 1]


@pytest.mark.parametrize("encrypted", [False, True], ids=["crc", "aes-gcm"])
def test_flipping_any_byte_of_any_page_is_detected(encrypted: bool) -> None:
    pf = _build(encrypted)
    image = bytes(pf.device.data)
    ps = pf.page_size
    pages = _reachable_pages(pf)
    assert len(pages) >= 10
    flips = 0
    for pgno in pages:
        for off in _offsets(ps):
            dev = MemoryDevice()
            dev.data = bytearray(image)
            dev.data[pgno * ps + off] ^= 1 << (off % 8)
            damaged = PageFile(dev, cipher=PageCipher(TEST_DEK) if encrypted else None)
            report = check_pagefile(damaged)
            assert not report.ok
            assert next(p.pgno for p in report.problems if p.pgno is not None) == pgno, str(report)
            flips += 1
    # The meta pages: the damaged slot is named, and open falls back to the other.
    for slot in (0, 1):
        for off in _offsets(ps):
            dev = MemoryDevice()
            dev.data = bytearray(image)
            dev.data[slot * ps + off] ^= 0x80
            damaged = PageFile(dev, cipher=PageCipher(TEST_DEK) if encrypted else None)
            with pytest.raises(CorruptPage) as err:
                damaged._parse_meta(slot)
            assert err.value.pgno == slot
            assert damaged.meta.slot == 1 - slot
            flips += 1
    assert flips > 1000


@pytest.mark.parametrize("encrypted", [False, True], ids=["crc", "aes-gcm"])
def test_reading_a_damaged_page_raises_naming_it(encrypted: bool) -> None:
    pf = _build(encrypted)
    tree = pf.snapshot().tree(b"users")
    pgno, _gen = tree.root
    pf.device.data[pgno * pf.page_size + 100] ^= 0xFF
    pf.clear_cache()
    with pytest.raises(CorruptPage) as err:
        tree.get(SECRET_KEY % 1)
    assert err.value.pgno == pgno
    assert f"page {pgno}" in str(err.value)
    # The other tree is untouched and still reads.
    assert pf.snapshot().tree(b"other").get(b"a") == b"b"


@pytest.mark.parametrize("encrypted", [False, True], ids=["crc", "aes-gcm"])
def test_page_moved_to_another_slot_is_detected(encrypted: bool) -> None:
    pf = _build(encrypted)
    ps = pf.page_size
    a, b = _reachable_pages(pf)[:2]
    data = pf.device.data
    data[b * ps : (b + 1) * ps] = data[a * ps : (a + 1) * ps]
    report = check_pagefile(pf)
    assert any(p.pgno == b for p in report.problems), str(report)


@pytest.mark.parametrize("encrypted", [False, True], ids=["crc", "aes-gcm"])
def test_stale_copy_of_a_page_is_detected(encrypted: bool) -> None:
    """An older, validly sealed version of a page put back at its slot."""
    rng = random.Random(7)
    pf = PageFile.memory(cipher=PageCipher(TEST_DEK) if encrypted else None)
    images = []
    for _round in range(12):
        with pf.begin() as txn:
            tree = txn.tree(b"t", create=True)
            for _ in range(40):
                tree.put(b"%04d" % rng.randrange(400), os.urandom(60))
        images.append(bytes(pf.device.data))
    ps = pf.page_size
    current = bytes(pf.device.data)
    candidates = [
        (pgno, old)
        for pgno in _reachable_pages(pf)
        for old in images[:-1]
        if len(old) >= (pgno + 1) * ps
        and old[pgno * ps : (pgno + 1) * ps] != current[pgno * ps : (pgno + 1) * ps]
    ]
    assert candidates
    for pgno, old in candidates[:25]:
        dev = MemoryDevice()
        dev.data = bytearray(current)
        dev.data[pgno * ps : (pgno + 1) * ps] = old[pgno * ps : (pgno + 1) * ps]
        report = check_pagefile(PageFile(dev, cipher=PageCipher(TEST_DEK) if encrypted else None))
        assert any(p.pgno == pgno for p in report.problems), str(report)


def test_no_plaintext_under_a_key() -> None:
    pf = _build(encrypted=True)
    image = bytes(pf.device.data)
    for i in range(300):
        assert SECRET_KEY % i not in image
    assert b"PLAINTEXT-VALUE" not in image
    assert b"OVERFLOW-SECRET" not in image
    assert b"users" not in image  # tree names are encrypted too
    plain = bytes(_build(encrypted=False).device.data)
    assert b"PLAINTEXT-VALUE" in plain  # the search itself works
