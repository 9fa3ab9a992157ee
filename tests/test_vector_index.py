"""Every search path of the VectorIndex seam agrees with exact search on the same clustered
vectors: exact paths give the same lists and scores, the approximate one a recall threshold
with true cosines; a build records the method and its measured recall in the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recommender import HashingEmbedder, Recommender, build_index, neighbours, vector_index
from recommender.neighbours import RESERVE, compute_table, full_table, list_floor, table_recall
from recommender.vector_index import (
    EXACT_METHODS,
    ExactIndex,
    HNSWIndex,
    IVFIndex,
    recall_at_k,
)


def clustered(n: int, d: int = 96, seed: int = 0) -> np.ndarray:
    """Unit vectors shaped like text embeddings: a shared direction, topics, stories within
    topics, and per-article noise (not uniform noise, on which graph and list indexes are
    meaningless)."""
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    shared = unit(rng.standard_normal(d))
    topics = unit(rng.standard_normal((max(n // 400, 2), d)))
    stories = unit(rng.standard_normal((max(n // 20, 2), d)))
    story = rng.integers(len(stories), size=n)
    x = (0.32 * shared + 0.5 * topics[story % len(topics)] + 0.55 * stories[story]
         + 0.6 * rng.standard_normal((n, d)) / np.sqrt(d))
    return unit(x).astype(np.float32)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


VECTORS = clustered(4000)
QUERIES = VECTORS[::13]


@pytest.mark.parametrize("method", EXACT_METHODS)
def test_exact_paths_give_the_exact_lists_and_scores(method: str) -> None:
    ids = np.arange(len(VECTORS)) * 3 + 7  # results come back as the ids given
    scores, found = ExactIndex(VECTORS, ids, method=method).search(QUERIES, 50)
    want_scores, want = exact_top(VECTORS, QUERIES, 50)
    assert np.array_equal(found, ids[want])
    assert np.allclose(scores, want_scores, atol=1e-5)


def test_exact_search_pads_when_asked_for_more_than_it_holds() -> None:
    scores, found = ExactIndex(VECTORS[:5], method="bf16").search(VECTORS[:2], 8)
    assert (found[:, :5] >= 0).all() and (found[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all()


@pytest.mark.parametrize("backend", [HNSWIndex, IVFIndex])
def test_an_approximate_index_finds_the_exact_neighbours_with_true_cosines(
        backend: type[HNSWIndex | IVFIndex]) -> None:
    index = backend(VECTORS, np.arange(len(VECTORS)) + 5)
    reached = index.tune(QUERIES, 50, target=0.95)
    scores, found = index.search(QUERIES, 50)
    _, want = exact_top(VECTORS, QUERIES, 50)
    assert reached >= 0.95 and recall_at_k(found, want + 5) == pytest.approx(reached)
    # scores are the cosines of the rows returned, best first (not distances)
    true = np.einsum("qd,qkd->qk", QUERIES, VECTORS[found - 5])
    assert np.allclose(scores, true, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_an_ivf_search_of_many_queries_list_by_list_equals_the_per_query_scan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    index = IVFIndex(VECTORS, np.arange(len(VECTORS)) + 5, nprobe=8)
    by_list_scores, by_list = index.search(VECTORS, 50)  # 4,000 queries: list by list
    assert len(VECTORS) >= vector_index.BY_LIST_QUERIES * index.nlist
    index._index.nprobe = 8
    scan_scores, scan = index._index.search(VECTORS, 50)  # faiss' own per-query scan
    assert np.allclose(by_list_scores, scan_scores, atol=1e-5)
    same = by_list == scan + 5
    assert same.mean() > 0.999  # the rest are near-ties, swapped
    assert np.allclose(by_list_scores[~same], scan_scores[~same], atol=1e-5)
    monkeypatch.setattr(vector_index, "BY_LIST_QUERIES", len(VECTORS) + 1)
    _, scanned = index.search(VECTORS, 50)
    assert np.array_equal(scanned, scan + 5) and isinstance(index._index, faiss.IndexIVFFlat)


@pytest.mark.parametrize(("method", "kind"), [("hnsw", "hnsw-flat (M "),
                                            ("ivf", "ivf-flat (nlist ")])
def test_an_approximate_table_meets_its_recall_target_and_says_so(method: str, kind: str
                                                                 ) -> None:
    candidates = np.random.default_rng(1).random(len(VECTORS)) > 0.1
    rows, scores, used = compute_table(VECTORS, candidates, n=20, method=method)
    assert used.startswith(kind)
    assert not (rows == np.arange(len(VECTORS))[:, None]).any()  # never itself
    assert candidates[rows[rows >= 0]].all()
    exact_rows, exact_scores, _ = compute_table(VECTORS, candidates, n=20, method="numpy")
    recall, sample = table_recall(VECTORS, candidates, rows, sample=len(VECTORS))
    assert sample == len(VECTORS) and recall == pytest.approx(recall_at_k(rows, exact_rows))
    assert recall >= 0.98  # RECALL_TARGET 0.99 on the tuning sample
    same = rows == exact_rows
    assert np.allclose(scores[same], exact_scores[same], atol=1e-5)


def test_the_recall_check_counts_a_damaged_table_as_exact_search_would() -> None:
    """Stray entries (a list's floor far too low), gaps and unpublished entries: the check
    keeps only what may be in each exact top k, and must still count every miss."""
    rng = np.random.default_rng(4)
    candidates = rng.random(len(VECTORS)) > 0.05
    exact_rows, _, _ = compute_table(VECTORS, candidates, n=20, method="numpy")
    damaged = exact_rows.copy()
    stray = rng.random(damaged.shape) < 0.05
    damaged[stray] = rng.integers(0, len(VECTORS), int(stray.sum()))
    damaged[rng.random(damaged.shape) < 0.01] = -1
    damaged[damaged == np.arange(len(VECTORS))[:, None]] = -1  # never itself
    shown = np.where((damaged >= 0) & candidates[np.clip(damaged, 0, None)], damaged, -1)
    recall, sample = table_recall(VECTORS, candidates, damaged, sample=len(VECTORS))
    assert sample == len(VECTORS)
    assert recall == pytest.approx(recall_at_k(shown, exact_rows), abs=1e-3)
    assert recall < 0.97
    assert table_recall(VECTORS, candidates, exact_rows, sample=300)[0] == 1.0


def test_an_approximate_table_updated_through_its_partition_finds_what_exact_search_finds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    candidates = np.random.default_rng(2).random(len(VECTORS)) > 0.05
    width = 20 + RESERVE
    rows, scores, used, partition = full_table(VECTORS, candidates, n=width, method="ivf")
    assert partition is not None and used.endswith(f"nprobe {partition.nprobe})")
    assert partition.lists.shape == (len(VECTORS),) and (partition.lists >= 0).all()
    rng = np.random.default_rng(3)
    moved = rng.choice(len(VECTORS), 40, replace=False)
    vectors = VECTORS.copy()
    # edited into other stories: near another article of the corpus
    shifted = VECTORS[rng.choice(len(VECTORS), 40)] + 0.05 * rng.standard_normal((40, 96))
    vectors[moved] = shifted / np.linalg.norm(shifted, axis=1, keepdims=True)
    carried = partition.carried(np.arange(len(VECTORS)), len(VECTORS), vectors, moved)
    assert (carried.lists[moved] == carried.nearest(vectors[moved])).all()

    def exhaustive(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an approximate table's update scanned every row")

    monkeypatch.setattr(neighbours, "_scan_changed", exhaustive)
    new_rows, new_scores, _, _ = neighbours.update_lists(
        vectors, candidates, rows.copy(), scores.copy(), list_floor(scores, rows), moved,
        n=20, width=width, partition=carried)
    exact_rows, exact_scores, _ = compute_table(vectors, candidates, n=20, method="numpy")
    served = new_rows[:, :20]
    assert recall_at_k(served, exact_rows) >= 0.98
    # the moved articles' own lists, and the lists they moved into
    assert recall_at_k(served[moved], exact_rows[moved]) >= 0.98
    wanted = np.isin(exact_rows, moved)
    holds = np.array([np.isin(exact_rows[r][wanted[r]], served[r]).all()
                      for r in np.flatnonzero(wanted.any(axis=1))])
    assert holds.mean() >= 0.98
    assert not np.isin(served, moved).sum() > wanted.sum() * 1.05  # nor where they left
    same = served == exact_rows
    assert np.allclose(new_scores[:, :20][same], exact_scores[same], atol=1e-5)


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": f"a{i}", "title": f"Story {i} about topic{i % 9} and theme{i % 23}",
             "body": f"words topic{i % 9} theme{i % 23} item{i}"} for i in range(n)]


def test_the_manifest_and_info_record_the_method_and_recall(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exact_index, approximate = tmp_path / "exact", tmp_path / "approximate"
    build_index(exact_index, records(300), embedder=HashingEmbedder(64))
    monkeypatch.setattr(neighbours, "EXACT_PAIRS", 0)  # as if 300 articles were millions
    report = build_index(approximate, records(300), embedder=HashingEmbedder(64))
    assert report.neighbours_mode.startswith(f"full, {neighbours.APPROXIMATE}-flat (")
    for index, method in ((exact_index, "full, exact ("),
                          (approximate, f"full, {neighbours.APPROXIMATE}-flat (")):
        extra = Recommender.open(index).info()["extra"]
        assert extra["neighbours_method"].startswith(method)
        assert extra["neighbours_recall_sample"] == 300
        live = index / "versions" / (index / "CURRENT").read_text().strip()
        assert json.loads((live / "manifest.json").read_text())["extra"] == extra
    assert Recommender.open(exact_index).info()["extra"]["neighbours_recall"] == 1.0
    assert 0.9 <= report.neighbours_recall <= 1.0


def test_an_approximate_index_keeps_its_partition_and_updates_search_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = tmp_path / "approximate"
    monkeypatch.setattr(neighbours, "EXACT_PAIRS", 0)  # as if 300 articles were millions
    build_index(index, records(300), embedder=HashingEmbedder(64))
    first = Recommender.open(index).info()["extra"]
    assert first["partition_nprobe"] >= 1

    def exhaustive(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an approximate table's update scanned every row")

    monkeypatch.setattr(neighbours, "_scan_changed", exhaustive)
    edited = [{**r, "title": r["title"] + " edited", "body": "different words " * 5}
              for r in records(300)[10:13]]
    report = build_index(index, [*edited, {"id": "new", "title": "A new story",
                                           "body": "words topic1 theme2"}],
                         embedder=HashingEmbedder(64), incremental=True)
    assert report.neighbours_mode == "incremental" and report.embedded == 4
    rec = Recommender.open(index)
    assert rec.info()["extra"]["partition_nprobe"] == first["partition_nprobe"]
    live = index / "versions" / (index / "CURRENT").read_text().strip()
    lists = np.load(live / vector_index.PARTITION_LISTS_FILE)
    assert lists.shape == (301,) and (lists >= 0).all()
    assert report.neighbours_recall >= 0.9
    assert rec.similar("new", k=3)  # the new article has its neighbours


def test_an_approximate_index_rebuilt_with_nothing_changed_or_only_a_deletion_serves_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A scheduled rebuild of an unchanged feed, or a delete-only update, gives the IVF scan
    # nothing to search: it must not fail, and the lists stay what they were (less the
    # deleted article).
    index = tmp_path / "approximate"
    monkeypatch.setattr(neighbours, "EXACT_PAIRS", 0)  # as if 300 articles were millions
    build_index(index, records(300), embedder=HashingEmbedder(64))
    before = {a: [r.id for r in Recommender.open(index).similar(a, k=10)]
              for a in ("a0", "a1", "a150")}
    report = build_index(index, records(300), embedder=HashingEmbedder(64))
    assert report.embedded == 0 and report.neighbours_mode == "incremental"
    rec = Recommender.open(index)
    assert {a: [r.id for r in rec.similar(a, k=10)] for a in before} == before
    build_index(index, [], embedder=HashingEmbedder(64), incremental=True, delete=["a9"])
    rec = Recommender.open(index)
    assert "a9" not in rec
    for a in before:
        assert "a9" not in [r.id for r in rec.related(a, k=10)]
