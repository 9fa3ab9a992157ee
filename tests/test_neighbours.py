"""The precomputed candidate table agrees with exact search, before and after updates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recommender import HashingEmbedder, Recommender, build_index
from recommender.neighbours import compute_table, update_table
from recommender.store import IndexDirectory, IndexVersion
from recommender.vector_index import EXACT_METHODS

from .conftest import NOW


def exact(vectors: np.ndarray, candidates: np.ndarray, n: int) -> list[dict[int, float]]:
    scores = vectors @ vectors.T
    out = []
    for row in range(len(vectors)):
        allowed = [c for c in np.argsort(-scores[row], kind="stable")
                   if candidates[c] and c != row][:n]
        out.append({int(c): float(scores[row, c]) for c in allowed})
    return out


def as_dicts(rows: np.ndarray, scores: np.ndarray) -> list[dict[int, float]]:
    return [{int(r): float(s) for r, s in zip(rr, ss, strict=True) if r >= 0}
            for rr, ss in zip(rows, scores, strict=True)]


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("method", [*EXACT_METHODS, "exact", "auto"])
def test_table_is_exact_top_n_among_candidates(method: str) -> None:
    vectors = random_unit(3000, 16, 0)
    candidates = np.random.default_rng(1).random(3000) > 0.2
    rows, scores, used = compute_table(vectors, candidates, n=10, method=method)
    assert used in {f"exact ({m})" for m in EXACT_METHODS}
    assert method not in EXACT_METHODS or used == f"exact ({method})"
    got, want = as_dicts(rows, scores), exact(vectors, candidates, 10)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for row in g:
            assert g[row] == pytest.approx(w[row], abs=1e-5)
    assert not (rows == np.arange(3000)[:, None]).any()  # never itself


def test_incremental_update_matches_a_full_recomputation() -> None:
    vectors = random_unit(200, 16, 2)
    candidates = np.ones(200, dtype=bool)
    rows, scores, _ = compute_table(vectors, candidates, n=8)
    changed = np.array([3, 50, 199])
    vectors[changed] = random_unit(3, 16, 3)
    candidates[7] = False  # withdrawn: every list that held it is refilled
    new_rows, new_scores = update_table(vectors, candidates, rows, scores, changed, n=8)
    full_rows, full_scores, _ = compute_table(vectors, candidates, n=8)
    got, want = as_dicts(new_rows, new_scores), as_dicts(full_rows, full_scores)
    assert got[0] and want[0]
    for row in range(200):  # whole lists, in order, with the current exact cosines
        assert list(got[row]) == list(want[row]), row
        assert list(got[row].values()) == pytest.approx(list(want[row].values()), abs=1e-5)
        assert 7 not in got[row]


def test_repeated_updates_and_removals_stay_equal_to_a_full_recomputation() -> None:
    rng = np.random.default_rng(5)
    vectors = random_unit(300, 16, 4)
    candidates = np.ones(300, dtype=bool)
    rows, scores, _ = compute_table(vectors, candidates, n=10)
    for step in range(6):
        changed = rng.choice(300, size=4, replace=False)
        vectors[changed] = random_unit(4, 16, 10 + step)
        flip = rng.choice(300, size=3, replace=False)
        candidates[flip] = ~candidates[flip]  # withdrawn, or published again
        back = flip[candidates[flip]]
        rows, scores = update_table(vectors, candidates, rows, scores,
                                    np.union1d(changed, back), n=10)
        full_rows, full_scores, _ = compute_table(vectors, candidates, n=10)
        assert np.array_equal(rows, full_rows), step
        assert np.allclose(scores, full_scores, atol=1e-5), step


def fresh_and_updated(tmp_path: Path, records: list[dict[str, Any]],
                      update: list[dict[str, Any]]) -> tuple[IndexVersion, IndexVersion, str]:
    a, b = tmp_path / "incremental", tmp_path / "full"
    build_index(a, records, embedder=HashingEmbedder(64))
    report = build_index(a, update, embedder=HashingEmbedder(64), incremental=True)
    merged = {r["id"]: r for r in records}
    merged.update({r["id"]: r for r in update})
    build_index(b, list(merged.values()), embedder=HashingEmbedder(64))
    return (IndexVersion(IndexDirectory(a).current_path()),
            IndexVersion(IndexDirectory(b).current_path()), report.neighbours_mode)


def test_update_keeps_the_table_equal_to_a_fresh_build(tmp_path: Path,
                                                       tiny_records: list[dict[str, Any]]
                                                       ) -> None:
    extra = [{"id": f"x{i}", "title": f"Filler story number {i}",
              "body": f"unrelated filler words {i} " * 3} for i in range(40)]
    records = tiny_records + extra
    update = [{"id": "t20", "title": "Portmere bridge collapse divers cables harbour",
               "body": "Portmere harbour bridge collapse divers cables."},
              dict(tiny_records[6], body="Markets rallied after the bank paused."),
              dict(tiny_records[2], status="deleted")]
    incremental, full, mode = fresh_and_updated(tmp_path, records, update)
    assert mode == "incremental"
    inc_table, full_table = incremental.neighbour_table(), full.neighbour_table()
    assert inc_table is not None and full_table is not None
    for article_id in full.ids:
        i, f = incremental.position[article_id], full.position[article_id]
        got = {incremental.ids[r]: s for r, s in zip(*[t[i] for t in inc_table[:2]], strict=True)
               if r >= 0 and incremental.columns.published[r]}
        want = {full.ids[r]: s for r, s in zip(*[t[f] for t in full_table[:2]], strict=True)
                if r >= 0}
        assert list(got) == list(want), article_id  # the whole list, in order
        assert list(got.values()) == pytest.approx(list(want.values()), abs=1e-5)


def test_lookups_read_the_table_and_agree_with_live_search(tiny_index: Path) -> None:
    rec = Recommender.open(tiny_index, now=NOW)
    live = rec._current()
    for article_id in rec.ids():
        source = live.version.position[article_id]
        table = rec._candidates(live, source, 5)
        search = rec._candidates(live, source, 11, precomputed=False)
        published = live.version.columns.published[search.rows]
        expected_rows = search.rows[published][:len(table.rows)]
        expected_scores = search.semantic[published][:len(table.rows)]
        assert np.allclose(table.semantic, expected_scores, atol=1e-5)
        # the same articles, up to the order of exact ties
        assert {(int(r), round(float(s), 4)) for r, s in zip(table.rows, table.semantic,
                                                             strict=True)} == \
            {(int(r), round(float(s), 4)) for r, s in zip(expected_rows, expected_scores,
                                                          strict=True)} or \
            np.unique(np.round(expected_scores, 4)).size < len(expected_scores)


def test_table_lexical_scores_equal_live_tfidf(tiny_index: Path) -> None:
    from recommender.lexical import lexical_scores

    version = Recommender.open(tiny_index).snapshot()
    table = version.neighbour_table()
    assert table is not None
    for row in range(len(version.ids)):
        found = np.asarray(table[0][row])
        found = found[found >= 0].astype(np.int64)
        live = lexical_scores(version.lexical(), row, found)
        assert np.allclose(np.asarray(table[2][row][:len(found)]), live, atol=1e-5)


def test_an_index_without_a_table_falls_back_to_live_search(tiny_index: Path) -> None:
    expected = Recommender.open(tiny_index, now=NOW).page("t01")
    live = IndexDirectory(tiny_index).current_path()
    for name in ("neighbours.npy", "neighbour_scores.npy", "neighbour_lexical.npy"):
        (live / name).unlink()
    rec = Recommender.open(tiny_index, now=NOW)
    assert rec.snapshot().neighbour_table() is None
    got = rec.page("t01")
    assert {s: [r.id for r in v] for s, v in got.items()} == \
        {s: [r.id for r in v] for s, v in expected.items()}
    for slot, results in got.items():
        for r, e in zip(results, expected[slot], strict=True):
            assert r.score == pytest.approx(e.score, abs=1e-5)


def test_lists_with_a_reserve_stay_exact_over_updates_and_search_only_what_lost_too_much(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import recommender.neighbours as neighbours

    searched: list[int] = []
    real = neighbours.compute_table

    def counting(*args: Any, **kwargs: Any) -> Any:
        queries = kwargs.get("queries")
        searched.append(len(args[0]) if queries is None else len(queries))
        return real(*args, **kwargs)

    rng = np.random.default_rng(8)
    n, width = 10, 14
    vectors = random_unit(400, 16, 6)
    vectors[201] = vectors[200]  # an exact tie, which a merge must not order its own way
    candidates = np.ones(400, dtype=bool)
    rows, scores, _ = compute_table(vectors, candidates, n=width)
    floor = neighbours.list_floor(scores, rows)
    monkeypatch.setattr(neighbours, "compute_table", counting)
    for step in range(8):
        searched.clear()
        moved = rng.choice(400, size=3, replace=False)
        vectors[moved] = random_unit(3, 16, 20 + step)
        flip = rng.choice(400, size=3, replace=False)
        candidates[flip] = ~candidates[flip]
        back = flip[candidates[flip]]  # published again, same vector: not searched itself
        # each entry's payload: its flat place in the old table, carried with it
        places = np.arange(rows.size, dtype=np.float32).reshape(rows.shape)
        old_rows = rows.copy()
        rows, scores, floor, (place,) = neighbours.update_lists(
            vectors, candidates, rows, scores, floor, np.union1d(moved, back), n=n,
            width=width, reembedded=moved, payloads=[places])
        full_rows, full_scores, _ = real(vectors, candidates, n=n)
        assert np.array_equal(rows[:, :n], full_rows), step
        assert np.allclose(scores[:, :n], full_scores, atol=1e-5), step
        # the moved rows' own lists come from one scan; searched again: only the few lists
        # that lost more than their reserve (or hold the tie), never all
        assert sum(searched) < 40, (step, searched)
        carried = ~np.isnan(place)
        assert (rows[carried] >= 0).all()
        # a carried payload is the one of the same entry: the same candidate's
        assert np.array_equal(old_rows.ravel()[place[carried].astype(np.int64)], rows[carried])
        assert carried.sum() > 0.8 * (rows >= 0).sum()  # most entries were carried


def test_lists_that_lose_a_removed_article_take_their_next_entry_in() -> None:
    import recommender.neighbours as neighbours

    n, width = 10, 14
    vectors = random_unit(300, 16, 11)
    candidates = np.ones(300, dtype=bool)
    rows, scores, _ = compute_table(vectors, candidates, n=width)
    floor = neighbours.list_floor(scores, rows)
    removed = np.array([17, 140])
    mapping = np.full(300, -1, dtype=np.int64)
    kept = np.setdiff1d(np.arange(300), removed)
    mapping[kept] = np.arange(len(kept))
    # the previous lists renumbered, as an update carries them: a removed article's entries
    # are GONE, and the lists that held one are not otherwise touched by the update
    old = rows[kept]
    old = np.where(old >= 0, mapping[np.clip(old, 0, None)], -1)
    old[(old < 0) & (rows[kept] >= 0)] = neighbours.GONE
    assert (old == neighbours.GONE).any(axis=1).sum() > 5
    new_rows, new_scores, _, _ = neighbours.update_lists(
        vectors[kept], candidates[kept], old.astype(np.int32), scores[kept].copy(),
        floor[kept], np.zeros(0, dtype=np.int64), n=n, width=width,
        reembedded=np.zeros(0, dtype=np.int64))
    full_rows, full_scores, _ = compute_table(vectors[kept], candidates[kept], n=n)
    assert np.array_equal(new_rows[:, :n], full_rows)
    assert np.allclose(new_scores[:, :n], full_scores, atol=1e-5)


def test_a_metadata_only_update_searches_no_list() -> None:
    import recommender.neighbours as neighbours

    vectors = random_unit(300, 16, 9)
    candidates = np.ones(300, dtype=bool)
    candidates[5] = False
    rows, scores, _ = compute_table(vectors, candidates, n=14)
    floor = neighbours.list_floor(scores, rows)
    candidates[5] = True  # published now; its vector is the one stored
    new_rows, _, _, (place,) = neighbours.update_lists(
        vectors, candidates, rows, scores, floor, np.array([5]), n=10, width=14,
        reembedded=np.zeros(0, dtype=np.int64),
        payloads=[np.zeros(rows.shape, dtype=np.float32)])
    full_rows, _, _ = compute_table(vectors, candidates, n=10)
    assert np.array_equal(new_rows[:, :10], full_rows)
    # every list kept its entries and at most took article 5 in: nothing was searched again
    assert (~np.isnan(place) | (new_rows == 5) | (new_rows < 0)).all()


def test_updates_by_rows_give_the_version_a_full_build_gives(
        tmp_path: Path, tiny_records: list[dict[str, Any]]) -> None:
    from recommender.store import build_columns

    extra = [{"id": f"x{i}", "title": f"Filler story number {i}", "tags": [f"tag{i % 3}"],
              "section": f"s{i % 4}", "body": f"unrelated filler words {i} " * 3,
              **({"metadata": {"translation_of": f"x{i + 1}"}} if i % 10 == 0 else {})}
             for i in range(40)]
    records = tiny_records + extra[:30]
    a = tmp_path / "updated"
    build_index(a, records, embedder=HashingEmbedder(64))
    merged = {r["id"]: r for r in records}
    updates = [
        [dict(tiny_records[6], body="Markets rallied after the bank paused."), *extra[30:35]],
        [dict(tiny_records[1], status="draft", tags=["new tag"], section="Elsewhere")],
        [dict(extra[3], title="Portmere harbour bridge cables"), *extra[35:]],
        [],  # a removal alone: the lists that held it take their next entry in
    ]
    removals = {1: ["x7"], 3: ["x12"]}
    for step, update in enumerate(updates):
        report = build_index(a, update, embedder=HashingEmbedder(64), incremental=True,
                             delete=removals.get(step, ()))
        assert report.neighbours_mode == "incremental"
        merged.update({r["id"]: r for r in update})
        for gone in removals.get(step, ()):
            merged.pop(gone)
    full = tmp_path / "full"
    build_index(full, list(merged.values()), embedder=HashingEmbedder(64))
    got = IndexVersion(IndexDirectory(a).current_path())
    want = IndexVersion(IndexDirectory(full).current_path())
    assert got.ids == want.ids
    assert got.all_articles() == want.all_articles()
    assert got.content_hashes() == want.content_hashes()
    assert np.array_equal(got.vectors, want.vectors)
    rebuilt = build_columns(got.all_articles())  # what the spliced columns must say
    for name in ("published", "timestamp", "paywalled", "title_key", "body_key", "original",
                 "tag_indptr"):
        assert np.array_equal(getattr(got.columns, name), getattr(rebuilt, name),
                              equal_nan=name == "timestamp"), name
    for column, table in (("language", "languages"), ("section", "sections"),
                          ("story", "stories")):
        decode = [getattr(got.columns, table)[c] if c >= 0 else None
                  for c in getattr(got.columns, column)]
        assert decode == [getattr(rebuilt, table)[c] if c >= 0 else None
                          for c in getattr(rebuilt, column)], column
        assert sorted(getattr(got.columns, table)) == sorted(getattr(rebuilt, table))
    assert [got.columns.tags[c] for c in got.columns.tag_codes] == \
        [rebuilt.tags[c] for c in rebuilt.tag_codes]
    got_table, want_table = got.neighbour_table(), want.neighbour_table()
    assert got_table is not None and want_table is not None
    assert np.array_equal(got_table[0], want_table[0])
    assert np.allclose(got_table[1], want_table[1], atol=1e-5)
    # the table's lexical scores are those of the version's own TF-IDF rows
    from recommender.lexical import lexical_scores

    for row in range(len(got.ids)):
        found = np.asarray(got_table[0][row])
        found = found[found >= 0].astype(np.int64)
        for part, matrix in ((2, got.lexical()), (3, got.names())):
            assert np.allclose(np.asarray(got_table[part][row][:len(found)]),
                               lexical_scores(matrix, row, found), atol=1e-5), (row, part)


def test_a_metadata_only_update_shares_the_vectors_file(
        tiny_index: Path, tiny_records: list[dict[str, Any]]) -> None:
    before = IndexDirectory(tiny_index).current_path()
    report = build_index(tiny_index, [dict(tiny_records[0], section="Other")],
                         embedder=HashingEmbedder(64), incremental=True)
    assert report.embedded == 0 and report.changed == 1
    after = IndexDirectory(tiny_index).current_path()
    assert (after / "vectors.npy").stat().st_ino == (before / "vectors.npy").stat().st_ino


def _fillers(count: int) -> list[dict[str, Any]]:
    return [{"id": f"x{i}", "title": f"Filler story number {i}",
             "body": f"unrelated filler words {i} " * 3} for i in range(count)]


def _vectors_of(index: Path) -> tuple[Path, np.ndarray]:
    live = IndexDirectory(index).current_path()
    return live, np.array(IndexVersion(live).vectors)


def test_an_update_shares_the_base_vectors_file_and_writes_only_the_changed_rows(
        tmp_path: Path, tiny_records: list[dict[str, Any]]) -> None:
    from recommender import store

    index = tmp_path / "index"
    tiny_records = tiny_records + _fillers(30)  # (few enough changes for no lexical refit)
    n = len(tiny_records)
    build_index(index, tiny_records, embedder=HashingEmbedder(64))
    first, first_vectors = _vectors_of(index)
    edited = dict(tiny_records[2], body="Harbour cranes stood idle as dockers walked out.")
    added = {"id": "new1", "title": "Dockers strike at the harbour", "body": "Cranes idle."}
    build_index(index, [edited, added], embedder=HashingEmbedder(64), incremental=True)
    second, second_vectors = _vectors_of(index)
    # the base file is the first version's, untouched: only the two new vectors were written
    assert (second / "vectors.npy").stat().st_ino == (first / "vectors.npy").stat().st_ino
    rows, values = store.read_patch(second)
    assert rows.tolist() == [2, n] and values.shape == (2, 64)
    assert np.array_equal(IndexVersion(first).vectors, first_vectors)  # the old version reads
    assert np.array_equal(second_vectors[:n][np.arange(n) != 2],
                          first_vectors[np.arange(n) != 2])
    # what a full build of the same articles stores
    records = [edited if r["id"] == edited["id"] else r for r in tiny_records] + [added]
    build_index(tmp_path / "full", records, embedder=HashingEmbedder(64))
    assert np.array_equal(second_vectors, _vectors_of(tmp_path / "full")[1])
    # a later update keeps the earlier patch rows and adds its own
    build_index(index, [dict(tiny_records[5], title="Bridge cables replaced")],
                embedder=HashingEmbedder(64), incremental=True)
    third, third_vectors = _vectors_of(index)
    assert (third / "vectors.npy").stat().st_ino == (first / "vectors.npy").stat().st_ino
    assert store.read_patch(third)[0].tolist() == [2, 5, n]
    assert np.array_equal(third_vectors[np.arange(n + 1) != 5],
                          second_vectors[np.arange(n + 1) != 5])
    # the vectors are read-only: no reader can write into the shared file or its patch
    with pytest.raises(ValueError):
        IndexVersion(third).vectors[0] = 0.0


@pytest.mark.parametrize("why", ["patch full", "removal", "headroom"])
def test_an_update_writes_a_new_base_when_the_patch_cannot_hold_the_change(
        tmp_path: Path, tiny_records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
        why: str) -> None:
    from recommender import store

    index = tmp_path / "index"
    tiny_records = tiny_records + _fillers(30)  # (few enough changes for no lexical refit)
    build_index(index, tiny_records, embedder=HashingEmbedder(64))
    build_index(index, [dict(tiny_records[3], body="A patched row first.")],
                embedder=HashingEmbedder(64), incremental=True)
    first, _ = _vectors_of(index)
    assert store.read_patch(first)[0].tolist() == [3]
    records = {r["id"]: r for r in tiny_records}
    records[tiny_records[3]["id"]] = dict(tiny_records[3], body="A patched row first.")
    update = [dict(tiny_records[7], body="Then another one.")]
    delete: list[str] = []
    if why == "patch full":
        monkeypatch.setattr(store, "PATCH_LIMIT", 0.0)
        monkeypatch.setattr(store, "PATCH_MIN_ROWS", 1)
    elif why == "removal":
        delete = [tiny_records[0]["id"]]
        records.pop(delete[0])
    else:
        monkeypatch.setattr(store, "headroom", lambda count: 0)
        build_index(tmp_path / "tight", tiny_records,
                    embedder=HashingEmbedder(64))
        index = tmp_path / "tight"
        records = {r["id"]: r for r in tiny_records}
        first, _ = _vectors_of(index)
        update = [{"id": "new1", "title": "Dockers strike", "body": "Cranes idle."}]
    records.update({r["id"]: r for r in update})
    build_index(index, update, embedder=HashingEmbedder(64), incremental=True, delete=delete)
    after, vectors = _vectors_of(index)
    assert (after / "vectors.npy").stat().st_ino != (first / "vectors.npy").stat().st_ino
    assert not store.read_patch(after)[0].size  # every row in the new base
    build_index(tmp_path / "full", list(records.values()), embedder=HashingEmbedder(64))
    assert np.array_equal(vectors, _vectors_of(tmp_path / "full")[1])


def test_a_damaged_vector_patch_is_a_clear_error(tiny_index: Path,
                                                tiny_records: list[dict[str, Any]]) -> None:
    from recommender.errors import IndexCorrupt

    build_index(tiny_index, [dict(tiny_records[1], body="Changed words here.")],
                embedder=HashingEmbedder(64), incremental=True)
    live = IndexDirectory(tiny_index).current_path()
    np.save(live / "vectors_patch_rows.npy", np.array([1, 40], dtype=np.int64))
    with pytest.raises(IndexCorrupt, match="vector patch"):
        IndexVersion(live)


def test_spliced_tfidf_rows_are_the_carried_and_fresh_rows(tmp_path: Path) -> None:
    import scipy.sparse as sp

    from recommender.lexical import FEATURES, read_lexical, splice_lexical, write_lexical

    rng = np.random.default_rng(3)
    dense = sp.random(40, 30, density=0.2, dtype=np.float32, random_state=1).toarray()
    dense[5] = 0  # an empty row among them
    old = sp.csr_matrix(sp.hstack([dense, sp.csr_matrix((40, FEATURES - 30))]))
    fresh = sp.csr_matrix(sp.hstack([
        sp.random(9, 30, density=0.3, dtype=np.float32, random_state=2),
        sp.csr_matrix((9, FEATURES - 30))]))
    # rows 3, 17 and 30 removed, the rest shifted down, 9 rows replaced or added
    kept = np.delete(np.arange(40), [3, 17, 30])
    count = len(kept) + 4
    fresh_rows = np.sort(rng.choice(count, 9, replace=False))
    fresh_rows[-4:] = np.arange(len(kept), count)  # the last four are new rows
    fresh_rows = np.unique(fresh_rows)
    fresh = fresh[:len(fresh_rows)]
    old_rows = np.full(count, -1)
    old_rows[:len(kept)] = kept
    old_rows[fresh_rows] = -1
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    write_lexical(before, old, old)
    assert np.array_equal(read_lexical(before, "names")[:, :30].toarray(), dense)
    spliced = splice_lexical(after, before, "names", old_rows, fresh, fresh_rows, count)
    assert spliced.shape == (count, FEATURES) and spliced[:, 30:].nnz == 0
    got = spliced[:, :30].toarray()
    assert np.array_equal(read_lexical(after, "names")[:, :30].toarray(), got)  # as read
    want = np.zeros((count, 30), dtype=np.float32)
    carried = old_rows >= 0
    want[carried] = dense[old_rows[carried]]
    want[fresh_rows] = fresh[:, :30].toarray()
    assert np.array_equal(got, want)


def _as_format_6(version_dir: Path) -> None:
    """Rewrite a version's files the way format 6 laid them out: the TF-IDF rows in .npz
    files, the table's reserve in files of its own."""
    import json

    import scipy.sparse as sp

    from recommender.lexical import read_lexical

    for name in ("lexical", "names"):
        sp.save_npz(version_dir / f"{name}.npz", sp.csr_matrix(read_lexical(version_dir, name)),
                    compressed=False)
        for part in ("data", "indices", "indptr"):
            (version_dir / f"{name}_{part}.npy").unlink()
    n = np.load(version_dir / "neighbour_lexical.npy").shape[1]
    for name, reserve in (("neighbours.npy", "neighbour_reserve.npy"),
                          ("neighbour_scores.npy", "neighbour_reserve_scores.npy")):
        full = np.load(version_dir / name)
        np.save(version_dir / reserve, full[:, n:])
        np.save(version_dir / name, full[:, :n])
    manifest = json.loads((version_dir / "manifest.json").read_text())
    (version_dir / "manifest.json").write_text(json.dumps({**manifest, "format_version": 6}))


def test_a_format_6_index_serves_as_before_and_its_update_writes_format_7(
        tiny_index: Path, tiny_records: list[dict[str, Any]]) -> None:
    expected = Recommender.open(tiny_index, now=NOW).page("t01")
    live = IndexDirectory(tiny_index).current_path()
    _as_format_6(live)
    old = Recommender.open(tiny_index, now=NOW)
    assert old.snapshot().manifest.format_version == 6
    assert old.page("t01") == expected
    changed = dict(tiny_records[2], body=tiny_records[2]["body"] + " A late correction.")
    report = build_index(tiny_index, [changed], embedder=HashingEmbedder(64), incremental=True)
    assert report.changed == 1
    new = IndexDirectory(tiny_index).current_path()
    assert (new / "lexical_data.npy").is_file() and not (new / "lexical.npz").is_file()
    assert not (new / "neighbour_reserve.npy").is_file()
    # the next update of it is incremental again, and the lists are a full build's
    again = dict(tiny_records[3], body=tiny_records[3]["body"] + " Updated.")
    report = build_index(tiny_index, [again], embedder=HashingEmbedder(64), incremental=True)
    assert report.neighbours_mode == "incremental"
    records = [changed if r["id"] == changed["id"] else again if r["id"] == again["id"] else r
               for r in tiny_records]
    full = tiny_index.parent / "full"
    build_index(full, records, embedder=HashingEmbedder(64))
    from recommender.lexical import lexical_scores

    version = IndexVersion(IndexDirectory(tiny_index).current_path())
    got = version.neighbour_table()
    want = IndexVersion(IndexDirectory(full).current_path()).neighbour_table()
    assert got is not None and want is not None
    assert np.array_equal(got[0], want[0])
    assert np.allclose(got[1], want[1], atol=1e-5)
    for row in range(len(version.ids)):  # TF-IDF scores of the version's own rows
        found = np.asarray(got[0][row])
        found = found[found >= 0].astype(np.int64)
        assert np.allclose(np.asarray(got[2][row][:len(found)]),
                           lexical_scores(version.lexical(), row, found), atol=1e-5)


def test_a_page_of_a_large_index_reads_its_rows_from_the_files_not_the_memory_maps(
        tmp_path: Path, tiny_records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """A server reads a few random rows a page; through a memory map each costs resident
    memory up to the page cache's folio around it (up to 2 MB), so the pages of an index
    larger than MAP_LIMIT read with pread (here every index is larger)."""
    from recommender import store

    monkeypatch.setattr(store, "MAP_LIMIT", 0)
    index = tmp_path / "index"
    records = tiny_records + _fillers(30)
    build_index(index, records, embedder=HashingEmbedder(64))
    edited = dict(records[2], body="Harbour cranes stood idle as dockers walked out.")
    build_index(index, [edited], embedder=HashingEmbedder(64), incremental=True)
    live = IndexDirectory(index).current_path()
    assert (live / "vectors_patch_rows.npy").is_file()  # a patched row among them
    version = IndexVersion(live)
    rows = np.array([2, 0, 31, 2, 17], dtype=np.int64)
    assert np.array_equal(version.vectors_at(rows), np.asarray(version.vectors)[rows])
    table = version.neighbour_table()
    assert table is not None
    for row in (0, 2, 33):
        got = version.table_row(row)
        assert got is not None
        for part, whole in zip(got, table, strict=True):
            assert np.array_equal(part, np.asarray(whole[row]))
    # pages computed with the memory maps out of reach are the same pages
    plain = tmp_path / "plain"  # (no patch: every vector is read from the file)
    build_index(plain, records, embedder=HashingEmbedder(64))
    rec = Recommender.open(plain, now=NOW, page_memo=0)
    expected = {r["id"]: rec.page(r["id"]) for r in records[:12]}
    rec = Recommender.open(plain, now=NOW, page_memo=0)
    snapshot = rec.snapshot()
    whole = snapshot.neighbour_table()
    assert whole is not None
    snapshot.vectors = Unmapped(snapshot.vectors.shape)  # type: ignore[assignment]
    snapshot._table = tuple(Unmapped(part.shape) for part in whole)  # type: ignore[assignment]
    for article_id, page in expected.items():
        assert rec.page(article_id) == page, article_id


class Unmapped:
    """Stands for a memory-mapped array that must not be read."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __getitem__(self, key: Any) -> Any:
        raise AssertionError("a page read rows through a memory map")


def test_prefetch_asks_the_kernel_for_every_byte_of_the_files_a_page_reads(
        tiny_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a reboot, or a build whose memory pushed the files out of the page cache, each
    row a page of a large index reads would wait on the disk: prefetch reads them ahead,
    the vectors and all four table files whole (one posix_fadvise call reads ahead only a
    few MB, so it asks chunk by chunk)."""
    import os

    from recommender import store

    monkeypatch.setattr(store, "MAP_LIMIT", 0)
    monkeypatch.setattr(store, "PREFETCH_CHUNK", 1024)  # several chunks for a tiny file
    asked: dict[str, list[tuple[int, int]]] = {}

    def advise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_WILLNEED
        asked.setdefault(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), []).append(
            (offset, length))

    monkeypatch.setattr(os, "posix_fadvise", advise)
    live = IndexDirectory(tiny_index).current_path()
    rec = Recommender.open(tiny_index)
    total = rec.prefetch()
    files = ["vectors.npy", "neighbours.npy", "neighbour_scores.npy", "neighbour_lexical.npy",
             "neighbour_names.npy"]
    assert sorted(asked) == sorted(files)
    expected = 0
    for name in files:
        size = (live / name).stat().st_size
        header = np.load(live / name, mmap_mode="r").offset
        covered = np.zeros(size, dtype=bool)
        for offset, length in asked[name]:
            covered[offset:offset + length] = True
        assert covered[header:].all() and len(asked[name]) > 1, name
        expected += size - header
    assert total == expected


def test_versions_a_server_drops_leave_no_open_files_behind(
        tiny_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server opens each new version and drops the old one (readers may still hold it):
    the files its pages read with pread close with it."""
    import gc
    import os

    from recommender import store

    monkeypatch.setattr(store, "MAP_LIMIT", 0)  # (read with pread, as a large index is)
    live = IndexDirectory(tiny_index).current_path()
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        version = IndexVersion(live)
        version.vectors_at([0, 1])
        del version
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


@pytest.mark.parametrize("event_similarity", [None, 0.3])
def test_copies_and_one_event_are_ruled_out_from_the_candidate_lists_as_from_the_vectors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, event_similarity: float | None
        ) -> None:
    """The copy and one-event rules between a page's links read the links' own candidate
    lists (a large index would otherwise read the pool's vectors a row at a time): the same
    links and the same "stands for" lists as the vectors give. A rule set below what a list
    can vouch for (its last score) falls back to the vectors."""
    import dataclasses
    import json

    from recommender import ranking
    from recommender.config import Config
    from recommender.samples import sample_corpus_path

    records = [json.loads(line) for line in sample_corpus_path().read_text().splitlines()]
    index = tmp_path / "index"
    build_index(index, records, embedder=HashingEmbedder(256), neighbours=8)
    config = Config()
    if event_similarity is not None:
        config = dataclasses.replace(config, ranking=dataclasses.replace(
            config.ranking, event_similarity=event_similarity))
    answered = {"lists": 0, "vectors": 0}
    cosines = ranking.Prepared.cosines

    def counted(self: Any, *args: Any) -> Any:
        out = cosines(self, *args)
        answered["vectors" if out is None else "lists"] += 1
        return out

    monkeypatch.setattr(ranking.Prepared, "cosines", counted)
    rec = Recommender.open(index, config=config, now=NOW, page_memo=0)
    pages = {r["id"]: rec.page(r["id"]) for r in records}
    monkeypatch.setattr(ranking.Prepared, "cosines", lambda self, *args: None)
    rec = Recommender.open(index, config=config, now=NOW, page_memo=0)
    for article_id, page in pages.items():
        assert rec.page(article_id) == page, article_id
    collapsed = sum(len(link.reason.get("event_collapsed_from", [])) for page in pages.values()
                    for links in page.values() for link in links)
    assert collapsed > 0  # the rules had pairs to rule out
    if event_similarity is None:
        assert answered["lists"] > 0 and answered["vectors"] == 0
    else:
        assert answered["vectors"] > 0
