"""Template integrations: the Jinja2 globals, the Django tag library and `recommender render`,
with the fake embedder. A slot never raises into a page: failures render empty, logged once."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jinja2 import Environment
from markupsafe import escape

from recommender import HashingEmbedder, Recommender, build_index
from recommender.cli.render_commands import render
from recommender.integrations import jinja
from recommender.integrations.safe import SafeRecommender, reason_text

from .conftest import NOW, TINY

LIST = "{% for a in items %}{{ a.id }}|{{ a.title }};{% endfor %}"
SPECIAL_TITLE = "Portmere bridge collapse: divers find <cause> & more"
# The real clock: keep the tiny 2026 articles young enough for you_may_also_like, whatever
# today is (render and the Django tags open the index without a fixed `now`).
AGELESS = "[slots.you_may_also_like]\nmax_age_days = 100000\nhalf_life_days = 100000\n"


def records_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "recommender"]


@pytest.fixture
def special_index(tmp_path: Path, tiny_records: list[dict[str, Any]]) -> Path:
    """The tiny corpus with markup in a title that the pages must escape."""
    tiny_records[1]["title"] = SPECIAL_TITLE
    source = tmp_path / "special.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in tiny_records))
    index = tmp_path / "special-index"
    build_index(index, [source], embedder=HashingEmbedder(64))
    (index / "recommender.toml").write_text(AGELESS)
    return index


# ---------------------------------------------------------------------- optional extras


def test_importing_recommender_imports_no_template_framework() -> None:
    code = ("import sys, recommender, recommender.cli, recommender.integrations.safe; "
            "print(sorted(m for m in ('jinja2', 'django') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("module", "framework", "extra"), [
    ("recommender.integrations.jinja", "jinja2", "recommender[jinja]"),
    ("recommender.integrations.django", "django", "recommender[django]"),
])
def test_missing_framework_names_the_extra_to_install(
        monkeypatch: pytest.MonkeyPatch, module: str, framework: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # as if not installed
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=extra.replace("[", r"\[")):
        importlib.import_module(module)


# ---------------------------------------------------------------------- Jinja2


def test_jinja_helpers_show_what_the_recommender_shows(tiny_index: Path) -> None:
    rec = Recommender.open(tiny_index, now=NOW)
    env = Environment(autoescape=True)
    jinja.install(env, rec)
    template = env.from_string(
        "{% for a in see_also(article.id) %}{{ a.id }} {% endfor %}/"
        "{% for a in related(article.id, 'you_may_also_like', k=2) %}{{ a.id }} {% endfor %}/"
        "{% set slots = page(article.id) %}"
        "{% for a in slots.see_also %}{{ a.id }} {% endfor %}/"
        "{% for a in slots.you_may_also_like %}{{ a.id }} {% endfor %}/"
        "{% for a in see_also(article.id) %}{{ a.title }} ({{ a.reason|reason_text }}){% endfor %}")
    see_also, related, page_see_also, page_more, titled = \
        template.render(article={"id": "t01"}).split("/")
    page = rec.page("t01")
    # the story's latest development first, then its best other coverage
    assert see_also.split() == [r.id for r in rec.related("t01", "see_also")] == ["t03", "t02"]
    assert related.split() == [r.id for r in rec.related("t01", "you_may_also_like", k=2)]
    assert page_see_also.split() == [r.id for r in page["see_also"]]
    assert page_more.split() == [r.id for r in page["you_may_also_like"]]
    assert titled.startswith("Portmere bridge rebuild to cost millions (latest development; "
                             "relevance ")


def test_jinja_opens_a_lazy_source_once_across_threads(tiny_index: Path) -> None:
    opened: list[int] = []

    def open_index() -> Recommender:
        opened.append(1)
        time.sleep(0.05)  # let the other threads arrive while this one opens
        return Recommender.open(tiny_index, now=NOW)

    env = Environment(autoescape=True)
    jinja.install(env, open_index)
    assert opened == []  # nothing opened before the first render
    template = env.from_string("{% for a in see_also('t01') %}{{ a.id }}{% endfor %}")
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(template.render()))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["t03t02"] * 8 and opened == [1]


@pytest.mark.parametrize(("index", "article_id", "kind", "level"), [
    ("tiny", "nope", "ArticleNotFound", logging.WARNING),
    ("missing", "t01", "IndexNotFound", logging.ERROR),
])
def test_jinja_failures_render_empty_and_log_once(
        tiny_index: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        index: str, article_id: str, kind: str, level: int) -> None:
    caplog.set_level(logging.WARNING, logger="recommender")
    path = tiny_index if index == "tiny" else tmp_path / "missing"
    env = Environment(autoescape=True)
    # retry_interval=0: every render really tries to open a missing index again.
    jinja.install(env, SafeRecommender(path, retry_interval=0))
    template = env.from_string(
        "[{% for a in see_also(article.id) %}{{ a.id }}{% endfor %}]"
        "[{% for a in related(article.id) %}{{ a.id }}{% endfor %}]"
        "[{% for a in page(article.id).you_may_also_like %}{{ a.id }}{% endfor %}]")
    for _ in range(2):
        assert template.render(article={"id": article_id}) == "[][][]"
    [record] = records_of(caplog)
    assert record.levelno == level and kind in record.getMessage()


def test_jinja_slot_fills_once_the_index_is_built(tmp_path: Path, tiny_jsonl: Path) -> None:
    index = tmp_path / "later"
    env = Environment(autoescape=True)
    jinja.install(env, SafeRecommender(index, retry_interval=0))
    template = env.from_string("{% set items = see_also(article.id) %}" + LIST)
    assert template.render(article={"id": "t01"}) == ""
    build_index(index, [tiny_jsonl], embedder=HashingEmbedder(64))
    assert template.render(article={"id": "t01"}).startswith("t03|")


def test_unexpected_errors_are_logged_once_with_their_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Recommender:
        raise RuntimeError("disk on fire")

    safe = SafeRecommender(broken, retry_interval=0)
    assert safe.related("t01") == [] and safe.page("t01") == {} and safe.see_also("t01") == []
    [record] = records_of(caplog)
    assert "RuntimeError: disk on fire" in record.getMessage() and record.exc_info


def test_log_once_memory_is_bounded(tiny_index: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="recommender")
    safe = SafeRecommender(Recommender.open(tiny_index), remember_errors=2)
    for article_id in ("x1", "x2", "x3", "x3", "x1"):  # x1 was forgotten to make room for x3
        assert safe.related(article_id) == []
    assert ["'x1'" in r.getMessage() for r in records_of(caplog)] == [True, False, False, True]
    safe.reset()  # forgets what was logged
    safe.related("x3")
    assert len(records_of(caplog)) == 5


# ---------------------------------------------------------------------- Django


@pytest.fixture(scope="module")
def django_templates() -> Iterator[None]:
    """Django configured once per process (whichever test module gets here first)."""
    django = pytest.importorskip("django")
    from django.apps import apps
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["recommender.integrations.django_app"],
            TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
            USE_TZ=True)
        django.setup()
    assert apps.is_installed("recommender.integrations.django_app"), \
        "Django was configured elsewhere without recommender.integrations.django_app"
    from recommender.integrations import django as integration

    integration.reset()
    yield
    integration.reset()


def django_render(source: str, article_id: object = "t01", **settings: Any) -> str:
    from django.template import Context, Template
    from django.test import override_settings

    with override_settings(**settings):
        return str(Template("{% load recommender %}" + source).render(
            Context({"article": {"id": article_id}})))


@pytest.mark.usefixtures("django_templates")
def test_django_tags_render_slots_from_settings(special_index: Path) -> None:
    index = str(special_index)
    see_also = django_render('{% related_articles article.id "see_also" as items %}' + LIST,
                             RECOMMENDER_INDEX=index)
    assert see_also.endswith(f"t02|{escape(SPECIAL_TITLE)};")  # autoescaped
    more = django_render("{% related_articles article.id k=2 as items %}" + LIST,
                         RECOMMENDER_INDEX=index)
    assert more.count("|") == 2  # one "id|title;" per link
    page = django_render("{% related_page article.id as slots %}"
                         "{% for a in slots.see_also %}{{ a.id }}{% endfor %}/"
                         "{% for a in slots.you_may_also_like %}{{ a.id }} {% endfor %}/"
                         "{% for a in slots.see_also %}{{ a.reason|reason_text }}{% endfor %}",
                         RECOMMENDER_INDEX=index)
    expected = Recommender.open(index).page("t01")
    ids, more_ids, why = page.split("/")
    assert ids == "t03t02" and more_ids.split() == [r.id for r in expected["you_may_also_like"]]
    assert why.startswith("latest development; relevance ")


@pytest.mark.usefixtures("django_templates")
def test_django_opens_the_index_once_per_process(tiny_index: Path) -> None:
    from django.test import override_settings

    from recommender.integrations.django import reset, template_recommender

    with override_settings(RECOMMENDER_INDEX=str(tiny_index)):
        first = template_recommender()
        assert template_recommender() is first
        assert first.recommender() is first.recommender()
        reset()
        assert template_recommender() is not first


@pytest.mark.usefixtures("django_templates")
def test_django_config_setting_applies(tiny_index: Path, tmp_path: Path) -> None:
    strict = tmp_path / "strict.toml"
    strict.write_text("[slots.see_also]\nk = 0\n")
    source = '{% related_articles article.id "see_also" as items %}' + LIST
    assert django_render(source, RECOMMENDER_INDEX=str(tiny_index)).startswith("t03|")
    assert django_render(source, RECOMMENDER_INDEX=str(tiny_index),
                         RECOMMENDER_CONFIG=str(strict)) == ""


@pytest.mark.usefixtures("django_templates")
@pytest.mark.parametrize(("index", "article_id", "kind"), [
    ("tiny", "nope", "ArticleNotFound"),
    ("missing", "t01", "IndexNotFound"),
    (None, "t01", "ImproperlyConfigured"),
])
def test_django_failures_render_empty_and_log_once(
        tiny_index: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, index: str | None, article_id: str, kind: str) -> None:
    caplog.set_level(logging.WARNING, logger="recommender")
    monkeypatch.delenv("RECOMMENDER_INDEX", raising=False)
    path = {"tiny": str(tiny_index), "missing": str(tmp_path / "missing"), None: None}[index]
    source = ('[{% related_articles article.id "see_also" as items %}' + LIST + "]"
              "[{% related_page article.id as slots %}"
              "{% for a in slots.you_may_also_like %}{{ a.id }}{% endfor %}]")
    for _ in range(2):
        assert django_render(source, article_id, RECOMMENDER_INDEX=path) == "[][]"
    [record] = records_of(caplog)
    assert kind in record.getMessage()


# ---------------------------------------------------------------------- recommender render


def test_render_writes_the_article_page(special_index: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    result = CliRunner().invoke(render, ["t01", "--index", str(special_index),
                                         "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "<h1>Harbour bridge collapses in Portmere</h1>" in html
    assert "<p>The harbour bridge in Portmere collapsed at dawn." in html
    assert "<h2>See also</h2>" in html and "<h2>You may also like</h2>" in html
    page = Recommender.open(special_index).page("t01")
    assert [r.id for r in page["see_also"]] == ["t03", "t02"] and page["you_may_also_like"]
    for r in [*page["see_also"], *page["you_may_also_like"]]:
        assert f'<a href="{r.url}" title="{escape(reason_text(r.reason))}">' \
               f"{escape(r.title)}</a>" in html
    assert "&lt;cause&gt; &amp; more" in html and "<cause>" not in html
    assert html.index("See also") < html.index("You may also like")


def test_render_can_link_to_the_sites_own_article_pages(special_index: Path,
                                                        tmp_path: Path) -> None:
    # A folder of rendered pages that link to each other (a static site build).
    result = CliRunner().invoke(render, ["t01", "--index", str(special_index),
                                         "--link-pattern", "{id}.html"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    page = Recommender.open(special_index).page("t01")
    links = [*page["see_also"], *page["you_may_also_like"]]
    assert links
    for r in links:
        assert f'<a href="{r.id}.html" title=' in result.stdout
        assert r.url not in result.stdout
    bad = CliRunner().invoke(render, ["t01", "--index", str(special_index),
                                      "--link-pattern", "/articles/"])
    assert bad.exit_code == 2 and "{id}" in bad.stderr


def test_a_link_pattern_encodes_the_id(tmp_path: Path) -> None:
    from recommender.integrations.jinja import render_article_page

    records = [dict(r) for r in TINY[:3]]
    records[1]["id"] = "news/2026/bridge cause?"
    index = tmp_path / "odd"
    build_index(index, records, embedder=HashingEmbedder(64))
    html = render_article_page(Recommender.open(index), "t01", link_pattern="/articles/{id}")
    assert 'href="/articles/news%2F2026%2Fbridge%20cause%3F"' in html
    with pytest.raises(ValueError, match="not an http"):
        render_article_page(Recommender.open(index), "t01", link_pattern="javascript:{id}")


def test_render_unknown_id_is_exit_2_and_writes_nothing(tiny_index: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    result = CliRunner().invoke(render, ["nope", "--index", str(tiny_index), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.strip() == "Error: unknown article id: 'nope'"


def test_render_without_jinja_names_the_extra(tiny_index: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jinja2", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "recommender.integrations.jinja", raising=False)
    result = CliRunner().invoke(render, ["t01", "--index", str(tiny_index)])
    assert result.exit_code == 1 and "pip install 'recommender[jinja]'" in result.stderr


def test_render_to_standard_output(tiny_index: Path) -> None:
    result = CliRunner().invoke(render, ["t01", "--index", str(tiny_index)])
    assert result.exit_code == 0 and result.stdout.startswith("<!doctype html>")


@pytest.mark.parametrize("url", ["javascript:alert(1)", " JavaScript:alert(1)",
                                 "data:text/html,<script>alert(1)</script>"])
def test_only_http_or_relative_urls_become_links(tmp_path: Path, url: str) -> None:
    # An index written before URLs were checked when read can still hold such a URL.
    from recommender import Article, LoadReport

    articles = [Article(id=r["id"], title=r["title"], body=r["body"], url=r["url"],
                        section=r["section"], language="en") for r in TINY]
    articles[1] = dataclasses.replace(articles[1], url=url)
    index = tmp_path / "urls"
    build_index(index, LoadReport(articles=articles), embedder=HashingEmbedder(64))
    result = CliRunner().invoke(render, ["t01", "--index", str(index)], catch_exceptions=False)
    assert result.exit_code == 0
    html = result.stdout
    assert "t02" in [r.id for r in Recommender.open(index).page("t01")["see_also"]]
    assert "javascript:" not in html.lower() and "data:" not in html
    assert f">{escape(articles[1].title)}</span>" in html  # shown, but not as a link
    env = Environment(autoescape=True)
    jinja.install(env, Recommender.open(index))
    snippet = env.from_string('{% for a in see_also("t01") %}<a href="{{ a.url }}">'
                              "{% endfor %}").render()
    assert "javascript:" not in snippet.lower() and "data:" not in snippet
