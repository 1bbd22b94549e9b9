"""The one way tests wait for something another process or thread does."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """The first truthy value `predicate()` returns within `timeout` seconds; AssertionError naming `what` if none."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
