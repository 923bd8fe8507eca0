"""Fixtures for the end-to-end tests: a shared stub-app server for read-only checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import STUB, Server, serving


@pytest.fixture(scope="module")
def stub() -> Iterator[Server]:
    """A stub-app server with 2 processes of 4 threads, shared by a module's tests."""
    with serving(
        STUB,
        "--min-instances", "2",
        "--max-pool-size", "2",
        "--thread-count", "4",
        "--max-body-size", "64m",
        wait_ready=2,
    ) as server:  # fmt: skip
        yield server
