"""Waiting on other processes in tests: for a message on a pipe, or for a
condition another process makes true, always with a deadline that fails the
test naming what did not happen (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["recv", "until"]


def until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll `condition` until it is truthy; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.005)


def recv(conn: Connection, seconds: float = 60) -> Any:
    """The next message, or a failure if none comes in time (a child died)."""
    if not conn.poll(seconds):
        raise AssertionError(f"no message from the child process in {seconds} s")
    return conn.recv()
