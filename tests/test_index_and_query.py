"""Build with the fake embedder, then query: the mechanics of similar / related / page."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from recommender import (
    ArticleNotFound,
    HashingEmbedder,
    IndexNotFound,
    ModelMismatch,
    Recommender,
    UnknownSlot,
    build_index,
)

HIDDEN = {"t04", "t05", "t12"}  # draft, deleted, embargoed


def test_index_directory_holds_manifest_vectors_once_and_sqlite(tiny_index: Path) -> None:
    live = tiny_index / "versions" / (tiny_index / "CURRENT").read_text().strip()
    manifest = json.loads((live / "manifest.json").read_text())
    assert manifest["model"] == "hashing:64" and manifest["dimension"] == 64
    assert manifest["count"] == 12 and manifest["metric"] == "inner_product"
    assert manifest["format_version"] == 7 and manifest["index_type"] == "flat"
    assert manifest["built_at"].endswith("Z")
    # 12 rows, then free rows of zeros for the articles later updates add
    stored = np.load(live / "vectors.npy")
    assert stored.shape[0] > 12 and not stored[12:].any()
    assert np.allclose(np.linalg.norm(stored[:12], axis=1), 1.0, atol=1e-5)
    assert not (live / "index.faiss").exists()  # the vectors are stored once
    assert manifest["extra"]["neighbours_method"].startswith("full, exact (")
    assert manifest["extra"]["neighbours_recall"] == 1.0
    assert manifest["extra"]["neighbours_recall_sample"] == 12
    with sqlite3.connect(live / "articles.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM articles").fetchone() == (12,)
    assert not list(tiny_index.rglob("*.pkl")) and not list(tiny_index.rglob("*.pickle"))


def test_similar_scores_are_the_relevance_model_over_exact_parts_and_never_self(
        tiny_index: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from recommender.text import lexical_text_for

    rec = Recommender.open(tiny_index)
    results = rec.similar("t01", k=11)
    assert "t01" not in [r.id for r in results] and len(results) == 11
    live = tiny_index / "versions" / rec.version
    vectors = np.load(live / "vectors.npy")[:12]
    ids = rec.ids()
    exact = vectors @ vectors[0]
    # an independent TF-IDF with the same settings as the index
    tfidf = TfidfVectorizer(sublinear_tf=True, strip_accents="unicode").fit_transform(
        [lexical_text_for(a) for a in rec.articles()])
    lexical = (tfidf @ tfidf[0].T).toarray().ravel()
    w = rec.config.ranking
    for r in results:
        i = ids.index(r.id)
        assert r.reason["semantic"] == pytest.approx(float(exact[i]), abs=1e-4)
        assert r.reason["lexical"] == pytest.approx(float(lexical[i]), abs=1e-4)
        days = abs((rec.article(r.id).published_at - rec.article("t01").published_at)
                   .total_seconds()) / 86_400
        assert r.reason["proximity"] == pytest.approx(np.exp(-days / w.proximity_days), abs=1e-4)
        p, names = r.reason["proximity"], r.reason["names"]
        logit = (w.bias + w.semantic_weight * exact[i] + w.lexical_weight * lexical[i]
                 + w.names_weight * names + w.tag_weight * r.reason["tags"]
                 + p * (w.proximity_weight + w.semantic_proximity_weight * exact[i]
                        + w.lexical_proximity_weight * lexical[i]
                        + w.names_proximity_weight * names))
        assert r.score == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-3)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    # the raw ranking shows every status, and says which
    assert {r.id for r in results} >= HIDDEN
    assert {r.status for r in results} >= {"draft", "deleted", "embargoed"}


def test_related_shows_only_published_articles(tiny_index: Path) -> None:
    rec = Recommender.open(tiny_index)
    for article_id in [f"t{i:02d}" for i in range(1, 13)]:
        for slot in ("see_also", "you_may_also_like"):
            ids = [r.id for r in rec.related(article_id, slot=slot, k=20)]
            assert article_id not in ids and not HIDDEN & set(ids)


def test_see_also_is_strict_and_you_may_also_like_has_its_own_defaults(tiny_index: Path) -> None:
    rec = Recommender.open(tiny_index)
    see_also = rec.related("t01", slot="see_also")
    assert 1 <= len(see_also) <= 2
    assert {r.id for r in see_also} <= {"t02", "t03"}
    assert all(r.score >= rec.policy("see_also").min_score for r in see_also)
    # the museum piece has nothing strongly related: empty beats wrong
    assert rec.related("t11", slot="see_also") == []
    # You may also like is never too short: the related bank stories, then the next most
    # relevant as fallback, up to fallback_links (3), not padded to k (6)
    more = rec.related("t06", slot="you_may_also_like")
    policy = rec.policy("you_may_also_like")
    assert (len(more), policy.fallback_links, policy.k) == (3, 3, 6)
    assert [r.id for r in more[:2]] == ["t07", "t08"] and "fallback" not in more[0].reason
    assert all("fallback" in r.reason for r in more[2:])


def test_page_never_repeats_an_article_across_slots(tiny_index: Path) -> None:
    rec = Recommender.open(tiny_index)
    for article_id in [f"t{i:02d}" for i in range(1, 13)]:
        page = rec.page(article_id)
        assert set(page) == {"see_also", "you_may_also_like"}
        ids = [r.id for results in page.values() for r in results]
        assert len(ids) == len(set(ids))
        assert page["see_also"] == rec.related(article_id, slot="see_also")


def test_results_carry_id_title_url_score_reason(tiny_index: Path) -> None:
    [first] = Recommender.open(tiny_index).related("t06", k=1)
    data = first.to_dict()
    assert set(data) >= {"id", "title", "url", "score", "reason"}
    assert data["url"] == f"https://news.example.org/{first.id}"
    assert data["reason"]["relevance"] * data["reason"]["freshness"] == \
        pytest.approx(data["score"], abs=1e-3)


def test_errors_are_specific(tiny_index: Path, tmp_path: Path) -> None:
    rec = Recommender.open(tiny_index)
    with pytest.raises(ArticleNotFound, match="unknown article id: 'nope'"):
        rec.related("nope")
    with pytest.raises(UnknownSlot, match="unknown slot 'sidebar'"):
        rec.related("t01", slot="sidebar")
    with pytest.raises(IndexNotFound, match="run `recommender build` first"):
        Recommender.open(tmp_path / "missing")
    with pytest.raises(ModelMismatch, match="built with model 'hashing:64'"):
        Recommender.open(tiny_index, model="all-MiniLM-L6-v2")
    with pytest.raises(ModelMismatch, match="built with model 'hashing:64', not 'hashing:32'"):
        Recommender.open(tiny_index, model=HashingEmbedder(32))

    class Renamed(HashingEmbedder):  # same name, other dimension
        name = "hashing:64"  # type: ignore[assignment]

    with pytest.raises(ModelMismatch, match="index has dimension 64, model 'hashing:64' gives 32"):
        Recommender.open(tiny_index, model=Renamed(32))


def test_update_with_another_model_is_refused(tiny_index: Path, tiny_jsonl: Path) -> None:
    with pytest.raises(ModelMismatch, match="rebuild it"):
        build_index(tiny_index, [tiny_jsonl], embedder=HashingEmbedder(32), incremental=True)


def test_a_rebuild_with_another_model_replaces_the_vectors(tiny_index: Path,
                                                           tiny_jsonl: Path) -> None:
    report = build_index(tiny_index, [tiny_jsonl], embedder=HashingEmbedder(32))
    assert report.embedded == 12 and report.unchanged == 12
    assert Recommender.open(tiny_index).info()["dimension"] == 32
