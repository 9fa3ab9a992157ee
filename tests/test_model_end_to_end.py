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
    # a001: the bridge collapse; a002-a005 its follow-ups, a005 (the inquiry) the latest
    # published: See also shows the story's latest development
    see_also = [r.id for r in sample_index.related("a001", slot="see_also")]
    assert "a005" in see_also
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


def test_bf16_vectors_agree_with_fp32(corpus: dict[str, object]) -> None:
    from recommender.embedding import SentenceTransformerEmbedder, cpu_supports_bf16
    from recommender.text import embed_text_for

    texts = [embed_text_for(a) for a in corpus.values()]  # type: ignore[arg-type]
    fp32 = SentenceTransformerEmbedder(precision="fp32", runtime="torch").embed(texts)
    bf16 = SentenceTransformerEmbedder(precision="bf16", runtime="torch").embed(texts)
    assert float((fp32 * bf16).sum(axis=1).min()) >= 0.998
    auto = SentenceTransformerEmbedder(precision="auto")
    assert auto.precision == ("bf16" if cpu_supports_bf16() else "fp32")


def test_follow_up_added_by_update_enters_the_earlier_articles_see_also(
        tmp_path: Path) -> None:
    records = [a.to_dict() for a in load_articles(sample_corpus_path())]
    follow_up = next(r for r in records if r["id"] == "a005")  # the newest bridge article
    index = tmp_path / "index"
    build_index(index, [r for r in records if r["id"] != "a005"])
    rec = Recommender.open(index, reload_interval=0)
    assert "a005" not in [r.id for r in rec.related("a001", slot="see_also")]
    report = build_index(index, [follow_up], incremental=True)
    assert report.added == 1 and report.embedded == 1
    assert "a005" in [r.id for r in rec.related("a001", slot="see_also")]


def test_deleting_by_status_needs_no_embedding(tmp_path: Path) -> None:
    records = [a.to_dict() for a in load_articles(sample_corpus_path())]
    index = tmp_path / "index"
    build_index(index, records)
    rec = Recommender.open(index, reload_interval=0)
    assert "a005" in [r.id for r in rec.related("a001", slot="see_also")]
    gone = dict(next(r for r in records if r["id"] == "a005"), status="deleted")
    report = build_index(index, [gone], incremental=True)
    assert report.embedded == 0 and report.withdrawn == 1
    for article_id in rec.ids():
        assert "a005" not in [r.id for v in rec.page(article_id).values() for r in v]
    # the story is still linked, through its next-latest article
    assert "a004" in [r.id for r in rec.related("a001", slot="see_also")]
