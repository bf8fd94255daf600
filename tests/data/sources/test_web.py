"""The web source against a real local HTTP server: every way a URL can end."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from web_fixture_site import IMAGES, TEST_MAX_BYTES

from multimodal_lab.data.records import RECORD_COLUMNS
from multimodal_lab.data.sources.web import (
    OUTCOME_COLUMNS,
    REASONS,
    ResponseCache,
    WebSourceConfig,
    make_session,
    scrape,
)
from multimodal_lab.data.sources.web_fetch import Fetcher
from multimodal_lab.data.sources.web_guard import AddressRefused


def config_for(site, tmp_path, **overrides) -> WebSourceConfig:
    params = dict(
        start_urls=[site.url("/index.html")],
        max_pages=50,
        max_bytes=TEST_MAX_BYTES,
        rate_limit_per_host=0.0,
        connect_timeout=2.0,
        read_timeout=0.4,
        max_retries=2,
        backoff_factor=0.0,
        cache_path=str(tmp_path / "cache.sqlite"),
        caption_max_words=30,
        progress=False,
        allow_private_addresses=True,  # the fixture server listens on 127.0.0.1
    )
    params.update(overrides)
    return WebSourceConfig(**params)


def outcome_of(outcomes: pd.DataFrame, site, path: str) -> pd.Series:
    """The outcome of the attempt at ``path`` (re-encounters as already_visited left out)."""
    rows = outcomes[(outcomes["url"] == site.url(path)) & (outcomes["reason"] != "already_visited")]
    assert len(rows) == 1, f"expected one outcome for {path}, got {len(rows)}:\n{rows}"
    return rows.iloc[0]


@pytest.fixture(scope="module")
def crawl(shared_site, tmp_path_factory):
    """One full crawl of the fixture site, shared by the tests that only read it."""
    config = config_for(shared_site, tmp_path_factory.mktemp("crawl"))
    records, outcomes = scrape(config)
    return shared_site, config, records, outcomes


def test_every_case_ends_with_its_reason(crawl):
    site, _config, _records, outcomes = crawl
    assert list(outcomes.columns) == OUTCOME_COLUMNS
    assert set(outcomes["reason"]) <= set(REASONS)
    expected = {
        "/index.html": ("ok", ""),
        "/open.html": ("ok", ""),
        "/nonopen.html": ("ok", ""),
        "/nolicence.html": ("ok", ""),
        "/redirect-ok": ("ok", ""),
        "/loop-a.html": ("ok", ""),
        "/loop-b.html": ("ok", ""),
        "/flaky429.html": ("ok", ""),
        "/flaky500.html": ("ok", ""),
        "/private/secret.html": ("refused", "robots_disallowed"),
        "/redirect-away": ("refused", "off_host_redirect"),
        "/redirect-ftp": ("refused", "bad_scheme"),
        "/slow.html": ("failed", "timeout"),
        "/slow-body.html": ("failed", "timeout"),
        "/always503.html": ("failed", "gave_up"),
        "/missing.html": ("refused", "http_error"),
        "/img/red.png": ("ok", ""),
        "/img/green.png": ("ok", ""),
        "/img/blue.png": ("ok", ""),
        "/img/yellow.png": ("ok", ""),
        "/img/broken.png": ("refused", "undecodable_image"),
        "/img/huge.png": ("refused", "oversized"),
        "/img/huge-stream.png": ("refused", "oversized"),
        "/img/page-not-image.png": ("refused", "wrong_content_type"),
    }
    for path, (status, reason) in expected.items():
        row = outcome_of(outcomes, site, path)
        assert (row["status"], row["reason"]) == (status, reason), f"{path}: {row.to_dict()}"
    # the two oversize checks: one by header before reading, one by counting streamed bytes
    assert "Content-Length" in outcome_of(outcomes, site, "/img/huge.png")["detail"]
    assert "streamed" in outcome_of(outcomes, site, "/img/huge-stream.png")["detail"]
    assert outcome_of(outcomes, site, "/redirect-ok")["final_url"] == site.url("/moved-target.html")
    assert outcome_of(outcomes, site, "/missing.html")["http_status"] == 404
    # links that were never fetched still have a reason
    by_url = outcomes.set_index("url")
    assert by_url.loc["mailto:someone@example.org", "reason"] == "bad_scheme"
    assert by_url.loc["http://example.org/elsewhere", "reason"] == "off_host_link"
    assert by_url.loc["http://example.org/remote.png", "reason"] == "off_host_link"


def test_loop_ends_as_already_visited(crawl):
    site, _config, _records, outcomes = crawl
    loop_rows = outcomes[outcomes["url"] == site.url("/loop-a.html")]
    assert sorted(loop_rows["reason"]) == ["", "already_visited"]
    assert loop_rows[loop_rows["reason"] == "already_visited"]["referrer"].item() == site.url("/loop-b.html")
    assert site.counts["/loop-a.html"] == 1 and site.counts["/loop-b.html"] == 1


def test_server_side_requests(crawl):
    site, config, _records, _outcomes = crawl
    counts = site.counts
    assert counts["/robots.txt"] == 1  # robots fetched once, through the crawler's client
    assert counts["/private/secret.html"] == 0  # disallowed: never requested
    assert counts["/offhost-target.html"] == 0  # the off-host redirect target is never fetched
    assert counts["/flaky429.html"] == 2 and counts["/flaky500.html"] == 2  # one retry each, then success
    assert counts["/always503.html"] == config.max_retries + 1
    assert counts["/slow.html"] == 1  # timeouts are not retried
    assert site.user_agents == {config.user_agent}
    # Retry-After: 1 was honoured between the 429 and the retry
    times = [t for path, t in site.times if path == "/flaky429.html"]
    assert times[1] - times[0] >= 0.9


def test_records_carry_raw_licence_author_and_texts(crawl):
    site, _config, records, _outcomes = crawl
    assert list(records.columns) == list(RECORD_COLUMNS)
    assert (records["source"] == "web").all() and (records["corpus"] == "web").all()
    # one record per (page, image) pair: red.png is shown on two pages, fetched once
    pairs = sorted(zip(records["url"].str.removeprefix(site.base),
                       records["metadata"].map(lambda m: json.loads(m)["page_url"].removeprefix(site.base))))
    assert pairs == [("/img/blue.png", "/nonopen.html"), ("/img/green.png", "/open.html"),
                     ("/img/red.png", "/nolicence.html"), ("/img/red.png", "/open.html"),
                     ("/img/yellow.png", "/nolicence.html")]
    assert site.counts["/img/red.png"] == 1
    by_url = records[records["metadata"].str.contains('/open.html"', regex=False)].set_index("url")
    red = by_url.loc[site.url("/img/red.png")]
    assert red["image"] == IMAGES["/img/red.png"]
    assert red["license"] == "https://creativecommons.org/licenses/by/4.0/"
    assert red["attribution"] == "Ada Painter"
    assert red["caption"] == "A red square on a white wall"  # the figcaption
    assert pd.isna(red["story"])  # the article text is short: no story
    meta = json.loads(red["metadata"])
    assert meta["page_url"] == site.url("/open.html") and meta["license_source"] == "rel-license"
    green = by_url.loc[site.url("/img/green.png")]  # og:image, no alt: the short page text is the caption
    assert "A red square hangs alone on a white wall." in green["caption"]
    assert "not prose" not in green["caption"] and "Site header" not in green["caption"]
    by_url = records.drop_duplicates("url", keep=False).set_index("url")
    blue = by_url.loc[site.url("/img/blue.png")]
    assert blue["license"] == "All rights reserved" and blue["attribution"] == "Bea Maker"
    yellow = by_url.loc[site.url("/img/yellow.png")]
    assert pd.isna(yellow["license"])  # absent: never guessed
    assert yellow["attribution"] == "Cy Drawer"
    assert pd.isna(yellow["caption"]) and yellow["story"].startswith("A yellow square.")


def test_rerun_with_same_cache_sends_no_request(crawl, tmp_path):
    site, config, records, outcomes = crawl
    before = site.total
    again_records, again_outcomes = scrape(config)
    assert site.total == before
    assert list(again_records["record_id"]) == list(records["record_id"])
    merged = again_outcomes[["url", "status", "reason"]].reset_index(drop=True)
    assert merged.equals(outcomes[["url", "status", "reason"]].reset_index(drop=True))
    fetched = again_outcomes[again_outcomes["status"].isin(["ok", "failed"])]
    assert fetched["from_cache"].all()
    cache = ResponseCache(config.cache_path)
    try:
        assert len(cache) >= 20  # every response was written, not only the kept ones
    finally:
        cache.close()


def test_retry_failed_asks_only_the_failed_urls_again(site, tmp_path):
    config = config_for(site, tmp_path)
    scrape(config)
    before = dict(site.counts)
    config.retry_failed = True
    scrape(config)
    grown = {path for path, n in site.counts.items() if n != before.get(path, 0)}
    assert grown == {"/slow.html", "/slow-body.html", "/always503.html"}


def test_no_cache_still_fetches_each_url_once(site, tmp_path):
    starts = [site.url("/open.html"), site.url("/nolicence.html"), site.url("/open.html#again")]
    records, outcomes = scrape(config_for(site, tmp_path, start_urls=starts, cache_path=None))
    assert len(records) == 4  # red, green | yellow, red
    assert site.counts["/img/red.png"] == 1 and site.counts["/open.html"] == 1
    assert not outcomes["from_cache"].any()
    assert not (tmp_path / "cache.sqlite").exists()


def test_max_pages_and_depth_stop_the_crawl(site, tmp_path):
    _, outcomes = scrape(config_for(site, tmp_path, max_pages=2, cache_path=None))
    assert (outcomes[(outcomes["kind"] == "page")]["status"] == "ok").sum() == 2
    assert (outcomes["reason"] == "max_pages").sum() > 5
    site.counts.clear()
    _, outcomes = scrape(config_for(site, tmp_path, max_depth=0, cache_path=None))
    assert outcomes[outcomes["status"] == "ok"]["url"].tolist()[0] == site.url("/index.html")
    assert outcome_of(outcomes, site, "/open.html")["reason"] == "max_depth"
    assert site.counts["/open.html"] == 0


def test_rate_limit_spaces_requests_to_one_host(site, tmp_path):
    config = config_for(site, tmp_path, start_urls=[site.url("/loop-a.html")], rate_limit_per_host=0.25,
                        cache_path=None)
    scrape(config)
    times = [t for _path, t in site.times]
    assert len(times) == 3  # robots.txt, loop-a, loop-b
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.2


def test_robots_unreachable_disallows_the_host_and_missing_robots_allows_all(site, tmp_path):
    start = [site.url("/private/secret.html")]
    site.robots_status = 503
    _, outcomes = scrape(config_for(site, tmp_path, start_urls=start, cache_path=None))
    assert outcomes["reason"].tolist() == ["robots_disallowed"]
    assert "unreachable" in outcomes["detail"].item()
    assert site.counts["/robots.txt"] == 3 and site.counts["/private/secret.html"] == 0  # 1 try + 2 retries
    site.robots_status = 404
    _, outcomes = scrape(config_for(site, tmp_path, start_urls=start, cache_path=None))
    assert outcomes["status"].tolist() == ["ok"] and site.counts["/private/secret.html"] == 1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="start_urls"):
        WebSourceConfig(start_urls=[])
    with pytest.raises(ValueError, match="ftp://x"):
        WebSourceConfig(start_urls=["ftp://x/"])
    with pytest.raises(ValueError, match="max_bytes"):
        WebSourceConfig(start_urls=["http://a/"], max_bytes=0)
    with pytest.raises(ValueError, match="max_page"):
        WebSourceConfig.from_dict({"start_urls": ["http://a/"], "max_page": 3})
    config = WebSourceConfig(start_urls=["http://Example.org/a", "https://example.org/b"])
    assert config.allowed_hosts == ["example.org"] and config.allowed_image_hosts == ["example.org"]


# --- where the crawler may go: ports and addresses --------------------------------------
def test_default_config_refuses_private_hosts_before_any_request(site, tmp_path, fake_dns):
    fake_dns["intranet.test"] = ["10.0.0.7"]
    starts = [site.url("/index.html"), f"http://intranet.test:{site.port}/index.html"]
    # the defaults, not config_for (which allows the fixture server's loopback address)
    config = WebSourceConfig(start_urls=starts, rate_limit_per_host=0.0, cache_path=str(tmp_path / "c.sqlite"),
                             progress=False)
    records, outcomes = scrape(config)
    assert records.empty
    assert outcomes[["status", "reason"]].values.tolist() == [["refused", "private_address"]] * 2
    loopback, intranet = outcomes["detail"]
    assert "127.0.0.1 is a loopback address" in loopback and "allow_private_addresses" in loopback
    assert "resolves to 10.0.0.7 (private)" in intranet
    assert site.total == 0  # not even robots.txt was asked for


def test_connection_time_check_catches_an_answer_that_changed(site, tmp_path, fake_dns, monkeypatch):
    # DNS rebinding: the name looked public when checked before the hop, but resolves
    # to loopback when the connection is opened. The adapter checks the address it
    # connects to, so nothing reaches the server.
    fake_dns["rebind.test"] = ["127.0.0.1"]
    monkeypatch.setattr(Fetcher, "address_refusal", lambda self, url: None)
    config = config_for(site, tmp_path, start_urls=[f"http://rebind.test:{site.port}/index.html"],
                        allow_private_addresses=False)
    _, outcomes = scrape(config)
    row = outcomes.iloc[0]
    assert (row["status"], row["reason"]) == ("refused", "robots_disallowed")  # its robots.txt was refused
    assert "resolves to 127.0.0.1 (loopback)" in row["detail"]
    assert site.total == 0
    cache = ResponseCache(config.cache_path)
    try:
        assert len(cache) == 0  # a policy refusal is not cached: other settings decide afresh
    finally:
        cache.close()
    session = make_session(config)
    with pytest.raises(AddressRefused, match="loopback"):
        session.get(site.url("/index.html"))
    session.close()
    assert site.total == 0


def test_redirect_to_another_port_is_refused_unless_that_port_is_allowed(site, other_site, tmp_path):
    site.redirects["/to-other-port"] = other_site.url("/open.html")
    config = config_for(site, tmp_path, start_urls=[site.url("/to-other-port")], cache_path=None)
    assert config.allowed_hosts == [f"127.0.0.1:{site.port}"]  # default: host AND port of the start URL
    _, outcomes = scrape(config)
    row = outcomes.iloc[0]
    assert (row["status"], row["reason"]) == ("refused", "off_port_redirect")
    assert f"port {other_site.port}" in row["detail"]
    assert site.counts["/to-other-port"] == 1 and other_site.total == 0

    both = [f"127.0.0.1:{site.port}", f"127.0.0.1:{other_site.port}"]
    _, outcomes = scrape(config_for(site, tmp_path, start_urls=[site.url("/to-other-port")], cache_path=None,
                                    allowed_hosts=both, max_pages=1))
    assert outcomes.iloc[0]["status"] == "ok" and outcomes.iloc[0]["final_url"] == other_site.url("/open.html")
    assert other_site.counts["/robots.txt"] == 1 and other_site.counts["/open.html"] == 1


def test_start_url_on_a_port_not_allowed_is_skipped(site, other_site, tmp_path):
    starts = [site.url("/loop-a.html"), other_site.url("/loop-a.html")]
    config = config_for(site, tmp_path, start_urls=starts, allowed_hosts=[f"127.0.0.1:{site.port}"],
                        cache_path=None)
    _, outcomes = scrape(config)
    row = outcomes[outcomes["url"] == other_site.url("/loop-a.html")].iloc[0]
    assert (row["status"], row["reason"]) == ("skipped", "off_port_link")
    assert site.counts["/loop-a.html"] == 1 and other_site.total == 0


@pytest.mark.parametrize("where", ["port", "host"])
def test_robots_redirect_off_the_allowed_origins_is_not_followed(site, other_site, tmp_path, where):
    # An off-origin robots.txt redirect is not followed, and the robots.txt then counts as
    # unreachable: the whole host is treated as disallowed (as for a 5xx robots.txt).
    host = "127.0.0.1" if where == "port" else "localhost"
    site.redirects["/robots.txt"] = f"http://{host}:{other_site.port}/robots.txt"
    config = config_for(site, tmp_path, start_urls=[site.url("/open.html")], cache_path=None)
    _, outcomes = scrape(config)
    row = outcomes.iloc[0]
    assert (row["status"], row["reason"]) == ("refused", "robots_disallowed")
    assert "unreachable" in row["detail"] and "not followed" in row["detail"]
    assert ("not an allowed host" if where == "host" else f"port {other_site.port}") in row["detail"]
    assert site.counts["/robots.txt"] == 1 and site.counts["/open.html"] == 0
    assert other_site.total == 0


def test_robots_redirect_to_an_allowed_origin_is_followed(site, other_site, tmp_path):
    site.redirects["/robots.txt"] = other_site.url("/robots.txt")
    both = [f"127.0.0.1:{site.port}", f"127.0.0.1:{other_site.port}"]
    config = config_for(site, tmp_path, start_urls=[site.url("/private/secret.html"), site.url("/loop-a.html")],
                        allowed_hosts=both, cache_path=None)
    _, outcomes = scrape(config)
    assert outcome_of(outcomes, site, "/private/secret.html")["reason"] == "robots_disallowed"  # by other's file
    assert outcome_of(outcomes, site, "/loop-a.html")["status"] == "ok"
    assert other_site.counts["/robots.txt"] == 1 and site.counts["/private/secret.html"] == 0
