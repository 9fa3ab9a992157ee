"""What `--engine ray` costs: per-core rates measured here, and a backfill projected from them.

    python scripts/bench_ray.py [--repeat N] [--workers W] [--search-rows M] [--target T]

1. Embedding, one core: the default model in this process at one thread, model loaded
   (articles/s per core); the texts are `embed_text_for` of the sample corpus, repeated.
2. Embedding on a local Ray with W workers (one CPU each) through `RayEngine.embed`: wall time
   of a run of the texts and of a run of twice as many; their difference is the steady rate
   (each run starts its actors and loads the model again: that start-up is the rest).
3. Search, one core: seconds per block of 1,024 queries against M unit vectors of 384
   dimensions (the product and the top-50 of `compute_table`), which grows linearly with
   the number of candidates.
4. Search on the local Ray (`RayEngine.table`) against `compute_table` here, same vectors.
5. A backfill of T articles on C cores: T / (per-core rate x C) for the embedding and
   (T / 1,024) x (block seconds x T / M) / C for the exact all-pairs search.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from recommender import RayEngine, load_articles, load_embedder, sample_corpus_path
from recommender.embedding import cpu_supports_bf16
from recommender.neighbours import compute_table
from recommender.text import embed_text_for
from recommender.vector_index import BLOCK


def timed(func: object, *args: object) -> tuple[float, object]:
    started = time.perf_counter()
    result = func(*args)  # type: ignore[operator]
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--search-rows", type=int, default=100_000)
    parser.add_argument("--target", type=int, default=10_000_000)
    args = parser.parse_args()
    import ray

    texts = [embed_text_for(a) for a in load_articles(sample_corpus_path())] * args.repeat
    ids = [f"a{i}" for i in range(len(texts))]
    words = np.mean([len(t.split()) for t in texts])
    print(f"{len(texts)} texts of {words:.0f} words on average; {platform.machine()}, "
          f"{os.cpu_count()} CPUs, native bf16: {cpu_supports_bf16()}, ray {ray.__version__}")

    torch.set_num_threads(1)
    embedder = load_embedder()
    embedder.embed(texts[:16])  # load and warm up
    seconds, _ = timed(embedder.embed, texts)
    per_core = len(texts) / seconds
    print(f"embedding, 1 core, this process:      {per_core:7.1f} articles/s")

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.search_rows, 384), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    everyone = np.ones(len(vectors), dtype=bool)
    blocks = 4
    with threadpool_limits(1):
        seconds, result = timed(compute_table, vectors, everyone, 50,
                                np.arange(blocks * BLOCK))
    block_seconds = seconds / blocks
    print(f"search, 1 core, {args.search_rows:,} candidates:  {block_seconds:7.2f} s per block "
          f"of {BLOCK:,} queries ({result[2]})")  # type: ignore[index]

    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.ERROR)
    try:
        engine = RayEngine(workers=args.workers)
        once, _ = timed(engine.embed, embedder, ids, texts)
        doubled = [f"{i}:{copy}" for copy in (0, 1) for i in ids]
        twice, _ = timed(engine.embed, embedder, doubled, texts * 2)
        steady = len(texts) / max(twice - once, 1e-9)
        print(f"embedding, Ray, {args.workers} workers: {once:.1f} s for {len(texts)}, "
              f"{twice:.1f} s for {2 * len(texts)}: {steady:.1f}/s past start-up "
              f"({steady / args.workers:.1f}/s per worker), start-up "
              f"{max(once - len(texts) / steady, 0):.1f} s")
        subset = vectors[:20_000]
        mask = np.ones(len(subset), dtype=bool)
        ray_seconds, _ = timed(engine.table, subset, mask, 50)
        local_seconds, _ = timed(compute_table, subset, mask, 50)
        print(f"search, {len(subset):,} x {len(subset):,}: Ray {ray_seconds:.1f} s, "
              f"this process {local_seconds:.1f} s ({torch.get_num_threads()} torch threads)")
    finally:
        ray.shutdown()

    target = args.target
    embed_core_hours = target / per_core / 3600
    search_core_hours = target / BLOCK * block_seconds * target / args.search_rows / 3600
    print(f"\n{target:,} articles: embedding {embed_core_hours:,.0f} core-hours, exact search "
          f"{search_core_hours:,.0f} core-hours")
    print("| cores | embedding | exact search | total |")
    print("|---|---|---|---|")
    for cores in (2, 16, 64, 256):
        embed, search = embed_core_hours / cores, search_core_hours / cores
        print(f"| {cores} | {embed:,.1f} h | {search:,.1f} h | {embed + search:,.1f} h |")


if __name__ == "__main__":
    main()
