"""The article page in a real browser: `recommender serve` over the sample corpus, opened in
headless Chromium (Debian's chromium and chromium-driver) through Selenium, at a phone's and
a desktop's width. What a reader sees: the title, a See also box and a You may also like
list whose links open other article pages, no heading over an empty list, nothing wider
than the screen.

Without the browser this module skips, unless $RECOMMENDER_BROWSER_TESTS=require (CI), when
it fails. $RECOMMENDER_SCREENSHOTS=DIR writes the screenshots there from an index built with
the real model (the README's, in docs/screenshots); otherwise they go to a temporary
directory and the index uses the fake embedder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recommender import HashingEmbedder, Recommender, build_index, sample_corpus_path
from recommender.server import create_app

from .conftest import NOW, live_server

REQUIRE_ENV, SCREENSHOTS_ENV = "RECOMMENDER_BROWSER_TESTS", "RECOMMENDER_SCREENSHOTS"
WIDTHS = (375, 1280)
ARTICLE = "a001"  # the bridge collapse: its story has follow-ups, so both slots have links


def _browser() -> tuple[str, str]:
    """(chromium, chromedriver), or skip (fail when the browser is required)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    problem = None
    try:
        import selenium  # noqa: F401
    except ImportError:
        problem = "selenium is not installed (pip install -c constraints.txt -e '.[test]')"
    if chromium is None or driver is None:
        problem = "no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)"
    if problem is not None:
        if os.environ.get(REQUIRE_ENV) == "require":
            pytest.fail(f"{REQUIRE_ENV}=require but {problem}")
        pytest.skip(problem)
    assert chromium is not None and driver is not None
    return chromium, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Recommender]]:
    index = tmp_path_factory.mktemp("browser") / "index"
    real_model = bool(os.environ.get(SCREENSHOTS_ENV))
    build_index(index, [sample_corpus_path()],
                **({} if real_model else {"embedder": HashingEmbedder(256)}))
    rec = Recommender.open(index, now=NOW)
    with live_server(create_app(rec)) as url:
        yield url, rec


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()


def at_width(driver: Any, width: int) -> None:
    """The viewport of a phone (375 px, honouring the page's viewport meta) or a desktop."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 812 if width < 600 else 900, "deviceScaleFactor": 1,
        "mobile": width < 600})


# What the reader sees, read from the rendered page (not the HTML source).
READ_PAGE = """
const visible = e => { const r = e.getBoundingClientRect(), s = getComputedStyle(e);
  return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
const links = box => box ? [...box.querySelectorAll('li a')].filter(visible)
  .map(a => ({text: a.textContent.trim(), href: a.href})) : [];
const width = document.documentElement.clientWidth;
return {
  title: document.querySelector('h1') && document.querySelector('h1').textContent.trim(),
  headings: [...document.querySelectorAll('h2')].filter(visible).map(h => ({
    text: h.textContent.trim(),
    links: links(h.closest('aside, section'))})),
  seeAlso: links(document.querySelector('.see-also')),
  more: links(document.querySelector('.more')),
  viewport: width, scrollWidth: document.documentElement.scrollWidth,
  beyondRightEdge: [...document.querySelectorAll('body *')].filter(visible)
    .filter(e => e.getBoundingClientRect().right > width + 0.5)
    .map(e => e.tagName + ' ' + e.textContent.trim().slice(0, 40)),
  smallestText: Math.min(...[...document.querySelectorAll('p, li, h1, h2, time')]
    .filter(visible).map(e => parseFloat(getComputedStyle(e).fontSize))),
  smallestLink: Math.min(...[...document.querySelectorAll('a')].filter(visible)
    .map(e => parseFloat(getComputedStyle(e).fontSize))),
};
"""


def read_page(driver: Any) -> dict[str, Any]:
    page: dict[str, Any] = driver.execute_script(READ_PAGE)
    return page


def screenshot(driver: Any, path: Path) -> None:
    """The whole page, not only the first screen."""
    import base64

    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return document.documentElement.clientWidth")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.parametrize("width", WIDTHS)
def test_a_reader_sees_the_article_and_both_slots_and_can_navigate(
        site: tuple[str, Recommender], browser: Any, width: int,
        tmp_path: Path) -> None:
    url, rec = site
    at_width(browser, width)
    browser.get(f"{url}/articles/{ARTICLE}")
    page = read_page(browser)
    article = rec.article(ARTICLE)
    assert page["title"] == article.title and browser.title == article.title
    assert page["viewport"] == width

    expected = rec.page(ARTICLE)
    assert [link["text"] for link in page["seeAlso"]] == [r.title for r in expected["see_also"]]
    assert [link["text"] for link in page["more"]] == \
        [r.title for r in expected["you_may_also_like"]]
    assert page["seeAlso"] and len(page["more"]) >= 3
    for link in [*page["seeAlso"], *page["more"]]:
        assert link["href"].startswith(f"{url}/articles/"), link
    assert [h["text"].casefold() for h in page["headings"]] == ["see also", "you may also like"]
    assert all(h["links"] for h in page["headings"]), page["headings"]

    # Nothing wider than the screen, nothing too small to read.
    assert page["scrollWidth"] <= page["viewport"], page
    assert page["beyondRightEdge"] == []
    assert page["smallestText"] >= 12 and page["smallestLink"] >= 16, page

    out = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    screenshot(browser, out / f"article-{width}.png")
    assert (out / f"article-{width}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A click on a See also link opens that article's page, with its own slots; a click on
    # one of its You may also like links, the next.
    target = expected["see_also"][0]
    browser.find_element("link text", target.title).click()
    assert browser.current_url == f"{url}/articles/{target.id}"
    after = read_page(browser)
    assert after["title"] == target.title != page["title"]
    assert after["more"] and all(h["links"] for h in after["headings"])
    target = rec.page(target.id)["you_may_also_like"][0]
    browser.find_element("link text", target.title).click()
    assert browser.current_url == f"{url}/articles/{target.id}"
    assert read_page(browser)["title"] == target.title


def test_a_slot_with_no_links_shows_no_heading(site: tuple[str, Recommender],
                                               browser: Any) -> None:
    url, rec = site
    lonely = next(a.id for a in rec.articles()
                  if a.status == "published" and not rec.page(a.id)["see_also"])
    at_width(browser, 1280)
    browser.get(f"{url}/articles/{lonely}")
    page = read_page(browser)
    assert page["title"] == rec.article(lonely).title
    assert "see also" not in [h["text"].casefold() for h in page["headings"]]
    assert page["seeAlso"] == [] and all(h["links"] for h in page["headings"])


def test_an_unknown_article_is_a_page_that_says_so(site: tuple[str, Recommender],
                                                   browser: Any) -> None:
    url, _ = site
    browser.get(f"{url}/articles/no-such-article")
    assert read_page(browser)["title"] == "Not found"
