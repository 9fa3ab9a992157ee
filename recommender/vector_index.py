"""Nearest-neighbour search over a version's unit vectors, behind one seam (`VectorIndex`):
exact search in blocks of matrix products, or an approximate FAISS IVF index where exact
search is too slow. The candidate table and a version's live search both go through it.

Exact search runs in blocks of 1,024 queries by the fastest of four ways, measured on the
first blocks (which wins depends on the CPU and on how busy it is):

- "bf16": torch bf16 matrix product (AMX / AVX512_BF16), top (k + RESCORE_MARGIN) of each
  row, then those candidates re-scored in fp32 and the best k kept: fp32 scores, and the
  same lists as fp32 whenever the true top k is inside the bf16 top k + margin (the build
  measures recall against fp32 on a sample; `tests/test_vector_index.py` checks lists);
- "torch" / "numpy": fp32 product by torch or numpy's BLAS, torch.topk for the selection
  (numpy's argpartition is ~25x slower on 100k-wide rows);
- "faiss": faiss.knn, product and selection fused.

Approximate: faiss' IndexHNSWFlat (`HNSWIndex`) or IndexIVFFlat (`IVFIndex`), their search
effort tuned on a sample until recall reaches a target (README, "The candidate table at
scale", for which is the default and why).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .embedding import cpu_supports_bf16

BLOCK = 1024  # query rows per product: 1024 x 100k float32 = 400 MB of scores
RESCORE_MARGIN = 32  # extra bf16 candidates re-scored in fp32, beyond the k asked for
RESCORE_ROWS = 64  # queries whose candidates are re-scored at a time
EXACT_METHODS = ("bf16", "torch", "numpy", "faiss")
# An IVF search of at least this many queries per inverted list (a build's or a large
# update's whole table) runs list by list (`IVFIndex._search_by_list`) instead of query by query.
BY_LIST_QUERIES = 8


class VectorIndex(ABC):
    """Inner-product top-k over a fixed set of unit vectors, each with an id (its row in the
    version), built from the vectors by the constructor. `search` returns (scores float32,
    ids int64), best first, -1/-inf padded where fewer than k vectors exist.

    No vectors are saved beside the version's vectors.npy: exact search runs on the
    memory-mapped vectors, and an approximate index is built from them by the search that
    needs it (the candidate table of a build or of a large update), so the vectors are stored
    once; an IVF table keeps only its `Partition` (centroids and each row's list)."""

    kind: ClassVar[str]

    def __init__(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        self.vectors = vectors
        self.ids = None if ids is None else np.asarray(ids, dtype=np.int64)

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def describe(self) -> str:
        """The method, as recorded in the manifest: "exact (bf16)", "ivf-flat (...)"."""

    def _ids_of(self, columns: np.ndarray) -> np.ndarray:
        if self.ids is None:
            return columns.astype(np.int64)
        return np.where(columns >= 0, self.ids[np.clip(columns, 0, None)], -1)


# --------------------------------------------------------------------------- exact


# Below this many scores, and while torch is not loaded, numpy selects the top k itself: a few
# queries of an update are done before torch (a ~1-2 s import) would even be loaded.
SMALL_SELECTION = 1 << 24


def select_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top k of a float32 matrix, best first: (values, column indices)."""
    k = min(k, scores.shape[1])
    if scores.size <= SMALL_SELECTION and "torch" not in sys.modules:
        if k < scores.shape[1]:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        values = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        return np.take_along_axis(values, order, axis=1), np.take_along_axis(part, order, axis=1)
    import torch

    values, indices = _topk(torch.from_numpy(np.ascontiguousarray(scores)), k)
    return values.numpy(), indices.numpy()


def _topk(scores: Any, k: int) -> tuple[Any, Any]:
    import torch

    values, columns = torch.topk(scores, min(k, scores.shape[1]), dim=1, sorted=True)
    return values, columns


def default_exact_method() -> str:
    """The exact method for a few blocks, too few to time each way: bf16 where the CPU has it
    natively (measured fastest on such CPUs), else numpy."""
    return "bf16" if cpu_supports_bf16() else "numpy"


class ExactIndex(VectorIndex):
    """Exact top-k: every query against every vector, in blocks. method "auto" times the
    first blocks each way (over successive searches) and runs the rest with the fastest."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray, ids: np.ndarray | None = None,
                 method: str = "auto") -> None:
        super().__init__(vectors, ids)
        if method != "auto" and method not in EXACT_METHODS:
            raise ValueError(f"unknown exact search method {method!r}")
        self.method = method
        self.used = method if method != "auto" else ""
        self._cache: dict[str, Any] = {}
        self._timings: dict[str, float] = {}  # first block's seconds, by method
        self._product: Any = None  # (see _product_buffer)
        self._product_lock = threading.Lock()

    def describe(self) -> str:
        return f"exact ({self.used or 'none'})"

    def _candidates_for(self, method: str) -> Any:
        """The indexed vectors in the form a method wants, converted once."""
        if method not in self._cache:
            dense = np.ascontiguousarray(self.vectors, dtype=np.float32)
            if method in ("bf16", "torch"):
                import torch
            if method == "bf16":
                self._cache[method] = (torch.from_numpy(dense).to(torch.bfloat16),
                                       torch.from_numpy(dense))
            elif method == "torch":
                self._cache[method] = torch.from_numpy(dense)
            else:
                self._cache[method] = dense
        return self._cache[method]

    def _block(self, method: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if method == "faiss":
            import faiss

            values, columns = faiss.knn(queries, self._candidates_for("faiss"), k,
                                        metric=faiss.METRIC_INNER_PRODUCT)
            return values.astype(np.float32), columns.astype(np.int64)
        if method == "numpy":
            values, columns = select_topk(queries @ self._candidates_for("numpy").T, k)
            return values, columns.astype(np.int64)
        import torch

        query = torch.from_numpy(queries)
        if method == "torch":
            with self._product_lock:
                product = self._product_buffer(len(query), torch.float32)
                torch.mm(query, self._candidates_for("torch").T, out=product)
                values, columns = _topk(product, k)
            return values.numpy(), columns.numpy().astype(np.int64)
        low, full = self._candidates_for("bf16")
        with self._product_lock:
            product = self._product_buffer(len(query), torch.bfloat16)
            torch.mm(query.to(torch.bfloat16), low.T, out=product)
            _, wide = _topk(product, k + RESCORE_MARGIN)
        # the exact fp32 scores of those, a few queries at a time: their candidates' rows,
        # gathered, stay in the cache for the product (2.5 times faster than one gather)
        rescored = torch.empty(wide.shape, dtype=torch.float32)
        for start in range(0, len(wide), RESCORE_ROWS):
            part = wide[start:start + RESCORE_ROWS]
            rows = torch.index_select(full, 0, part.reshape(-1)).reshape(*part.shape, -1)
            rescored[start:start + RESCORE_ROWS] = torch.einsum(
                "qd,qcd->qc", query[start:start + RESCORE_ROWS], rows)
        best, order = torch.sort(rescored, dim=1, descending=True, stable=True)
        best_columns = torch.gather(wide, 1, order)
        return best[:, :k].numpy(), best_columns[:, :k].numpy().astype(np.int64)

    def _product_buffer(self, rows: int, dtype: Any) -> Any:
        """The scores of a block of queries against every vector, written into one buffer
        kept between blocks: a fresh one of that size (200 MB a block at 100k) costs the
        first touch of its memory every block."""
        import torch

        buffer = self._product
        if buffer is None or buffer.dtype != dtype or buffer.shape[0] < rows:
            buffer = self._product = torch.empty((max(rows, BLOCK), len(self.vectors)),
                                                 dtype=dtype)
        return buffer[:rows]

    def _choose(self) -> str:
        """The method for the next block: the given one, else each in turn on one block (bf16
        only where the CPU has it natively), then the fastest."""
        if self.method != "auto":
            return self.method
        for name in EXACT_METHODS:
            if name not in self._timings:
                if name == "bf16" and not cpu_supports_bf16():
                    self._timings[name] = math.inf
                    continue
                return name
        return min(self._timings, key=lambda m: self._timings[m])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        width = min(k, len(self.vectors))
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        if width <= 0 or len(queries) == 0:
            return out_scores, out_ids
        for start in range(0, len(queries), BLOCK):
            method = self._choose()
            self._candidates_for(method)  # a one-off conversion, not part of the timing
            started = time.perf_counter()
            values, columns = self._block(method, queries[start:start + BLOCK], width)
            self._timings.setdefault(method, time.perf_counter() - started)
            out_scores[start:start + BLOCK, :width] = values
            out_ids[start:start + BLOCK, :width] = self._ids_of(columns)
            self.used = method
        return out_scores, out_ids


# --------------------------------------------------------------------------- approximate


class ApproximateIndex(VectorIndex):
    """An index with a search-effort knob (IVF: lists scanned, HNSW: candidate queue), which
    `tune` raises until a recall target is met on a sample."""

    _effort = 1
    max_effort = 1

    @property
    def effort(self) -> int:
        return self._effort

    @effort.setter
    def effort(self, value: int) -> None:
        self._effort = max(1, min(int(value), self.max_effort))

    def tune(self, queries: np.ndarray, k: int, target: float,
             exact: VectorIndex | None = None) -> float:
        """Double the effort until recall@k against exact search on `queries` reaches
        `target` (or the effort is at its maximum). Returns the recall reached."""
        exact = exact or ExactIndex(self.vectors, self.ids, method="torch")
        want_scores, want = exact.search(queries, k)
        while True:
            got_scores, got = self.search(queries, k)
            reached = recall_at_k(got, want, got_scores, want_scores)
            if reached >= target or self.effort >= self.max_effort:
                return reached
            self.effort *= 2

    def _found(self, values: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.where(columns >= 0, values, -np.inf).astype(np.float32)
        return values, self._ids_of(columns)


class IVFIndex(ApproximateIndex):
    """FAISS IndexIVFFlat over inner product: k-means lists (4 sqrt(n) of them); a query
    scans the `effort` (nprobe) nearest lists."""

    kind = "ivf-flat"

    def __init__(self, vectors: np.ndarray, ids: np.ndarray | None = None,
                 nprobe: int = 4, seed: int = 0) -> None:
        import faiss

        super().__init__(vectors, ids)
        dense = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = dense.shape
        self.nlist = self.max_effort = max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(d)
        self._index = faiss.IndexIVFFlat(quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self._index.cp.seed = seed
        self._index.cp.niter = 10
        train = dense
        if n > 64 * self.nlist:  # faiss' own cap is 256 per list; 64 is enough and 4x faster
            train = dense[np.random.default_rng(seed).choice(n, 64 * self.nlist, replace=False)]
        self._index.train(train)
        self._index.add(dense)
        self._quantizer = quantizer  # kept alive: the IVF index does not own it
        self.effort = nprobe

    def describe(self) -> str:
        return f"{self.kind} (nlist {self.nlist}, nprobe {self.effort})"

    def partition(self, vectors: np.ndarray) -> Partition:
        """This index's k-means lists over all of a version's rows (`vectors`; the indexed
        ones are the rows in `ids`): each indexed row in the list it was added to, every other
        row in its nearest list, and the tuned nprobe."""
        import faiss

        centroids = self._quantizer.reconstruct_n(0, self.nlist).astype(np.float32)
        lists = np.full(len(vectors), -1, dtype=np.int32)
        invlists = faiss.extract_index_ivf(self._index).invlists
        assert invlists is not None
        ids = self.ids if self.ids is not None else np.arange(len(vectors))
        for number in range(self.nlist):
            size = invlists.list_size(number)
            if size:
                members = faiss.rev_swig_ptr(invlists.get_ids(number), size).copy()
                lists[ids[members]] = number
        partition = Partition(centroids, lists, self.effort)
        others = np.flatnonzero(lists < 0)
        if len(others):
            lists[others] = partition.nearest(np.asarray(vectors[others], dtype=np.float32))
        return partition

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        self._index.nprobe = self.effort
        if len(queries) >= BY_LIST_QUERIES * self.nlist:
            return self._found(*self._search_by_list(queries, k))
        return self._found(*self._index.search(queries, k))

    def _search_by_list(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The same search for many queries at once, list by list (the pieces of faiss'
        contrib.big_batch_search, run sequentially and quietly): the queries are assigned to
        their nprobe lists as faiss' search does, then each list is read once and compared
        with every query that probes it in one fp32 matrix product (torch), its top k merged
        into each query's result heap. The same lists as faiss' per-query scan (up to ties),
        3x faster at 100k rows and 4-12x at 1M here (README, "The candidate table at scale")."""
        from faiss.contrib import big_batch_search

        contrib: Any = big_batch_search  # untyped
        searcher = contrib.BigBatchSearcher(self._index, queries, k)
        computer = contrib.BlockComputer(self._index, method="knn_function", knn=_knn_fp32)
        searcher.decode_func = computer.decode_func
        searcher.by_residual = computer.by_residual
        searcher.coarse_quantization()
        searcher.reorder_assign()
        for inverted_list in range(self.nlist):
            subset, list_queries, list_ids, list_vectors = searcher.prepare_bucket(inverted_list)
            scores, columns = computer.block_search(list_queries, list_vectors, list_ids, k)
            searcher.add_results_to_heap(subset, scores, list_ids, columns)
        searcher.rh.finalize()
        return searcher.rh.D, searcher.rh.I


PARTITION_CENTROIDS_FILE = "partition_centroids.npy"
PARTITION_LISTS_FILE = "partition_lists.npy"


@dataclass
class Partition:
    """The k-means lists of an approximate (IVF) table, kept with the version so that an
    update searches the changed articles the way the build did, without training or indexing
    anything again: centroids (nlist x d), the list of each row (int32), and nprobe (lists a
    query reads). Rows of later versions go to their nearest centroid; a full build trains
    new ones."""

    centroids: np.ndarray
    lists: np.ndarray
    nprobe: int

    def nearest(self, vectors: np.ndarray, count: int = 1) -> np.ndarray:
        """The `count` nearest lists of each vector (rows x count; one column flattened)."""
        import faiss

        count = min(count, len(self.centroids))
        out = np.empty((len(vectors), count), dtype=np.int32)
        centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        for start in range(0, len(vectors), BLOCK * 4):
            block = np.ascontiguousarray(vectors[start:start + BLOCK * 4], dtype=np.float32)
            if count == 1:
                out[start:start + len(block), 0] = np.argmax(block @ centroids.T, axis=1)
            else:
                out[start:start + len(block)] = faiss.knn(
                    block, centroids, count, metric=faiss.METRIC_INNER_PRODUCT)[1]
        return out[:, 0] if count == 1 else out

    def carried(self, mapping: np.ndarray, count: int, vectors: np.ndarray,
                fresh: np.ndarray) -> Partition:
        """The partition of the next version: rows carried by `mapping` (old row -> new row,
        -1: gone) keep their lists, rows with a new vector (`fresh`) and new rows go to
        their nearest list."""
        lists = np.full(count, -1, dtype=np.int32)
        kept = np.flatnonzero(mapping >= 0)
        lists[mapping[kept]] = self.lists[kept]
        lists[np.asarray(fresh, dtype=np.int64)] = -1
        placed = np.flatnonzero(lists < 0)
        if len(placed):
            lists[placed] = self.nearest(vectors[placed])
        return Partition(self.centroids, lists, self.nprobe)

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows sorted by list, start of each list in it; nlist + 1 entries)."""
        order = np.argsort(self.lists, kind="stable")
        starts = np.searchsorted(self.lists[order], np.arange(len(self.centroids) + 1))
        return order, starts

    def save(self, directory: Path) -> None:
        np.save(directory / PARTITION_CENTROIDS_FILE, self.centroids.astype(np.float32))
        np.save(directory / PARTITION_LISTS_FILE, self.lists.astype(np.int32))

    @classmethod
    def load(cls, directory: Path, nprobe: int) -> Partition | None:
        """The partition saved with a version, or None (an exact table has none)."""
        if not (directory / PARTITION_LISTS_FILE).is_file():
            return None
        return cls(np.load(directory / PARTITION_CENTROIDS_FILE, allow_pickle=False),
                   np.load(directory / PARTITION_LISTS_FILE, allow_pickle=False), nprobe)


def _knn_fp32(queries: np.ndarray, vectors: np.ndarray, k: int, **_: Any
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top k inner products of each query among `vectors` (one inverted list, flat float32),
    in the form faiss.knn returns (fewer columns when the list is shorter than k)."""
    import torch

    query = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    candidates = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)
                                  .reshape(-1, queries.shape[1]))
    values, columns = _topk(query @ candidates.T, k)
    return values.numpy(), columns.numpy().astype(np.int64)


class HNSWIndex(ApproximateIndex):
    """FAISS IndexHNSWFlat over inner product (M 32, efConstruction 64); a query keeps the
    `effort` (efSearch, at least k) best candidates while it walks the graph."""

    kind = "hnsw-flat"
    max_effort = 2048

    def __init__(self, vectors: np.ndarray, ids: np.ndarray | None = None,
                 ef_search: int = 64, m: int = 32, ef_construction: int = 64) -> None:
        import faiss

        super().__init__(vectors, ids)
        dense = np.ascontiguousarray(vectors, dtype=np.float32)
        self.m = m
        self._index = faiss.IndexHNSWFlat(dense.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = ef_construction
        self._index.add(dense)
        self.effort = ef_search

    def describe(self) -> str:
        return f"{self.kind} (M {self.m}, efSearch {self.effort})"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        self._index.hnsw.efSearch = max(self.effort, k)
        return self._found(*self._index.search(queries, k))


def recall_at_k(found: np.ndarray, exact: np.ndarray, found_scores: np.ndarray | None = None,
                exact_scores: np.ndarray | None = None, tolerance: float = 1e-5) -> float:
    """Mean share of each exact list (ids >= 0) that the found list also holds. With scores
    (true cosines), a found entry counts when it scores at least the exact list's last one:
    among exact ties, any choice is right."""
    shares = []
    for row, (got, want) in enumerate(zip(found, exact, strict=True)):
        wanted = want[want >= 0]
        if not len(wanted):
            continue
        if found_scores is not None and exact_scores is not None:
            threshold = exact_scores[row][len(wanted) - 1] - tolerance
            hits = int(((got >= 0) & (found_scores[row] >= threshold)).sum())
        else:
            hits = len(set(wanted.tolist()) & set(got[got >= 0].tolist()))
        shares.append(min(hits, len(wanted)) / len(wanted))
    return float(np.mean(shares)) if shares else 1.0
