"""Storage fixtures.

Every PageFile a storage test opens is checked by storage/check.py when the
test ends (STYLE habit 9, bbolt's Tx.Check), unless the test is marked
`damaged` because it corrupts pages on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storage.check import check_pagefile
from storage.crypto import PageCipher
from storage.pagefile import PageFile

TEST_DEK = bytes(range(32))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "damaged: the test corrupts pages; skip the teardown check")


@pytest.fixture(autouse=True)
def check_every_pagefile(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    opened: list[PageFile] = []
    real_init = PageFile.__init__

    def tracking_init(self: PageFile, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(PageFile, "__init__", tracking_init)
    yield
    monkeypatch.undo()
    if request.node.get_closest_marker("damaged"):
        return
    for pf in opened:
        if pf._failed is None and getattr(pf.device, "_fd", 0) >= 0 and pf.device.size():
            report = check_pagefile(pf)
            assert report.ok, str(report)


@pytest.fixture(params=["memory", "file"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_pagefile(tmp_path: Any, store_kind: str) -> Iterator[Callable[..., PageFile]]:
    """make_pagefile(encrypted=False, **kw) -> PageFile on memory or on a file."""
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
        pf.close()
