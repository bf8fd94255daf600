"""Allowed hosts and ports, and the public-address rule of the web source (no network)."""
from __future__ import annotations

import socket

import pytest
from requests.adapters import HTTPAdapter
from urllib3.util import connection

from multimodal_lab.data.sources.web import WebSourceConfig, make_session
from multimodal_lab.data.sources.web_guard import (
    AddressRefused,
    AllowedOrigins,
    GuardedAdapter,
    address_problem,
    host_address_refusal,
    parse_entry,
)

ADDRESSES = [
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("169.254.169.254", "link-local"),  # cloud metadata services live here
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "not globally routable"),  # shared address space (carrier-grade NAT)
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
    ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("93.184.216.34", ""),
    ("8.8.8.8", ""),
    ("::ffff:93.184.216.34", ""),
    ("2606:2800:220:1:248:1893:25c8:1946", ""),
]


@pytest.fixture
def no_dns(monkeypatch):
    """Fail the test if anything asks the resolver."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected getaddrinfo{args}")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize(("address", "problem"), ADDRESSES)
def test_address_classifier(address, problem):
    assert address_problem(address) == problem


@pytest.mark.parametrize(("address", "problem"), ADDRESSES)
def test_literal_hosts_are_judged_without_a_lookup(no_dns, address, problem):
    host = f"[{address}]" if ":" in address else address
    refusal = host_address_refusal(host, 80)
    assert (refusal is None) == (problem == "")
    if problem:
        assert problem in refusal and "allow_private_addresses" in refusal


def test_every_address_of_a_name_is_checked(fake_dns):
    fake_dns["public.test"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    fake_dns["mixed.test"] = ["93.184.216.34", "192.168.0.10"]  # one internal answer is enough
    fake_dns["mapped.test"] = ["::ffff:169.254.169.254"]
    assert host_address_refusal("public.test", 443) is None
    assert "mixed.test resolves to 192.168.0.10 (private)" in host_address_refusal("mixed.test", 443)
    assert "(link-local)" in host_address_refusal("mapped.test", 443)
    assert host_address_refusal("unknown.test", 443) is None  # left to the request, which reports it failed


def test_connection_guard_refuses_before_opening_a_socket(fake_dns, monkeypatch):
    fake_dns["intranet.test"] = ["93.184.216.34", "10.0.0.7"]

    def no_socket(*args, **kwargs):
        raise AssertionError("a socket was opened")
    monkeypatch.setattr(connection, "create_connection", no_socket)
    session = make_session(WebSourceConfig(start_urls=["http://intranet.test/"]))
    try:
        assert isinstance(session.get_adapter("https://intranet.test/"), GuardedAdapter)
        assert session.trust_env is False  # no proxies or .netrc from the environment
        for url in ("http://intranet.test/", "https://intranet.test/x.png", "http://[::1]:8000/"):
            with pytest.raises(AddressRefused):
                session.get(url, timeout=1)
        session.proxies = {"http": "http://203.0.113.5:3128"}
        with pytest.raises(AddressRefused, match="proxy"):
            session.get("http://public.test/", timeout=1)
    finally:
        session.close()


def test_allow_private_addresses_uses_a_plain_session():
    session = make_session(WebSourceConfig(start_urls=["http://127.0.0.1:8000/"], allow_private_addresses=True))
    try:
        adapter = session.get_adapter("http://127.0.0.1:8000/")
        assert type(adapter) is HTTPAdapter and session.trust_env is True
    finally:
        session.close()


def test_allowed_origins_match_host_and_port():
    origins = AllowedOrigins(["example.org", "images.example.org:8443", "[2001:db8::1]:8080"])
    allowed = ["http://example.org/", "https://example.org/a", "http://EXAMPLE.org:80/", "https://example.org:443/",
               "https://images.example.org:8443/x.png", "http://images.example.org:8443/",
               "http://[2001:db8::1]:8080/"]
    for url in allowed:
        assert origins.refusal(url) is None, url
    refused = {
        "http://example.org:8080/": "port",
        "http://example.org:443/": "port",  # a port-less entry allows the scheme's own default only
        "https://images.example.org/": "port",
        "http://[2001:db8::1]/": "port",
        "http://example.org:99999/": "port",
        "http://other.org/": "host",
        "http://sub.example.org/": "host",
    }
    for url, which in refused.items():
        assert origins.refusal(url)[0] == which, url


def test_allowed_host_entries_are_normalised_or_rejected():
    assert parse_entry("Example.ORG.") == ("example.org", None)
    assert parse_entry("images.example.org:8443") == ("images.example.org", 8443)
    assert parse_entry("[::1]:8000") == ("::1", 8000)
    assert parse_entry("0:0::1") == ("::1", None)
    for bad in ("https://example.org", "example.org/path", "user@example.org", "example.org:", "example.org:0",
                "example.org:http", "[::1", "[::1]x", ""):
        with pytest.raises(ValueError, match="allowed host entry"):
            parse_entry(bad)


def test_config_defaults_to_hosts_and_ports_of_start_urls():
    config = WebSourceConfig(start_urls=["http://127.0.0.1:8000/", "https://Example.org:443/a", "http://[::1]:81/"])
    assert config.allowed_hosts == ["127.0.0.1:8000", "[::1]:81", "example.org"]
    assert config.allowed_image_hosts == config.allowed_hosts
    assert config.allow_private_addresses is False
    assert AllowedOrigins(config.allowed_hosts).refusal("http://127.0.0.1:22/")[0] == "port"
    config = WebSourceConfig.from_dict({
        "start_urls": ["https://example.org/"],
        "allowed_hosts": ["Example.org", "example.org:8443"],
        "allowed_image_hosts": ["img.example.org:8443"],
        "allow_private_addresses": True,
    })
    assert config.allowed_hosts == ["example.org", "example.org:8443"]
    assert config.allowed_image_hosts == ["img.example.org:8443"] and config.allow_private_addresses
    with pytest.raises(ValueError, match="allowed_image_hosts.*without scheme"):
        WebSourceConfig(start_urls=["https://example.org/"], allowed_image_hosts=["https://img.example.org"])
    with pytest.raises(ValueError, match="start_urls"):
        WebSourceConfig(start_urls=["http://example.org:70000/"])
    config = WebSourceConfig(start_urls=["https://example.org/"], allowed_hosts="example.org:8443")
    assert config.allowed_hosts == config.allowed_image_hosts == ["example.org:8443"]  # one string is one entry
