"""Fixtures shared by the test packages: spawned processes with cleanup."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

import pytest

SPAWN = multiprocessing.get_context("spawn")
JOIN_TIMEOUT = 30.0


@pytest.fixture
def procs() -> Iterator[Callable[..., Any]]:
    """start(target, *args) -> a started spawn Process, killed at teardown if alive."""
    started: list[Any] = []

    def start(target: Callable[..., Any], *args: Any) -> Any:
        p = SPAWN.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(JOIN_TIMEOUT)
