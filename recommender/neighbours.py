"""Precomputed relevance candidates: for every article, its N nearest published articles by
cosine, computed at build time in batched matrix products, so a page lookup is a read.

The search goes through `vector_index`: exact (the fastest of bf16 + fp32 re-score, torch,
numpy and faiss.knn, timed on the first blocks) up to EXACT_PAIRS, an approximate FAISS
index (HNSW or IVF) beyond; the
build checks the table's recall against exact search on a sample of rows. Each list keeps
RESERVE entries beyond the n served and a floor; an update scans the changed articles against
every vector once (their own lists, and the entries other lists take in above their floors),
so the newest article enters older articles' lists without a full pass, and only a list that
lost more than its reserve is searched again: the served table always equals a full
recomputation (with exact search; with an approximate index, as good as its recall).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .lexical import pair_scores
from .vector_index import (
    BLOCK,
    SMALL_SELECTION,
    ApproximateIndex,
    ExactIndex,
    HNSWIndex,
    IVFIndex,
    Partition,
    VectorIndex,
    default_exact_method,
    recall_at_k,
    select_topk,
)

ROWS_FILE = "neighbours.npy"
SCORES_FILE = "neighbour_scores.npy"
LEXICAL_FILE = "neighbour_lexical.npy"
NAMES_FILE = "neighbour_names.npy"
OLD_RESERVE_FILE = "neighbour_reserve.npy"  # format 6 kept the reserve in files of its own
FLOOR_FILE = "neighbour_floor.npy"
TABLE_FILES = (ROWS_FILE, SCORES_FILE, LEXICAL_FILE, NAMES_FILE)  # the parts of a Table
DEFAULT_N = 50
# Entries kept per list beyond the n served: a list that loses up to this many to changed
# or withdrawn articles is completed from what it holds, without a search.
RESERVE = 16
# An entry of a carried list whose article was removed (set by the caller's renumbering):
# the list lost it, as it loses an entry whose article changed.
GONE = -2
TIE = 1e-6  # scores this close are treated as an exact tie (fp32 sums differ in the last bits)
# Exact search up to this many query x candidate pairs (a full table of ~140k articles),
# approximate beyond: exact grows with n², an approximate index with about n log n.
EXACT_PAIRS = 2 * 10**10
APPROXIMATE = "ivf"  # beyond EXACT_PAIRS (README: HNSW vs IVF, synthetic and real vectors)
RECALL_TARGET = 0.99  # an approximate index's effort is raised until a sample reaches it
TUNE_SAMPLE = 500     # queries the effort is tuned on
RECALL_SAMPLE = 1000  # rows whose lists are checked against exact search at each build
RECALL_TOLERANCE = 1e-5  # cosines this close count as ties in the recall check

ProgressCallback = Callable[[int, int], None]


def best_first(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The order of each list's entries (axis 1): best score first, and scores within TIE of
    the one before them (a chain of near-ties) in row order, so that a list comes out the
    same whichever arithmetic computed its scores (a product of many rows or of one, bf16
    re-scored or fp32: they differ in the last bits)."""
    first = np.argsort(-values, axis=1, kind="stable")
    ranked = np.take_along_axis(values, first, axis=1)
    with np.errstate(invalid="ignore"):
        gap = -np.diff(ranked, axis=1)
    # only the lists with two finite scores within TIE (exact ties too) are ordered again
    near = np.flatnonzero((gap <= TIE).any(axis=1))
    if len(near):
        group = np.concatenate([np.zeros((len(near), 1), dtype=np.int64),
                                np.cumsum(~(gap[near] <= TIE), axis=1)], axis=1)
        again = np.lexsort((np.take_along_axis(rows[near], first[near], axis=1), group),
                           axis=1)
        first[near] = np.take_along_axis(first[near], again, axis=1)
    return first


def vector_index_for(vectors: np.ndarray, ids: np.ndarray, query_count: int,
                     method: str = "auto") -> VectorIndex:
    """The index a table of `query_count` rows is computed with. method: "auto" (exact up to
    EXACT_PAIRS query x candidate pairs, else approximate), "exact" (exact, method timed),
    one of EXACT_METHODS, "approximate" (APPROXIMATE), "hnsw" or "ivf"."""
    if method == "auto":
        method = "exact" if query_count * len(vectors) <= EXACT_PAIRS else APPROXIMATE
    if method == "approximate":
        method = APPROXIMATE
    if method == "ivf":
        return IVFIndex(vectors, ids)
    if method == "hnsw":
        return HNSWIndex(vectors, ids)
    if method == "exact":  # too few blocks to time every way: the expected fastest
        method = ("numpy" if query_count * len(vectors) <= SMALL_SELECTION
                  else default_exact_method() if query_count <= 2 * BLOCK else "auto")
    return ExactIndex(vectors, ids, method=method)


def compute_table(vectors: np.ndarray, candidates: np.ndarray, n: int = DEFAULT_N,
                  queries: np.ndarray | None = None,
                  progress: ProgressCallback | None = None, method: str = "auto"
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-n candidate rows and cosines of each query row, and the method: `full_table`
    without the partition."""
    rows, scores, used, _ = _table(vectors, candidates, n, queries, progress, method, False)
    return rows, scores, used


def full_table(vectors: np.ndarray, candidates: np.ndarray, n: int = DEFAULT_N,
               queries: np.ndarray | None = None,
               progress: ProgressCallback | None = None, method: str = "auto"
               ) -> tuple[np.ndarray, np.ndarray, str, Partition | None]:
    """Top-n candidate rows (int32, -1 padded) and cosines (float32) for each query row, and
    the method that computed them ("exact (bf16)", "hnsw-flat (M 32, efSearch 128)", ...).

    vectors: (rows, d) unit vectors; candidates: bool mask of rows that may be recommended
    (published); queries: the rows to compute (default: all). A row is never its own
    candidate. method: see `vector_index_for`; an approximate index first raises its search
    effort until recall@n on a sample of the queries reaches RECALL_TARGET. partition: an IVF
    index's lists over every row (kept with the version: `update_lists` searches with it),
    else None.
    """
    return _table(vectors, candidates, n, queries, progress, method, True)


def _table(vectors: np.ndarray, candidates: np.ndarray, n: int, queries: np.ndarray | None,
           progress: ProgressCallback | None, method: str, keep_partition: bool
           ) -> tuple[np.ndarray, np.ndarray, str, Partition | None]:
    total = len(vectors)
    query_rows = np.arange(total) if queries is None else np.asarray(queries, dtype=np.int64)
    cand_rows = np.flatnonzero(candidates)
    out_rows = np.full((len(query_rows), n), -1, dtype=np.int32)
    out_scores = np.zeros((len(query_rows), n), dtype=np.float32)
    if len(cand_rows) == 0 or len(query_rows) == 0:
        return out_rows, out_scores, "none", None
    width = min(n, len(cand_rows))
    if len(query_rows) * total <= SMALL_SELECTION and (
            method in ("exact", "numpy")
            or (method == "auto" and len(query_rows) * len(cand_rows) <= EXACT_PAIRS)):
        # a few queries: against every vector in place (no copy of the candidates), the
        # others masked out; exact fp32
        found_scores = np.asarray(vectors[query_rows], dtype=np.float32) @ \
            np.asarray(vectors, dtype=np.float32).T
        found_scores[:, ~np.asarray(candidates, dtype=bool)] = -np.inf
        found_scores[np.arange(len(query_rows)), query_rows] = -np.inf
        values, found = select_topk(found_scores, width)
        order = best_first(values, found)
        values = np.take_along_axis(values, order, axis=1)
        found = np.take_along_axis(found, order, axis=1)
        present = np.isfinite(values)
        out_rows[:, :width] = np.where(present, found, -1)
        out_scores[:, :width] = np.where(present, values, 0.0)
        return out_rows, out_scores, "exact (numpy)", None
    cand_vectors = np.ascontiguousarray(vectors[cand_rows], dtype=np.float32)
    index = vector_index_for(cand_vectors, cand_rows, len(query_rows), method)
    if isinstance(index, ApproximateIndex):
        sample = np.random.default_rng(0).choice(
            len(query_rows), min(TUNE_SAMPLE, len(query_rows)), replace=False)
        index.tune(np.ascontiguousarray(vectors[query_rows[sample]], dtype=np.float32),
                   width + 1, RECALL_TARGET)
    step = BLOCK * 8
    for start in range(0, len(query_rows), step):
        block = query_rows[start:start + step]
        # One more than asked for: the row itself is dropped when it is a candidate.
        values, found = index.search(np.ascontiguousarray(vectors[block], dtype=np.float32),
                                     width + 1)
        values = np.where(found == block[:, None], -np.inf, values)
        # best first, exact ties in row order: the same lists whatever k or block
        order = best_first(values, found)[:, :width]
        values = np.take_along_axis(values, order, axis=1)
        found = np.take_along_axis(found, order, axis=1)
        present = np.isfinite(values) & (found >= 0)
        out_rows[start:start + len(block), :width] = np.where(present, found, -1)
        out_scores[start:start + len(block), :width] = np.where(present, values, 0.0)
        if progress is not None:
            progress(min(start + step, len(query_rows)), len(query_rows))
    partition = index.partition(vectors) if keep_partition and isinstance(index, IVFIndex) \
        else None
    return out_rows, out_scores, index.describe(), partition


def table_recall(vectors: np.ndarray, candidates: np.ndarray, rows: np.ndarray,
                 sample: int = RECALL_SAMPLE, seed: int = 0) -> tuple[float, int]:
    """recall@n of a table's lists against exact fp32 search, on a random sample of rows:
    (recall, sample size)."""
    if len(rows) == 0 or rows.shape[1] == 0:
        return 1.0, 0
    k = rows.shape[1]
    picked = np.sort(np.random.default_rng(seed).choice(len(rows), min(sample, len(rows)),
                                                        replace=False))
    found = np.asarray(rows[picked])
    # the true cosines of what the table holds, not the scores it stored
    true = np.einsum("qd,qkd->qk", np.asarray(vectors[picked], dtype=np.float32),
                     np.asarray(vectors[np.clip(found, 0, None)], dtype=np.float32))
    valid = found >= 0
    valid[valid] &= np.asarray(candidates, dtype=bool)[found[valid]]
    found = np.where(valid, found, -1)
    true = np.where(valid, true, -np.inf)
    exact = np.full(found.shape, -1, dtype=np.int64)
    exact_scores = np.full(found.shape, -np.inf, dtype=np.float32)
    # A full list's exact top k all score at least its lowest true cosine, so the exact search
    # need only keep what scores that much (a few entries a row, no selection over all rows);
    # a list with gaps is searched in full.
    full = valid.all(axis=1)
    if full.any():
        floors = true[full].min(axis=1) - RECALL_TOLERANCE
        exact[full], exact_scores[full] = _exact_above(vectors, candidates, picked[full], k,
                                                       floors)
    if (~full).any():
        exact[~full], exact_scores[~full] = _exact_sample(vectors, candidates, picked[~full], k)
    return recall_at_k(found, exact, true, exact_scores, RECALL_TOLERANCE), len(picked)


def _sample_blocks(vectors: np.ndarray, candidates: np.ndarray, queries: np.ndarray, k: int
                   ) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, fp32 cosines of the sample against vectors[start:stop]), slice by slice
    of the memory-mapped vectors, with non-candidates and each query itself at -inf."""
    query_vectors = np.asarray(vectors[queries], dtype=np.float32)
    candidates = np.asarray(candidates, dtype=bool)
    step = max(4 * k, SMALL_SELECTION // 4 // max(len(queries), 1))
    for start in range(0, len(vectors), step):
        stop = min(start + step, len(vectors))
        sims = query_vectors @ np.asarray(vectors[start:stop], dtype=np.float32).T
        sims[:, ~candidates[start:stop]] = -np.inf
        inside = (queries >= start) & (queries < stop)
        sims[np.flatnonzero(inside), queries[inside] - start] = -np.inf
        yield start, stop, sims


def _exact_above(vectors: np.ndarray, candidates: np.ndarray, queries: np.ndarray, k: int,
                 floors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact fp32 top k among the candidates for a sample of rows (never itself), given for
    each a floor that at least k candidates reach: numpy products over slices of the
    memory-mapped vectors, keeping only what scores at or above the floor, which rises to the
    k-th best kept so far (a few entries a row, no selection over every row)."""
    floors = np.asarray(floors, dtype=np.float32).copy()
    query = np.zeros(0, dtype=np.int64)
    row = np.zeros(0, dtype=np.int64)
    score = np.zeros(0, dtype=np.float32)
    for start, _stop, sims in _sample_blocks(vectors, candidates, queries, k):
        # a floor far below (a list with a stray entry) would keep much of the block: the
        # block's own k-th best is a floor too
        many = np.flatnonzero((sims >= floors[:, None]).sum(axis=1) > 4 * k)
        if len(many) and sims.shape[1] >= k:
            kth = -np.partition(-sims[many], k - 1, axis=1)[:, k - 1]
            floors[many] = np.maximum(floors[many], kth)
        hit_query, column = np.nonzero(sims >= floors[:, None])
        query = np.concatenate([query, hit_query])
        row = np.concatenate([row, column + start])
        score = np.concatenate([score, sims[hit_query, column]])
        # keep each query's best k (ties at the k-th kept too), and raise its floor to it
        order = np.lexsort((row, -score, query))
        query, row, score = query[order], row[order], score[order]
        starts = np.searchsorted(query, np.arange(len(queries)))
        rank = np.arange(len(query)) - starts[query]
        counts = np.bincount(query, minlength=len(queries))
        reached = counts >= k
        floors[reached] = score[starts[reached] + k - 1]
        keep = (rank < k) | (score >= floors[query])
        query, row, score = query[keep], row[keep], score[keep]
    out_rows = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    starts = np.searchsorted(query, np.arange(len(queries)))
    ends = np.searchsorted(query, np.arange(len(queries)), side="right")
    for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        if b - a >= k:
            take = best_first(score[a:b][None, :], row[a:b][None, :])[0][:k]
            out_rows[i], out_scores[i] = row[a:b][take], score[a:b][take]
    short = ends - starts < k  # the floor was not reached k times after all: searched in full
    if short.any():
        out_rows[short], out_scores[short] = _exact_sample(vectors, candidates, queries[short],
                                                           k)
    return out_rows, out_scores


def _exact_sample(vectors: np.ndarray, candidates: np.ndarray, queries: np.ndarray, k: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Exact fp32 top k among the candidates for a sample of rows (never itself): numpy
    products over slices of the memory-mapped vectors, the best k of each kept as it goes
    (no copy of the vectors, no torch to load, for the recall check of every build)."""
    candidates = np.asarray(candidates, dtype=bool)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), 0), -1, dtype=np.int64)
    for start, stop, sims in _sample_blocks(vectors, candidates, queries, k):
        columns = np.broadcast_to(np.arange(start, stop), sims.shape)
        merged = np.concatenate([best_scores, sims], axis=1)
        merged_rows = np.concatenate([best_rows, columns], axis=1)
        if merged.shape[1] > k:
            keep = np.argpartition(-merged, k - 1, axis=1)[:, :k]
            merged = np.take_along_axis(merged, keep, axis=1)
            merged_rows = np.take_along_axis(merged_rows, keep, axis=1)
        best_scores, best_rows = merged, merged_rows
    order = best_first(best_scores, best_rows)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    best_rows = np.where(np.isfinite(best_scores), np.take_along_axis(best_rows, order, axis=1),
                         -1)
    out_rows = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_rows[:, :best_rows.shape[1]], out_scores[:, :best_rows.shape[1]] = best_rows, \
        best_scores
    return out_rows, out_scores


def update_table(vectors: np.ndarray, candidates: np.ndarray, old_rows: np.ndarray,
                 old_scores: np.ndarray, changed: np.ndarray, n: int = DEFAULT_N
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Bring an n-wide table (no reserve) up to date after an update, equal to a full
    recomputation: `update_lists` with each full list's last score as its floor."""
    floor = list_floor(old_scores, old_rows)
    rows, scores, _, _ = update_lists(vectors, candidates, old_rows, old_scores, floor,
                                      changed, n=n, width=n)
    return rows, scores


def list_floor(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The floor of freshly searched lists: the last score of a full list (every candidate
    left out scores no higher), -inf for a list that holds every candidate."""
    full = rows[:, -1] >= 0 if rows.shape[1] else np.zeros(len(rows), dtype=bool)
    last = scores[:, -1] if rows.shape[1] else np.zeros(len(rows), dtype=np.float32)
    return np.where(full, last, -np.inf).astype(np.float32)


def update_lists(vectors: np.ndarray, candidates: np.ndarray, old_rows: np.ndarray,
                 old_scores: np.ndarray, old_floor: np.ndarray, changed: np.ndarray,
                 n: int = DEFAULT_N, width: int | None = None,
                 reembedded: np.ndarray | None = None, in_place: bool = False,
                 partition: Partition | None = None, payloads: Sequence[np.ndarray] = ()
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Bring a table with a reserve up to date, its first n columns equal to a full
    recomputation: (rows, scores, floor, payloads), `width` (n + reserve) wide.

    Each list holds, best first, every candidate scoring at least its `floor` (up to `width`
    of them; floor -inf: the list holds every candidate). old_*: the previous lists renumbered
    to the new rows (GONE where the article was removed, -1 for no entry). changed: rows
    whose vector is new or that became candidates; reembedded (default: changed): rows whose
    vector is new, whose own lists are searched again. An entry pointing at a changed row or
    at a row no longer a candidate is dropped; every other list then merges in the changed
    candidates' exact scores at or above its floor, and stays exact while it holds at least
    n entries: only lists that lost more than their reserve are searched again. payloads:
    float32 arrays shaped like old_rows or narrower (per-entry values such as lexical
    scores, of the first columns only: an entry beyond them has none), carried with their
    entries; NaN where an entry's value is new or unknown (the caller computes those).
    in_place: old_rows, old_scores (int32 and float32, `width` wide) and the payloads may be
    overwritten (memory maps of the new version's files, say).
    partition: the IVF lists of an approximate table (rows of the new version): the changed
    articles are searched in their nearest lists, as the build searched, not against every
    row.
    """
    width = width or n
    changed = np.unique(np.asarray(changed, dtype=np.int64))
    again = changed if reembedded is None else np.unique(np.asarray(reembedded, dtype=np.int64))
    candidates = np.asarray(candidates, dtype=bool)
    old_width = old_rows.shape[1]
    use = min(width, old_width)
    if in_place and old_width == width:
        rows, scores, carried = old_rows, old_scores, list(payloads)
    else:
        rows = np.full((len(vectors), width), -1, dtype=np.int32)
        scores = np.full((len(vectors), width), -np.inf, dtype=np.float32)
        rows[:, :use], scores[:, :use] = old_rows[:, :use], old_scores[:, :use]
        carried = [np.full((len(vectors), min(width, p.shape[1])), np.nan, dtype=np.float32)
                   for p in payloads]
        for target, payload in zip(carried, payloads, strict=True):
            target[:, :min(use, target.shape[1])] = payload[:, :min(use, target.shape[1])]
    floor = np.asarray(old_floor, dtype=np.float32).copy()
    # an entry stays if it points at an unchanged candidate; an empty one (-1) and a GONE
    # one (-2) read the False values past the end
    stays = np.concatenate([candidates, [False, False]])
    stays[changed] = False
    stale = ~stays[rows]
    altered = (stale & (rows != -1)).any(axis=1)  # lists that lost an entry or gained one
    rows[stale], scores[stale] = -1, -np.inf
    for payload in carried:
        payload[stale[:, :payload.shape[1]]] = np.nan
    new_candidates = changed[candidates[changed]]
    is_again = np.zeros(len(vectors), dtype=bool)
    is_again[again] = True
    if len(again) or len(new_candidates):
        scan = _scan_changed if partition is None else \
            partial(_scan_partitioned, partition=partition)
        pair_rows, pair_cands, pair_scores, own = scan(
            vectors, candidates, floor, again, new_candidates, width)
    else:  # nothing to search (an unchanged rebuild, a delete-only update)
        pair_rows, pair_cands, pair_scores, own = _scan_result(
            [], np.zeros((0, width), dtype=np.int32), np.zeros((0, width), dtype=np.float32))
    if len(again):
        rows[again], scores[again] = own[0], own[1]
        for payload in carried:
            payload[again] = np.nan
        floor[again] = list_floor(own[1], own[0])
    # Only the lists that lost an entry or take a changed candidate in are merged again.
    outside = ~is_again[pair_rows]
    pair_rows, pair_cands, pair_scores = (pair_rows[outside], pair_cands[outside],
                                          pair_scores[outside])
    takes = np.zeros(len(vectors), dtype=bool)
    takes[pair_rows] = True
    altered |= takes
    others = np.flatnonzero(altered & ~is_again)
    by_row = np.argsort(pair_rows, kind="stable")
    pair_rows, pair_cands, pair_scores = pair_rows[by_row], pair_cands[by_row], \
        pair_scores[by_row]
    # each pair's place among its row's pairs, for a padded matrix per block of rows
    rank = np.arange(len(pair_rows)) - np.searchsorted(pair_rows, pair_rows, side="left")
    slot = np.full(len(vectors), -1, dtype=np.int64)
    for start in range(0, len(others), BLOCK * 8):
        block = others[start:start + BLOCK * 8]
        slot[block] = np.arange(len(block))
        mine = slot[pair_rows] >= 0
        slot[block] = -1
        wide = int(rank[mine].max()) + 1 if mine.any() else 0
        extra = np.full((len(block), wide), -np.inf, dtype=np.float32)
        extra_rows = np.full((len(block), wide), -1, dtype=np.int32)
        at = np.searchsorted(block, pair_rows[mine])
        extra[at, rank[mine]] = pair_scores[mine]
        extra_rows[at, rank[mine]] = pair_cands[mine]
        merged_scores = np.concatenate([scores[block], extra], axis=1)
        merged_rows = np.concatenate([rows[block], extra_rows], axis=1)
        known = np.isfinite(merged_scores).sum(axis=1)
        order = best_first(merged_scores, merged_rows)[:, :width]
        values = np.take_along_axis(merged_scores, order, axis=1)
        # more known entries than fit: the list is cut, its floor rises to its last
        floor[block] = np.where(known > width, values[:, -1], floor[block])
        rows[block] = np.take_along_axis(merged_rows, order, axis=1)
        scores[block] = values
        for payload in carried:
            unknown = np.full((len(block), width - payload.shape[1] + wide), np.nan,
                              dtype=np.float32)
            payload[block] = np.take_along_axis(
                np.concatenate([payload[block], unknown], axis=1),
                order[:, :payload.shape[1]], axis=1)
    gone = ~np.isfinite(scores)
    rows[gone] = -1
    for payload in carried:
        payload[gone[:, :payload.shape[1]]] = np.nan
    # A list with a floor (more candidates exist than it holds) and at most n entries no
    # longer knows its n-th and next neighbours: searched again, like the changed rows' own
    # lists. (Near-ties need no search: `best_first` orders them by row whichever arithmetic
    # made their scores, as the full build's search does.)
    short = np.isfinite(floor) & ((rows >= 0).sum(axis=1) <= n)
    search = np.flatnonzero(short)
    if len(search):
        fresh_rows, fresh_scores, _ = compute_table(vectors, candidates, width, queries=search)
        rows[search], scores[search] = fresh_rows, fresh_scores
        for payload in carried:
            payload[search] = np.nan
        floor[search] = list_floor(fresh_scores, fresh_rows)
    empty = rows < 0
    scores[empty] = 0.0
    return rows, scores, floor, carried


def _scan_changed(vectors: np.ndarray, candidates: np.ndarray, floor: np.ndarray,
                  again: np.ndarray, new_candidates: np.ndarray, width: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One pass over every vector against the changed ones, exact fp32: the (row, changed
    candidate, score) pairs at or above the row's floor, and the top `width` candidates of
    each row in `again` (rows, scores: its own list, searched anew)."""
    union = np.union1d(again, new_candidates)
    as_candidate = np.isin(union, new_candidates)
    as_query = np.isin(union, again)
    changed_vectors = np.asarray(vectors[union], dtype=np.float32)
    best_scores = np.full((len(again), 0), -np.inf, dtype=np.float32)
    best_rows = np.full((len(again), 0), -1, dtype=np.int64)
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    # rows per pass: its products and selections stay small (and in numpy)
    step = int(max(256, min(BLOCK * 8, SMALL_SELECTION // max(len(union), 1))))
    for start in range(0, len(vectors), step):
        stop = min(start + step, len(vectors))
        sims = np.asarray(vectors[start:stop], dtype=np.float32) @ changed_vectors.T
        inside = (union >= start) & (union < stop)
        sims[union[inside] - start, np.flatnonzero(inside)] = -np.inf  # never itself
        if len(new_candidates):
            sub = sims if len(new_candidates) == len(union) else sims[:, as_candidate]
            hit_row, hit_col = np.nonzero(sub >= floor[start:stop, None])
            pairs.append((hit_row + start, new_candidates[hit_col], sub[hit_row, hit_col]))
        if len(again):
            mine = (sims if len(again) == len(union) else sims[:, as_query]).T.copy()
            mine[:, ~candidates[start:stop]] = -np.inf
            values, columns = select_topk(mine, min(width, stop - start))
            best_scores = np.concatenate([best_scores, values], axis=1)
            best_rows = np.concatenate([best_rows, columns + start], axis=1)
            if best_scores.shape[1] > width:
                keep = np.argpartition(-best_scores, width - 1, axis=1)[:, :width]
                best_scores = np.take_along_axis(best_scores, keep, axis=1)
                best_rows = np.take_along_axis(best_rows, keep, axis=1)
    own_rows = np.full((len(again), width), -1, dtype=np.int32)
    own_scores = np.zeros((len(again), width), dtype=np.float32)
    if len(again) and best_scores.shape[1]:
        order = best_first(best_scores, best_rows)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_rows = np.take_along_axis(best_rows, order, axis=1)
        present = np.isfinite(best_scores)
        own_rows[:, :best_scores.shape[1]] = np.where(present, best_rows, -1)
        own_scores[:, :best_scores.shape[1]] = np.where(present, best_scores, 0.0)
    return _scan_result(pairs, own_rows, own_scores)


def _scan_partitioned(vectors: np.ndarray, candidates: np.ndarray, floor: np.ndarray,
                      again: np.ndarray, new_candidates: np.ndarray, width: int,
                      partition: Partition
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                 tuple[np.ndarray, np.ndarray]]:
    """`_scan_changed` for an approximate table, the way its IVF search ran: each changed
    vector is compared, in fp32, with the rows of its `partition.nprobe` nearest lists only,
    one matrix product per list (its rows against the changed vectors that probe it). A row
    outside those lists is missed as the build's search would miss it; the build checks the
    updated table's recall on a sample."""
    import faiss

    union = np.union1d(again, new_candidates)
    as_candidate = np.isin(union, new_candidates)
    position = np.full(len(vectors), -1, dtype=np.int64)
    position[again] = np.arange(len(again))
    changed_vectors = np.asarray(vectors[union], dtype=np.float32)
    probes = partition.nearest(changed_vectors, partition.nprobe).reshape(len(union), -1)
    by_list = np.argsort(probes.ravel(), kind="stable")
    probing = by_list // probes.shape[1]  # union positions, grouped by the list they probe
    bounds = np.searchsorted(probes.ravel()[by_list], np.arange(len(partition.centroids) + 1))
    order, starts = partition.members()
    heap = faiss.ResultHeap(len(again), width, keep_max=True)
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for number in np.flatnonzero(np.diff(bounds)):
        members = order[starts[number]:starts[number + 1]]
        if not len(members):
            continue
        asking = probing[bounds[number]:bounds[number + 1]]
        sims = np.asarray(vectors[members], dtype=np.float32) @ changed_vectors[asking].T
        sims[members[:, None] == union[asking][None, :]] = -np.inf  # never itself
        taking = asking[as_candidate[asking]]
        if len(taking):
            sub = sims[:, as_candidate[asking]]
            hit_row, hit_col = np.nonzero(sub >= floor[members, None])
            pairs.append((members[hit_row], union[taking][hit_col], sub[hit_row, hit_col]))
        own = position[union[asking]] >= 0
        if own.any():
            mine = sims[:, own].T.copy()
            mine[:, ~candidates[members]] = -np.inf
            heap.add_result_subset(position[union[asking][own]], mine, members)
    heap.finalize()
    present = heap.I >= 0  # the heap's padding: id -1 (and a score of -FLT_MAX)
    keyed = np.where(present, heap.D, -np.inf)
    sort = best_first(keyed, np.where(present, heap.I, len(vectors)))
    best_scores = np.take_along_axis(keyed, sort, axis=1)
    best_rows = np.take_along_axis(heap.I, sort, axis=1)
    found = np.isfinite(best_scores)
    own_rows = np.where(found, best_rows, -1).astype(np.int32)
    own_scores = np.where(found, best_scores, 0.0).astype(np.float32)
    return _scan_result(pairs, own_rows, own_scores)


def _scan_result(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], own_rows: np.ndarray,
                 own_scores: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """A scan's (row, changed candidate, score) pairs joined, and the own lists."""
    if pairs:
        pair_rows, pair_cands, pair_scores = (np.concatenate(p) for p in zip(*pairs,
                                                                              strict=True))
    else:
        pair_rows = pair_cands = np.zeros(0, dtype=np.int64)
        pair_scores = np.zeros(0, dtype=np.float32)
    return (pair_rows.astype(np.int64), pair_cands.astype(np.int32),
            pair_scores.astype(np.float32), (own_rows, own_scores))


def lexical_table(matrix: Any, rows: np.ndarray) -> np.ndarray:
    """TF-IDF cosine (words or names) for every (article, candidate) entry of a table (0 for
    padding)."""
    valid = rows >= 0
    sources = np.broadcast_to(np.arange(len(rows))[:, None], rows.shape)[valid]
    out = np.zeros(rows.shape, dtype=np.float32)
    out[valid] = pair_scores(matrix, sources, rows[valid].astype(np.int64))
    return out


def write_table(directory: Path, rows: np.ndarray, scores: np.ndarray, lexical: np.ndarray,
                names: np.ndarray, floor: np.ndarray) -> None:
    """The table files of a version. rows, scores: every list in full, its n served entries
    then its reserve (the entries kept beyond them: what lets the next update complete a
    list without searching again; readers never look at them); lexical, names: the n served
    entries' TF-IDF cosines; floor: each list's floor. An array that is already the memory
    map of its file (an update carries the lists into the new files and works on them in
    place) is flushed, not written again."""
    for name, array, dtype in ((ROWS_FILE, rows, np.int32), (SCORES_FILE, scores, np.float32),
                               (LEXICAL_FILE, lexical, np.float32),
                               (NAMES_FILE, names, np.float32), (FLOOR_FILE, floor, np.float32)):
        path = directory / name
        if isinstance(array, np.memmap) and array.filename is not None \
                and path.exists() and os.path.samefile(array.filename, path):
            if array.dtype != dtype:
                raise TypeError(f"{path} holds {array.dtype}, not {np.dtype(dtype)}")
            array.flush()
        else:
            np.save(path, np.asarray(array, dtype=dtype))


def read_reserve(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(reserve rows, reserve scores, floors), memory-mapped, or None for a version written
    without them (before format 5) or with them in files of their own (format 5 and 6: an
    update of one writes a whole version)."""
    if not (directory / FLOOR_FILE).is_file() or (directory / OLD_RESERVE_FILE).is_file():
        return None
    rows, scores, lexical = (np.load(directory / name, mmap_mode="r", allow_pickle=False)
                             for name in (ROWS_FILE, SCORES_FILE, LEXICAL_FILE))
    n = lexical.shape[1]
    floor = np.load(directory / FLOOR_FILE, allow_pickle=False)
    return rows[:, n:], scores[:, n:], floor


# (candidate rows, cosines, word TF-IDF cosines, names TF-IDF cosines)
Table = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def read_table(directory: Path) -> Table | None:
    """The served table memory-mapped (each list's first n entries, n = the width of the
    TF-IDF files), or None for an index built without one."""
    if not (directory / ROWS_FILE).is_file():
        return None
    rows, scores, lexical, names = (
        np.load(directory / name, mmap_mode="r", allow_pickle=False)
        for name in (ROWS_FILE, SCORES_FILE, LEXICAL_FILE, NAMES_FILE))
    n = lexical.shape[1]
    return rows[:, :n], scores[:, :n], lexical, names
