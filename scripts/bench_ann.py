"""HNSW vs IVF for the candidate table: recall@50 against exact search and time, on clustered
synthetic vectors shaped like text embeddings (bench_scale's generator, never uniform noise)
and on the real news-stories vectors when that index exists.

For each index and search effort (IVF: nprobe, HNSW: efSearch): recall@50 on a sample of
500 rows (against exact fp32 search), the build time, and the time to search every row,
extrapolated from a timed sample of --timed rows.

    python scripts/bench_ann.py [--articles 100000] [--timed 20000]
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

from recommender.vector_index import (
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


def measure(label: str, vectors: np.ndarray, timed: int) -> None:
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(len(vectors), min(500, len(vectors)), replace=False)]
    timed_rows = vectors[rng.choice(len(vectors), min(timed, len(vectors)), replace=False)]
    want_scores, want = ExactIndex(vectors, method="torch").search(sample, K + 1)
    print(f"{label}: {len(vectors):,} x {vectors.shape[1]}")
    builds: list[tuple[type[ApproximateIndex], list[int]]] = [
        (IVFIndex, [4, 8, 16, 32]), (HNSWIndex, [64, 128, 256])]
    for backend, efforts in builds:
        started = time.perf_counter()
        index = backend(vectors)
        built = time.perf_counter() - started
        for effort in efforts:
            index.effort = effort
            got_scores, got = index.search(sample, K + 1)
            recall = recall_at_k(got, want, got_scores, want_scores)
            started = time.perf_counter()
            index.search(timed_rows, K + 1)
            per_row = (time.perf_counter() - started) / len(timed_rows)
            print(f"  {index.describe():<34} recall@50 {recall:.4f}   build {built:6.1f} s   "
                  f"search all rows ~{per_row * len(vectors):7.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--timed", type=int, default=20_000)
    parser.add_argument("--news-index", type=Path, default=Path("indexes/news-stories"))
    args = parser.parse_args()
    if (args.news_index / "CURRENT").is_file():
        live = args.news_index / "versions" / (args.news_index / "CURRENT").read_text().strip()
        measure("real news-stories (all-MiniLM-L6-v2)",
                np.ascontiguousarray(np.load(live / "vectors.npy"), dtype=np.float32),
                args.timed)
    measure("synthetic topics/stories", synthetic(args.articles), args.timed)


if __name__ == "__main__":
    main()
