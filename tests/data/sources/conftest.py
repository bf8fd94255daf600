"""Fixtures of the source tests: the local fixture web server."""
from __future__ import annotations

import pytest
from web_fixture_site import serving


@pytest.fixture
def site():
    """A fresh fixture server per test (so request counts start at zero)."""
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
def shared_site():
    """One server for the tests that only read the result of one crawl."""
    with serving() as server:
        yield server
