"""Precomputed relevance candidates: for every article, its N nearest published articles by
cosine, computed at build time in batched matrix products, so a page lookup is a read.

Exact search in blocks of 1,024 queries, by numpy's BLAS plus torch.topk (numpy's
argpartition is ~25x slower on 100k-wide rows) or by faiss.knn, whichever the first blocks
measure faster on this machine. An update recomputes the rows of changed articles and merges
them into everyone else's lists, so the newest article enters older articles' lists without a
full pass; the lists that lost an entry are recomputed, so the table always equals a full
recomputation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .lexical import pair_scores

ROWS_FILE = "neighbours.npy"
SCORES_FILE = "neighbour_scores.npy"
LEXICAL_FILE = "neighbour_lexical.npy"
NAMES_FILE = "neighbour_names.npy"
DEFAULT_N = 50
BLOCK = 1024  # query rows per product: 1024 x 100k float32 = 400 MB of scores

ProgressCallback = Callable[[int, int], None]


def _topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top k of a float32 matrix, best first: (values, column indices)."""
    import torch

    k = min(k, scores.shape[1])
    values, indices = torch.topk(torch.from_numpy(scores), k, dim=1, sorted=True)
    return values.numpy(), indices.numpy()


def _block_numpy(queries: np.ndarray, cand_vectors: np.ndarray, own: np.ndarray, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """numpy's BLAS for the product, torch.topk for the selection."""
    scores = queries @ cand_vectors.T
    mine = own >= 0  # a row is never its own candidate
    scores[np.flatnonzero(mine), own[mine]] = -np.inf
    return _topk(scores, width)


def _block_faiss(queries: np.ndarray, cand_vectors: np.ndarray, own: np.ndarray, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """faiss.knn: product and selection fused, one extra neighbour to drop the row itself."""
    import faiss

    k = min(width + 1, len(cand_vectors))
    values, columns = faiss.knn(queries, cand_vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    values = np.where(columns == own[:, None], -np.inf, values).astype(np.float32)
    order = np.argsort(-values, axis=1, kind="stable")[:, :width]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(columns, order, axis=1)


BlockSearch = Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
BLOCK_SEARCHES: dict[str, BlockSearch] = {"numpy": _block_numpy, "faiss": _block_faiss}


def compute_table(vectors: np.ndarray, candidates: np.ndarray, n: int = DEFAULT_N,
                  queries: np.ndarray | None = None,
                  progress: ProgressCallback | None = None, method: str = "auto"
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-n candidate rows (int32, -1 padded) and cosines (float32) for each query row, and
    the method that computed them.

    vectors: (rows, d) unit vectors; candidates: bool mask of rows that may be recommended
    (published); queries: the rows to compute (default: all). A row is never its own
    candidate.

    method "auto" times the first block with each of numpy and faiss and runs the rest with the
    faster: which BLAS wins depends on the machine (faiss-cpu bundles an OpenBLAS whose kernels
    are old on recent CPUs, and OPENBLAS_CORETYPE settings slow numpy's), so it is measured,
    not assumed.
    """
    total = len(vectors)
    query_rows = np.arange(total) if queries is None else np.asarray(queries, dtype=np.int64)
    cand_rows = np.flatnonzero(candidates)
    out_rows = np.full((len(query_rows), n), -1, dtype=np.int32)
    out_scores = np.zeros((len(query_rows), n), dtype=np.float32)
    if len(cand_rows) == 0 or len(query_rows) == 0:
        return out_rows, out_scores, "none"
    cand_vectors = np.ascontiguousarray(vectors[cand_rows], dtype=np.float32)
    column_of = np.full(total, -1, dtype=np.int64)
    column_of[cand_rows] = np.arange(len(cand_rows))
    width = min(n, len(cand_rows))
    chosen = method if method != "auto" else None
    timings: dict[str, float] = {}
    for start in range(0, len(query_rows), BLOCK):
        block = query_rows[start:start + BLOCK]
        if chosen is None:  # calibrate: one block each way, then the faster
            if len(query_rows) <= 2 * BLOCK:
                chosen = "numpy"
            else:
                name = "numpy" if "numpy" not in timings else "faiss"
                if "faiss" in timings:
                    chosen = min(timings, key=lambda m: timings[m])
        name = chosen or name
        started = time.perf_counter()
        values, columns = BLOCK_SEARCHES[name](
            np.ascontiguousarray(vectors[block], dtype=np.float32), cand_vectors,
            column_of[block], width)
        timings.setdefault(name, time.perf_counter() - started)
        found = np.isfinite(values)
        out_rows[start:start + len(block), :width] = np.where(found, cand_rows[columns], -1)
        out_scores[start:start + len(block), :width] = np.where(found, values, 0.0)
        if progress is not None:
            progress(min(start + BLOCK, len(query_rows)), len(query_rows))
    return out_rows, out_scores, chosen or "numpy"


def update_table(vectors: np.ndarray, candidates: np.ndarray, old_rows: np.ndarray,
                 old_scores: np.ndarray, changed: np.ndarray, n: int = DEFAULT_N
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Bring a table up to date after an update, equal to a full recomputation.

    old_rows/old_scores: the previous table already renumbered to the new rows (-1 where the
    article is gone, and for rows of new articles). changed: rows whose vector is new or
    changed, or that became candidates. Their own lists are recomputed, and so is every list
    that lost an entry (one pointing at a changed row's old score, at an article no longer a
    candidate, or at one removed): its next neighbour was never stored. Every other list
    merges in the changed candidates' fresh scores, which is exact for a top-n.
    """
    changed = np.unique(np.asarray(changed, dtype=np.int64))
    rows, scores = old_rows.copy(), old_scores.copy()
    candidates = np.asarray(candidates, dtype=bool)
    stored = rows >= 0
    target = np.where(stored, rows, 0)
    stale = stored & (np.isin(target, changed) | ~candidates[target])
    rows[stale] = -1
    # A list should hold min(n, candidates other than the row itself) entries.
    expected = np.minimum(n, int(candidates.sum()) - candidates.astype(np.int64))
    short = (rows >= 0).sum(axis=1) < expected
    recompute = np.union1d(changed, np.flatnonzero(stale.any(axis=1) | short))
    if len(recompute):
        fresh_rows, fresh_scores, _ = compute_table(vectors, candidates, n, queries=recompute)
        rows[recompute], scores[recompute] = fresh_rows, fresh_scores
    others = np.setdiff1d(np.arange(len(vectors)), recompute)
    scores[rows < 0] = -np.inf
    new_candidates = changed[candidates[changed]]
    if len(new_candidates) and len(others):
        cand_vectors = np.asarray(vectors[new_candidates], dtype=np.float32)
        for start in range(0, len(others), BLOCK):
            block = others[start:start + BLOCK]
            extra = np.asarray(vectors[block], dtype=np.float32) @ cand_vectors.T
            extra_rows = np.broadcast_to(new_candidates, extra.shape).astype(np.int32)
            extra = np.where(extra_rows == block[:, None], -np.inf, extra).astype(np.float32)
            merged_scores = np.concatenate([scores[block], extra], axis=1)
            merged_rows = np.concatenate([rows[block], extra_rows], axis=1)
            values, columns = _topk(merged_scores, n)
            rows[block] = np.take_along_axis(merged_rows, columns, axis=1)
            scores[block] = values
    empty = ~np.isfinite(scores)
    rows[empty], scores[empty] = -1, 0.0
    return rows, scores


def renumber(old_rows: np.ndarray, old_scores: np.ndarray, mapping: np.ndarray,
             new_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Carry a table across versions whose row numbers differ. mapping: for each old row,
    its new row, or -1 where the article is gone."""
    rows = np.full((new_count, old_rows.shape[1]), -1, dtype=np.int32)
    scores = np.zeros((new_count, old_rows.shape[1]), dtype=np.float32)
    kept = np.flatnonzero(mapping >= 0)
    old = np.asarray(old_rows[kept])
    translated = np.where(old >= 0, mapping[np.clip(old, 0, None)], -1)
    rows[mapping[kept]] = translated
    scores[mapping[kept]] = np.where(translated >= 0, old_scores[kept], 0.0)
    return rows, scores


def lexical_table(matrix: Any, rows: np.ndarray) -> np.ndarray:
    """TF-IDF cosine (words or names) for every (article, candidate) entry of a table (0 for
    padding)."""
    valid = rows >= 0
    sources = np.broadcast_to(np.arange(len(rows))[:, None], rows.shape)[valid]
    out = np.zeros(rows.shape, dtype=np.float32)
    out[valid] = pair_scores(matrix, sources, rows[valid].astype(np.int64))
    return out


def write_table(directory: Path, rows: np.ndarray, scores: np.ndarray,
                lexical: np.ndarray, names: np.ndarray) -> None:
    np.save(directory / ROWS_FILE, rows.astype(np.int32))
    np.save(directory / SCORES_FILE, scores.astype(np.float32))
    np.save(directory / LEXICAL_FILE, lexical.astype(np.float32))
    np.save(directory / NAMES_FILE, names.astype(np.float32))


# (candidate rows, cosines, word TF-IDF cosines, names TF-IDF cosines)
Table = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def read_table(directory: Path) -> Table | None:
    """Memory-mapped table, or None for an index built without one."""
    if not (directory / ROWS_FILE).is_file():
        return None
    rows, scores, lexical, names = (
        np.load(directory / name, mmap_mode="r", allow_pickle=False)
        for name in (ROWS_FILE, SCORES_FILE, LEXICAL_FILE, NAMES_FILE))
    return rows, scores, lexical, names
