"""End to end with the real default model on the bundled sample corpus (marked `model`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recommender import Recommender, build_index, load_articles, sample_corpus_path

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    index = tmp_path_factory.mktemp("sample") / "index"
    build_index(index, [sample_corpus_path()])
    return Recommender.open(index)


@pytest.fixture(scope="module")
def corpus() -> dict[str, object]:
    return {a.id: a for a in load_articles(sample_corpus_path())}


def test_follow_up_is_in_the_first_articles_see_also(sample_index: Recommender) -> None:
    # a001: the bridge collapse; a002: divers' follow-up the same day
    see_also = [r.id for r in sample_index.related("a001", slot="see_also")]
    assert "a002" in see_also
    # the probe launch (a040) links to a Skylark follow-up
    assert {r.id for r in sample_index.related("a040", slot="see_also")} & \
        {"a041", "a042", "a043", "a044"}


def test_hidden_articles_and_self_never_appear(sample_index: Recommender,
                                               corpus: dict[str, object]) -> None:
    hidden = {aid for aid, a in corpus.items() if not a.is_published}  # type: ignore[attr-defined]
    assert {"a006", "a026", "a045"} <= hidden  # draft, deleted, embargoed follow-ups
    for article_id in corpus:
        page = sample_index.page(article_id)
        shown = [r.id for results in page.values() for r in results]
        assert article_id not in shown
        assert not hidden & set(shown), article_id
        assert len(shown) == len(set(shown)), f"{article_id}: an article in both slots"


def test_the_default_model_is_offline_and_recorded(sample_index: Recommender) -> None:
    info = sample_index.info()
    assert info["model"] == "all-MiniLM-L6-v2" and info["dimension"] == 384
    assert Path(info["path"]).is_dir()
