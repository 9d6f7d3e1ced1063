"""Storage fixtures: every page file a test makes is checked when the test ends."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storage.check import check_pagefile
from storage.crypto import PageCipher
from storage.pagefile import PageFile

TEST_DEK = bytes(range(32))


@pytest.fixture(params=["memory", "file"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_pagefile(tmp_path: Any, store_kind: str) -> Iterator[Callable[..., PageFile]]:
    """make_pagefile(encrypted=False, **kw) -> PageFile; checked at teardown (STYLE habit 9)."""
    made: list[PageFile] = []

    def make(*, encrypted: bool = False, **kwargs: Any) -> PageFile:
        if encrypted:
            kwargs["cipher"] = PageCipher(TEST_DEK)
        if store_kind == "memory":
            pf = PageFile.memory(**kwargs)
        else:
            pf = PageFile.open(os.path.join(tmp_path, f"pages{len(made)}"), **kwargs)
        made.append(pf)
        return pf

    yield make
    for pf in made:
        if pf.device.size():
            report = check_pagefile(pf)
            assert report.ok, str(report)
        pf.close()
