"""Saved HTML pages in: the fixture pages of five themes, with and without class/id attributes
(tests/fixtures/html), must give the article's own text and metadata, and nothing of the site
around it may reach what is embedded."""

from __future__ import annotations

import importlib.util
import json
import sys
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lxml import html as lxml_html

from recommender import HashingEmbedder, InputError, Recommender, build_index, read_articles
from recommender.articles import format_datetime
from recommender.cli import main
from recommender.html_pages import clean_page, is_boilerplate_text, read_page
from recommender.text import embed_text_for

FIXTURES = Path(__file__).parent / "fixtures" / "html"
CLEAN = {r["id"]: r for r in (json.loads(line) for line in
                              (FIXTURES / "articles.jsonl").read_text().splitlines())}


def _make_pages() -> Any:
    spec = importlib.util.spec_from_file_location("make_pages", FIXTURES / "make_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE_PAGES = _make_pages()
BOILERPLATE = MAKE_PAGES.render_all(MAKE_PAGES.load_corpus())[1]
THEMES = list(BOILERPLATE)
FOLDERS = [f"{theme}{variant}" for theme in THEMES for variant in ("", "-bare")]
# How each theme's URL is built from the article's slug (the id is the URL's path).
URLS = {
    "seed": "https://kelsportcourier.example/{date:%Y/%m/%d}/{slug}/",
    "twentyfour": "https://kelsportnotes.example/{slug}/",
    "newsroom": "https://valderadaily.example/news/{section}/{slug}",
    "minimal": None,  # a "?p=N" link: the id is the file name
    "magazine": "https://coastlinemag.example/{section}/{slug}/",
}


def slug_of(article_id: str) -> str:
    return article_id.rsplit("/", 1)[-1]


def page_html(body: str, head: str = "", lang: str = "en") -> bytes:
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">{head}</head>'
            f"<body>{body}</body></html>").encode()


LONG_PARAGRAPH = ("The harbour authority said on Monday that the new breakwater would be "
                  "finished by the spring, two years later than planned, after storms in "
                  "the winter washed away much of the stone that had been laid. Engineers "
                  "now expect the work to cost a fifth more than the original budget.")


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture pages, written by make_pages.py (they are derived, not committed)."""
    return MAKE_PAGES.write_pages(tmp_path_factory.mktemp("html-pages"))  # type: ignore[no-any-return]


def test_the_fixtures_test_something(pages: Path) -> None:
    """The boilerplate strings are on every page (in its text, or an attribute such as a
    button's value), and never in the clean text: finding one in what is read means it came
    from the page, not from the article."""
    for theme, strings in BOILERPLATE.items():
        for article_id, article in CLEAN.items():
            raw = (pages / f"{theme}-bare" / f"{article_id}.html").read_text()
            page = " ".join(lxml_html.document_fromstring(raw).text_content().split()) + \
                " ".join(unescape(raw).split())
            clean = f"{article['title']} {article['body']}".casefold()
            for string in strings["every_page"] + strings["pages"][article_id]:
                assert string.casefold() not in clean, (theme, article_id, string)
                assert string in page, (theme, article_id, string)
    assert sum(len(a["body"].split("\n\n")) == 1 for a in CLEAN.values()) >= 5  # one paragraph
    assert sum(len(a["body"].split("\n\n")) >= 4 for a in CLEAN.values()) >= 5  # many


@pytest.fixture(scope="module")
def read_folders(pages: Path) -> dict[str, list[Any]]:
    out = {}
    for folder in FOLDERS:
        report = read_articles(pages / folder, format="html")
        assert not report.problems, report.problems
        out[folder] = report.articles
    return out


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_boilerplate_reaches_the_embedded_text(folder: str,
                                                  read_folders: dict[str, list[Any]]) -> None:
    theme = folder.removesuffix("-bare")
    articles = read_folders[folder]
    assert len(articles) == len(CLEAN)
    for article in articles:
        slug = slug_of(article.id)
        text = embed_text_for(article).casefold()
        strings = BOILERPLATE[theme]["every_page"] + BOILERPLATE[theme]["pages"][slug]
        found = [s for s in strings if s.casefold() in text]
        assert not found, f"{folder}/{slug}.html: {found}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_pages_give_the_clean_title_and_body(folder: str,
                                             read_folders: dict[str, list[Any]]) -> None:
    for article in read_folders[folder]:
        clean = CLEAN[slug_of(article.id)]
        assert article.title == clean["title"]
        assert article.body == clean["body"], f"{folder}: {article.id}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_pages_give_their_metadata(folder: str, read_folders: dict[str, list[Any]]) -> None:
    theme = folder.removesuffix("-bare")
    for article in read_folders[folder]:
        clean = CLEAN[slug_of(article.id)]
        assert article.language == "en"  # en-US, en-GB, en: the primary subtag
        if theme == "minimal":
            # No machine-readable date: the visible "Posted on ..." (via trafilatura), a date.
            assert format_datetime(article.published_at) == \
                clean["published_at"][:10] + "T00:00:00Z"
            assert article.id == clean["id"]  # the canonical link is "?p=N": the file name
            assert article.url is not None and article.url.startswith(
                "https://fieldnotes.example/?p=")
        else:
            assert format_datetime(article.published_at) == clean["published_at"]
            expected = URLS[theme]
            assert expected is not None
            url = expected.format(date=article.published_at, slug=clean["id"],
                                  section=clean["section"].lower())
            assert article.url == url
            assert article.id == url.split("://", 1)[1].split("/", 1)[1].strip("/")
        if theme in ("seed", "newsroom", "magazine"):
            assert article.section == clean["section"]
        if theme in ("newsroom", "twentyfour", "magazine"):
            assert list(article.tags) == clean["tags"]


@pytest.mark.parametrize(("head", "h1", "expected"), [
    ('<meta property="og:title" content="Rates rise again | Valdera Daily">', "Rates rise again",
     "Rates rise again"),
    ("<title>Rates rise again – The Courier</title>"
     '<meta property="og:site_name" content="The Courier">', "", "Rates rise again"),
    ("<title>Rates rise again – The Courier</title>", "Rates rise again", "Rates rise again"),
    # A dash inside a headline is not a site suffix.
    ("<title>Ferry strike – what commuters need to know</title>", "", "Ferry strike – what "
     "commuters need to know"),
    ("", "Only a headline", "Only a headline"),
])
def test_title_without_the_site_suffix(head: str, h1: str, expected: str) -> None:
    body = (f"<h1>{h1}</h1>" if h1 else "") + f"<p>{LONG_PARAGRAPH}</p>"
    assert read_page(page_html(body, head), "x")["title"] == expected


def test_date_from_json_ld_and_from_the_headlines_time() -> None:
    ld = ('<script type="application/ld+json">{"@context": "https://schema.org", "@graph": '
          '[{"@type": "NewsArticle", "datePublished": "2025-02-01T10:00:00+01:00"}]}</script>')
    assert read_page(page_html(f"<p>{LONG_PARAGRAPH}</p>", ld), "x")["published_at"] == \
        "2025-02-01T10:00:00+01:00"
    # A comment's <time> before the article's (in document order) is not the article's date.
    body = ('<div><p>Earlier: <time datetime="2020-01-01">1 Jan 2020</time></p></div>'
            '<div><h1>Breakwater late</h1><p><time datetime="2025-03-04T08:00:00Z">4 March'
            f"</time></p><p>{LONG_PARAGRAPH}</p></div>")
    assert read_page(page_html(body), "x")["published_at"] == "2025-03-04T08:00:00Z"


def test_language_and_id_rules() -> None:
    head = '<link rel="canonical" href="https://site.example/news/2025/breakwater/index.html">'
    record = read_page(page_html(f"<p>{LONG_PARAGRAPH}</p>", head, lang="es-ES"), "file")
    assert record["language"] == "es" and record["id"] == "news/2025/breakwater"
    record = read_page(page_html(f"<p>{LONG_PARAGRAPH}</p>", "", lang=""), "saved/page")
    assert "language" not in record and record["id"] == "saved/page" and "url" not in record
    og = '<meta property="og:url" content="https://site.example/a/b/">'
    assert read_page(page_html(f"<p>{LONG_PARAGRAPH}</p>", og), "f")["id"] == "a/b"


def test_cleaning_works_on_class_less_markup() -> None:
    """The shapes of the seed page's furniture, written without any class or id."""
    body = f"""
    <div><span><a href="/">Home</a></span> » <span>Breakwater late</span></div>
    <h1>Breakwater late</h1><div><span>by </span><a href="/author/admin/">admin</a></div>
    <div><p>{LONG_PARAGRAPH}</p><p><strong>See also</strong> <a href="#">Ferry fares
    frozen for a year</a></p></div>
    <div><h4><span>You may also like</span></h4><div><h3><a href="#">Bitterns breed at the
    marsh...</a></h3><h3><a href="#">Rovers name academy coach...</a></h3></div></div>
    <div><div><h3>Leave a Comment</h3><form><textarea></textarea><p><input type="checkbox">
    <label>Save my name, email, and website in this browser for the next time I comment.
    </label></p></form><p>This site uses Akismet to reduce spam. <a href="#">Learn how your
    comment data is processed</a>.</p></div></div>
    <div><span>This website uses cookies to improve your experience. We'll assume you're ok
    with this, but you can opt-out if you wish. <a>Accept</a> <a>Read More</a></span></div>
    """
    record = read_page(page_html(body), "x")
    assert record["body"] == LONG_PARAGRAPH.strip()
    cleaned = clean_page(lxml_html.document_fromstring(page_html(body)))
    text = cleaned.text_content()
    for gone in ("Home", "admin", "See also", "You may also like", "Leave a Comment",
                 "Akismet", "cookies", "Accept", "Bitterns"):
        assert gone not in text, gone


@pytest.mark.parametrize(("text", "boilerplate"), [
    ("by admin", True),
    ("Posted on March 3, 2025 by admin", True),
    ("This site uses Akismet to reduce spam. Learn how your comment data is processed.", True),
    ("We and our partners store and access information on your device, such as cookies.", True),
    ("3 responses to “Harbour bridge”", True),
    ("By Tuesday the water had gone.", False),  # a sentence, not a byline
    ("Related talks will resume next week, the union said.", False),
    (LONG_PARAGRAPH, False),
])
def test_boilerplate_text_patterns(text: str, boilerplate: bool) -> None:
    assert is_boilerplate_text(text) is boilerplate


def test_a_page_without_main_text_is_a_per_record_error(tmp_path: Path, pages: Path) -> None:
    (tmp_path / "tag-page.html").write_bytes(page_html(
        '<nav><a href="/">Home</a> <a href="/news/">News</a></nav>'
        '<ul><li><a href="/a">One headline here</a></li><li><a href="/b">Another one</a></li>'
        "</ul><footer>Copyright</footer>"))
    (tmp_path / "empty.html").write_bytes(b"")
    good = pages / "minimal" / "ferry-fares-frozen.html"
    report = read_articles([tmp_path / "tag-page.html", tmp_path / "empty.html", good])
    assert [a.id for a in report.articles] == ["ferry-fares-frozen"]
    reasons = {Path(p.source).name: p.reason for p in report.errors}
    assert reasons == {"tag-page.html": "no main text found in the page (is it an article "
                                        "page?)",
                       "empty.html": "not an HTML page (nothing could be parsed)"}
    assert str(report.errors[0]).startswith(f"{tmp_path / 'tag-page.html'}: error: no main")


def test_folders_need_a_format_and_globs_are_read(tmp_path: Path, pages: Path) -> None:
    with pytest.raises(InputError, match=r"it is a folder; say which files to read in it "
                                         r"with --format jsonl\|csv\|html"):
        read_articles(pages / "seed")
    with pytest.raises(InputError, match="no jsonl file in it"):
        read_articles(pages / "seed", format="jsonl")
    report = read_articles(str(pages / "minimal" / "ferry-*.html"))
    assert sorted(a.id for a in report.articles) == [
        "ferry-crews-walk-out", "ferry-dispute-settled", "ferry-fares-frozen"]
    with pytest.raises(InputError, match="no file matches"):
        read_articles(str(tmp_path / "*.html"))
    # Nested folders (a wget mirror): the id of a page without canonical link is its path.
    nested = tmp_path / "site" / "2025" / "breakwater"
    nested.mkdir(parents=True)
    (nested / "index.html").write_bytes(page_html(f"<p>{LONG_PARAGRAPH}</p>",
                                                  "<title>Breakwater late</title>"))
    [article] = read_articles(tmp_path / "site", format="html").articles
    assert article.id == "2025/breakwater/index" and article.title == "Breakwater late"


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, pages: Path) -> None:
    monkeypatch.delitem(sys.modules, "recommender.html_pages")
    monkeypatch.setitem(sys.modules, "trafilatura", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"needs trafilatura: pip install "
                                         r"'recommender\[html\]'"):
        read_articles(pages / "minimal" / "ferry-fares-frozen.html")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_builds_a_folder_of_pages_end_to_end(tmp_path: Path, pages: Path) -> None:
    index = str(tmp_path / "pages-index")
    code, out, err = run("build", str(pages / "seed-bare"), "--format", "html",
                         "--index", index, "--model", "hashing:64")
    assert code == 0 and err == "" and "25 articles (25 published)" in out
    code, out, _ = run("related", "2025/03/03/ferry-crews-walk-out", "--index", index,
                       "--slot", "you_may_also_like", "--json")
    assert code == 0
    links = json.loads(out)
    assert links and all(link["url"].startswith("https://kelsportcourier.example/")
                         for link in links)
    # A page with no article in it costs that page, with its reason, and exit code 3.
    bad = tmp_path / "more"
    bad.mkdir()
    (bad / "category-page.html").write_bytes(page_html('<nav><a href="/">Home</a></nav>'))
    code, out, err = run("update", str(bad), "--format", "html", "--index", index)
    assert code == 3
    assert err.strip() == (f"{bad / 'category-page.html'}: error: no main text found in the "
                           "page (is it an article page?)")


def test_pages_give_the_same_slots_as_their_clean_json(tmp_path: Path, pages: Path) -> None:
    """The newsroom theme declares everything the JSON has (section, tags, date): built from
    its pages without attributes, every page's slots are those of the clean JSON."""
    embedder = HashingEmbedder(64)
    build_index(tmp_path / "clean", [FIXTURES / "articles.jsonl"], embedder=embedder)
    read = read_articles(pages / "newsroom-bare", format="html")
    build_index(tmp_path / "pages", read, embedder=embedder, strict=True)
    clean, from_html = Recommender.open(tmp_path / "clean"), Recommender.open(tmp_path / "pages")
    for article in read.articles:
        slug = slug_of(article.id)
        from_pages = {slot: [slug_of(r.id) for r in links]
                      for slot, links in from_html.page(article.id).items()}
        from_clean = {slot: [r.id for r in links] for slot, links in clean.page(slug).items()}
        assert from_pages == from_clean, slug
