"""Page -> images, text, author and licence, on small HTML strings."""
from __future__ import annotations

import unicodedata

import pytest

from multimodal_lab.data.sources.html_extract import clean_text, extract_page

URL = "https://example.org/gallery/page.html"


def page(head: str = "", body: str = "") -> str:
    return f"<html><head>{head}</head><body>{body}</body></html>"


@pytest.mark.parametrize(
    ("html", "licence", "source"),
    [
        (page(body='<a rel="license" href="/terms/cc-by">terms</a>'), "https://example.org/terms/cc-by",
         "rel-license"),
        (page(head='<link rel="license" href="https://creativecommons.org/licenses/by-sa/4.0/">'),
         "https://creativecommons.org/licenses/by-sa/4.0/", "rel-license"),
        (page(body='<a rel="nofollow license">CC0 1.0</a>'), "CC0 1.0", "rel-license"),
        (page(head='<script type="application/ld+json">'
                   '{"license": "https://creativecommons.org/publicdomain/zero/1.0/"}</script>'),
         "https://creativecommons.org/publicdomain/zero/1.0/", "json-ld"),
        (page(head='<script type="application/ld+json">{"@graph": [{"@type": "WebPage"},'
                   ' {"@type": "ImageObject", "license": {"@id": "https://example.org/licence"}}]}</script>'),
         "https://example.org/licence", "json-ld"),
        (page(head='<meta name="License" content="CC BY-NC 4.0">'), "CC BY-NC 4.0", "meta:license"),
        (page(head='<meta name="DCTERMS.license" content="CC-BY-4.0">'), "CC-BY-4.0", "meta:dcterms.license"),
        (page(head='<meta name="dc.rights" content="  All   rights reserved ">'), "All rights reserved",
         "meta:dc.rights"),
        (page(body='<p>Photo: <a href="http://creativecommons.org/licenses/by-nc-nd/3.0/">some rights</a></p>'),
         "http://creativecommons.org/licenses/by-nc-nd/3.0/", "cc-link"),
        (page(body="<p>No terms here. <a href='https://example.org/about'>about</a></p>"), None, None),
        (page(head='<script type="application/ld+json">{not json</script>'), None, None),
    ],
)
def test_licence_is_found_raw_or_none(html, licence, source):
    content = extract_page(html, URL)
    assert (content.license, content.license_source) == (licence, source)


def test_licence_priority_rel_license_beats_meta_and_cc_links():
    html = page(
        head='<meta name="license" content="All rights reserved">',
        body='<a href="https://creativecommons.org/licenses/by/4.0/">x</a>'
             '<a rel="license" href="https://creativecommons.org/licenses/by-sa/4.0/">y</a>',
    )
    assert extract_page(html, URL).license == "https://creativecommons.org/licenses/by-sa/4.0/"


@pytest.mark.parametrize(
    ("html", "author", "source"),
    [
        (page(head='<meta name="author" content="Ada  Painter">'), "Ada Painter", "meta:author"),
        (page(head='<script type="application/ld+json">{"author": [{"name": "A"}, {"name": "B"}]}</script>'),
         "A, B", "json-ld"),
        (page(head='<script type="application/ld+json">{"creator": "Studio C"}</script>'), "Studio C", "json-ld"),
        (page(body='<a rel="author" href="/u/d">Dee Writer</a>'), "Dee Writer", "rel-author"),
        (page(body='<span class="post-byline">By: Eve Shooter</span>'), "Eve Shooter", "byline"),
        (page(body="<p>anonymous</p>"), None, None),
    ],
)
def test_author_sources(html, author, source):
    content = extract_page(html, URL)
    assert (content.author, content.author_source) == (author, source)


def test_text_drops_furniture_collapses_whitespace_and_is_nfc():
    decomposed = "Cafe\u0301"  # 'e' + combining acute accent
    html = page(
        head="<title> The  title </title><style>p {}</style>",
        body=f"<nav>Menu</nav><header>Top</header><script>var x = 1;</script>"
             f"<p>{decomposed}   at\n\n night.</p><p>Second   line.</p><footer>Footer</footer>"
             f"<aside>Ads</aside><form><button>Go</button></form>",
    )
    content = extract_page(html, URL)
    assert content.text == unicodedata.normalize("NFC", "Café at night. Second line.")
    assert content.title == "The title"


def test_text_prefers_article_over_body():
    html = page(body="<div>Sidebar words</div><article><p>The story itself.</p></article>")
    assert extract_page(html, URL).text == "The story itself."


def test_images_resolved_deduplicated_limited_with_figure_context():
    html = page(
        head='<meta property="og:image" content="https://cdn.example.org/og.jpg">',
        body='<figure><img src="a.png" alt=" An  apple "><figcaption>An apple on a table</figcaption>'
             '<a rel="license" href="https://creativecommons.org/licenses/by/4.0/">CC BY</a></figure>'
             '<img src="/img/b.png#frag"><img src="a.png"><img src="data:image/png;base64,AAAA">'
             '<img src="  "><img src="../c.png">',
    )
    content = extract_page(html, URL)
    urls = [image.url for image in content.images]
    assert urls == ["https://example.org/gallery/a.png", "https://example.org/img/b.png",
                    "https://example.org/c.png", "https://cdn.example.org/og.jpg"]
    first = content.images[0]
    assert (first.alt, first.caption) == ("An apple", "An apple on a table")
    assert first.license == "https://creativecommons.org/licenses/by/4.0/"
    assert content.images[1].license is None and content.images[-1].origin == "og:image"
    assert [i.url for i in extract_page(html, URL, max_images=2).images] == urls[:2]


def test_base_href_is_honoured_and_links_are_unique_without_nofollow():
    html = page(
        head='<base href="https://example.org/other/">',
        body='<img src="x.png"><a href="p.html#a">1</a><a href="p.html#b">2</a>'
             '<a rel="nofollow" href="q.html">3</a><a href="mailto:a@b.c">4</a><a href="http://[broken/">5</a>',
    )
    content = extract_page(html, URL)
    assert content.images[0].url == "https://example.org/other/x.png"
    assert content.links == ["https://example.org/other/p.html", "mailto:a@b.c"]


def test_bytes_with_meta_charset_are_decoded():
    html = '<html><head><meta charset="iso-8859-1"></head><body><p>Gar\xe7on</p></body></html>'
    assert extract_page(html.encode("iso-8859-1"), URL).text == "Garçon"


def test_clean_text():
    assert clean_text(None) == "" and clean_text("  a \t\n b ") == "a b"
