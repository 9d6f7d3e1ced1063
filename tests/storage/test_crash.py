"""Simulated power cuts at every step of a commit (SQLite's test6.c, in small).

Each round starts from the disk image the previous round recovered, runs a few
writes on a device that crashes at a random operation, builds one possible disk
image (unsynced writes dropped, torn at 512-byte sectors, reordered), reopens
it, and checks: the content is the last committed state, or the state being
committed when the crash hit; and the checker is clean (nothing leaked, nothing
reachable twice, every page sound).
"""

from __future__ import annotations

import os
import random

import pytest

from storage.check import check_pagefile
from storage.crypto import PageCipher
from storage.pagefile import PageFile
from tests.support.crashdev import CrashDevice, SimulatedCrash, memory_device

from .conftest import TEST_DEK

CRASHES = int(os.environ.get("MVCC_CRASHES", "1200"))
TREES = [b"a", b"b", b"c"]


def _content(pf: PageFile) -> dict[bytes, dict[bytes, bytes]]:
    snap = pf.snapshot()
    return {name: dict(snap.tree(name).items()) for name in snap.names()}


def _random_write(rng: random.Random, pf: PageFile, model: dict) -> dict:
    """Apply random changes in one write; return the model it commits."""
    new = {name: dict(kv) for name, kv in model.items()}
    txn = pf.begin()
    try:
        for _ in range(rng.randint(1, 60)):
            name = rng.choice(TREES)
            tree = txn.tree(name, create=True)
            kv = new.setdefault(name, {})
            r = rng.random()
            if r < 0.35 and kv:
                key = rng.choice(sorted(kv))
                tree.delete(key)
                del kv[key]
            elif r < 0.38:
                txn.drop_tree(name)
                new.pop(name)
            elif r < 0.42:  # P7: move its pages (and runs) past a limit lower
                tree.relocate(rng.randrange(2, pf.meta.npages + 1))
            elif r < 0.43:
                txn.compact()
            else:
                key = b"%04d" % rng.randrange(500)
                value = rng.randbytes(rng.choice([10, 120, 900, 6000]))
                tree.put(key, value)
                kv[key] = value
    except BaseException:
        txn.abort()
        raise
    return new, txn


@pytest.mark.damaged  # the crashed devices are half-written; the recovered ones are checked here
@pytest.mark.parametrize("encrypted", [False, True], ids=["crc", "aes-gcm"])
def test_crash_at_every_step_recovers_a_committed_state(encrypted: bool) -> None:
    rng = random.Random(20261123 + encrypted)
    cipher = PageCipher(TEST_DEK) if encrypted else None
    image = b""
    model: dict = {}
    crashes = mid_commit = 0
    per_mode = CRASHES // 2
    while crashes < per_mode:
        dev = CrashDevice(image, crash_at=rng.randint(1, 80))
        committing: dict | None = None
        try:
            pf = PageFile(dev, cipher=cipher)
            if not image:
                image = bytes(dev.durable)  # creation itself may have crashed; then retry
            for _ in range(rng.randint(1, 6)):
                new, txn = _random_write(rng, pf, model)
                committing = new
                txn.commit()
                model, committing = new, None
            dev.crash_at = dev.ops + 1  # crash right after the last commit returned
            dev.write(0, b"")
        except SimulatedCrash:
            pass
        crashes += 1
        if not dev.durable:
            image, model = b"", {}
            continue
        recovered = PageFile(memory_device(dev.image(rng)), cipher=cipher)
        content = _content(recovered)
        content = {k: v for k, v in content.items() if v or k in model}
        want = {k: v for k, v in model.items() if v or k in content}
        if committing is not None and content != want:
            mid_commit += 1
            want = {k: v for k, v in committing.items() if v or k in content}
        assert content == want, f"crash {crashes}: recovered state is neither committed state"
        report = check_pagefile(recovered)
        assert report.ok, f"crash {crashes}: {report}"
        image, model = bytes(recovered.device.data), {k: v for k, v in content.items()}
    assert crashes >= per_mode
