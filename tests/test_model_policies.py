"""Slot policies that depend on meaning, with the real model on the sample corpus."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from recommender import Article, Recommender, build_index, load_articles, sample_corpus_path

from .conftest import NOW

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def corpus() -> dict[str, Article]:
    return {a.id: a for a in load_articles(sample_corpus_path())}


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    index = tmp_path_factory.mktemp("policies") / "index"
    build_index(index, [sample_corpus_path()])
    return Recommender.open(index, now=NOW)


def story(article: Article) -> str | None:
    value = article.metadata.get("fixture_story")
    return str(value) if value else None


def test_whole_page_check_for_every_story_article(rec: Recommender,
                                                  corpus: dict[str, Article]) -> None:
    sizes = Counter(story(a) for a in corpus.values() if story(a))
    checked = 0
    for article_id, article in corpus.items():
        if not story(article) or sizes[story(article)] < 2:
            continue
        page = rec.page(article_id)
        shown = [r.id for results in page.values() for r in results]
        stories = [story(corpus[i]) for i in shown if story(corpus[i])]
        assert article_id not in shown, article_id
        assert all(corpus[i].is_published for i in shown), article_id
        assert len(stories) == len(set(stories)), (article_id, stories)
        assert any(story(corpus[r.id]) == story(article) for r in page["see_also"]), article_id
        checked += 1
    assert checked >= 50


def test_a_story_follow_up_is_the_see_also_of_the_first_report(rec: Recommender) -> None:
    # Skylark probe: launch (a040) -> follow-ups a041..a044
    [first, *_] = rec.related("a040", slot="see_also")
    assert first.id in {"a041", "a042", "a043", "a044"}
    assert first.reason.get("story_collapsed_from")  # the other follow-ups stand behind it


def test_the_syndicated_copy_never_appears_with_its_original(rec: Recommender) -> None:
    # a013 is a012 republished by a wire service under another id
    assert "a013" in [r.id for r in rec.similar("a012", k=3)]  # the raw ranking has it
    for page_of, copy in (("a012", "a013"), ("a013", "a012")):
        shown = [r.id for v in rec.page(page_of).values() for r in v]
        assert copy not in shown


def test_translations_never_appear_with_their_original(rec: Recommender,
                                                       corpus: dict[str, Article]) -> None:
    anything = dataclasses.replace(rec.config, slots={
        name: dataclasses.replace(policy, languages="any")
        for name, policy in rec.config.slots.items()})
    everywhere = Recommender.open(rec.path, config=anything, now=NOW)
    pairs = [(a.id, str(a.metadata["fixture_translation_of"])) for a in corpus.values()
             if a.metadata.get("fixture_translation_of")]
    assert len(pairs) == 3
    for translation, original in pairs:
        for source, other in ((translation, original), (original, translation)):
            shown = [r.id for v in everywhere.page(source).values() for r in v]
            assert other not in shown, (source, other)


def test_translation_detected_without_the_translation_of_field(tmp_path: Path,
                                                               corpus: dict[str, Article]
                                                               ) -> None:
    records = []
    for a in corpus.values():
        record = a.to_dict()
        record.pop("translation_of", None)
        records.append(record)
    build_index(tmp_path / "index", records)
    rec = Recommender.open(tmp_path / "index", now=NOW)
    anything = dataclasses.replace(rec.config, slots={
        name: dataclasses.replace(p, languages="any", min_score_other_language=0.0)
        for name, p in rec.config.slots.items()})
    rec = Recommender.open(tmp_path / "index", config=anything, now=NOW)
    # a037 is the Spanish version of a036, published the same day
    assert "a037" in [r.id for r in rec.similar("a036", k=5)]
    assert "a037" not in [r.id for v in rec.page("a036").values() for r in v]


def test_the_old_article_is_background_for_see_also_not_fresh_reading(
        rec: Recommender) -> None:
    # a057 (2009) surveyed the bridge that collapses in a001
    assert "a057" in [r.id for r in rec.related("a001", slot="see_also")]
    assert "a057" not in [r.id for r in rec.related("a001", slot="you_may_also_like", k=20)]
