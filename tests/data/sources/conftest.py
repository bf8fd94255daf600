"""Fixtures of the source tests: the local fixture web servers and a fake resolver."""
from __future__ import annotations

import socket

import pytest
from web_fixture_site import serving


@pytest.fixture
def site():
    """A fresh fixture server per test (so request counts start at zero)."""
    with serving() as server:
        yield server


@pytest.fixture
def other_site():
    """A second fixture server, on another port of 127.0.0.1 (for the port checks)."""
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
def shared_site():
    """One server for the tests that only read the result of one crawl."""
    with serving() as server:
        yield server


@pytest.fixture
def fake_dns(monkeypatch):
    """``socket.getaddrinfo`` answered from a table, so no test sends a DNS query.

    Returns the table (host name -> list of addresses) for the test to fill. IP literals
    are answered as usual (``AI_NUMERICHOST``: no lookup); any other name fails to resolve.
    """
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
        if host in table:
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
                if ":" in address
                else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
                for address in table[host]
            ]
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table
