"""HNSW vs IVF for the candidate table: recall@50 against exact search and time, on clustered
synthetic vectors shaped like text embeddings (bench_scale's generator, never uniform noise)
and on the real news-stories vectors when that index exists.

For each index and search effort (IVF: nprobe, HNSW: efSearch): recall@50 on a sample of
500 rows (against exact fp32 search), the build time, and the time to search every row,
extrapolated from a timed sample of --timed rows, one query at a time as a live search does;
for IVF also the time of the search a build makes, every row at once, list by list
(`IVFIndex._search_by_list`), measured, not extrapolated.

    python scripts/bench_ann.py [--articles 100000] [--timed 20000] [--indexes ivf,hnsw]
                                [--nprobe 4,8,16,32] [--ef-search 64,128,256]
                                [--news-index indexes/news-stories]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import TopicEmbedder, shapes

from recommender.store import IndexDirectory, IndexVersion
from recommender.vector_index import (
    BY_LIST_QUERIES,
    ApproximateIndex,
    ExactIndex,
    HNSWIndex,
    IVFIndex,
    recall_at_k,
)

K = 50


def synthetic(n: int, seed: int = 1) -> np.ndarray:
    clusters, topics = shapes(n)
    story = np.random.default_rng(seed).integers(clusters, size=n)
    return TopicEmbedder(clusters, topics).embed(
        [f"cluster {c} item {i}" for i, c in enumerate(story)])


def measure(label: str, vectors: np.ndarray, timed: int, kinds: list[str],
            nprobe: list[int], ef_search: list[int]) -> None:
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(len(vectors), min(500, len(vectors)), replace=False)]
    timed_rows = vectors[rng.choice(len(vectors), min(timed, len(vectors)), replace=False)]
    want_scores, want = ExactIndex(vectors, method="torch").search(sample, K + 1)
    print(f"{label}: {len(vectors):,} x {vectors.shape[1]}")
    builds: list[tuple[type[ApproximateIndex], list[int]]] = [
        (IVFIndex, nprobe), (HNSWIndex, ef_search)]
    for backend, efforts in builds:
        if backend.kind.split("-")[0] not in kinds:
            continue
        started = time.perf_counter()
        index = backend(vectors)
        built = time.perf_counter() - started
        for effort in efforts:
            index.effort = effort
            got_scores, got = index.search(sample, K + 1)
            recall = recall_at_k(got, want, got_scores, want_scores)
            # per query, as a live search: blocks too small for IVF's list-by-list search
            block = 256 if not isinstance(index, IVFIndex) else \
                max(1, min(256, BY_LIST_QUERIES * index.nlist - 1))
            started = time.perf_counter()
            for start in range(0, len(timed_rows), block):
                index.search(timed_rows[start:start + block], K + 1)
            per_row = (time.perf_counter() - started) / len(timed_rows)
            line = (f"  {index.describe():<34} recall@50 {recall:.4f}   build {built:6.1f} s   "
                    f"search all rows ~{per_row * len(vectors):7.1f} s")
            if isinstance(index, IVFIndex):
                started = time.perf_counter()
                index.search(vectors, K + 1)
                line += f"   list by list {time.perf_counter() - started:7.1f} s"
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--timed", type=int, default=20_000)
    parser.add_argument("--news-index", type=Path, default=Path("indexes/news-stories"))
    parser.add_argument("--indexes", default="ivf,hnsw", help="which approximate indexes")
    parser.add_argument("--nprobe", default="4,8,16,32", help="IVF efforts measured")
    parser.add_argument("--ef-search", default="64,128,256", help="HNSW efforts measured")
    args = parser.parse_args()
    kinds = args.indexes.split(",")
    efforts = ([int(v) for v in args.nprobe.split(",")],
               [int(v) for v in args.ef_search.split(",")])
    if (args.news_index / "CURRENT").is_file():
        live = IndexVersion(IndexDirectory(args.news_index).current_path())
        measure("real news-stories (all-MiniLM-L6-v2)", np.array(live.vectors),
                args.timed, kinds, *efforts)
    measure("synthetic topics/stories", synthetic(args.articles), args.timed, kinds, *efforts)


if __name__ == "__main__":
    main()
