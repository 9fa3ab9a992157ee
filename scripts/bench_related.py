"""Serving speed at scale: an index of N synthetic articles, then the latency of lookups.

Vectors are synthetic (clustered, 384-d, unit length) with realistic metadata (sections,
tags, dates over two years, drafts, paywalled and Spanish articles, stories), so the whole
pipeline runs: lexical scores, columns, the precomputed candidate table, slot policies.

Reports: build time and its parts; the all-pairs precompute next to a plain numpy matrix
product of the same size in the same run; the one-off open time; p50/p99 of `related()` and
`page()` from Python; resident memory.

    python scripts/bench_related.py [--articles 100000] [--queries 2000]
                                    [--news-index indexes/news-stories] [--news-only]

When the real news-stories index exists (`python scripts/evaluate_news.py` builds it), it
also times `page()` for every one of its 3,823 articles as of 2017-04-01 and as of today (an
archive, where the slots measure time around each article's own date).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from recommender import Recommender, build_index
from recommender.embedding import ProgressCallback, normalise
from recommender.neighbours import BLOCK

SECTIONS = ["world", "politics", "business", "technology", "science", "health", "sport",
            "culture", "local", "travel"]
WORDS = [f"w{i}" for i in range(5000)]


class ClusteredEmbedder:
    """Maps "cluster C item I" titles to a fixed random centre C plus noise."""

    name = "synthetic-clustered-384"
    dimension = 384
    noise = 0.09  # scale of each item's Gaussian noise around its centre

    def __init__(self, clusters: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.centres = normalise(rng.standard_normal((clusters, self.dimension)))

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None
              ) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            words = text.split()
            cluster, item = int(words[1]), int(words[3].rstrip("."))
            noise = np.random.default_rng(item).standard_normal(self.dimension)
            out[i] = self.centres[cluster] + self.noise * noise
        return normalise(out)


def records(n: int, clusters: int, seed: int = 1) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    start = datetime(2024, 12, 1, tzinfo=UTC)
    out: list[dict[str, object]] = []
    for i in range(n):
        cluster = int(rng.integers(clusters))
        body_words = rng.choice(WORDS[cluster % 50 * 100:(cluster % 50 + 1) * 100], 40)
        record: dict[str, object] = {
            "id": f"n{i:06d}", "title": f"cluster {cluster} item {i}",
            "body": " ".join(body_words), "url": f"https://news.example.org/n{i:06d}",
            "published_at": (start + timedelta(minutes=int(rng.integers(0, 2 * 525_600))))
            .isoformat(),
            "section": SECTIONS[cluster % len(SECTIONS)],
            "tags": [f"t{cluster % 300}", f"t{int(rng.integers(300))}"],
            "language": "es" if rng.random() < 0.03 else "en",
            "status": "draft" if rng.random() < 0.02 else "published",
            "paywalled": bool(rng.random() < 0.05),
        }
        if rng.random() < 0.2:
            record["story_id"] = f"s{cluster}-{int(rng.integers(20))}"
        out.append(record)
    return out


def block_seconds(vectors: np.ndarray) -> dict[str, float]:
    """One block of the precompute by each exact method, on the same data (best of two, after
    a small warm-up search that makes each method's copy of the vectors)."""
    from recommender.vector_index import EXACT_METHODS, ExactIndex

    queries = np.ascontiguousarray(vectors[:BLOCK])
    out = {}
    for name in EXACT_METHODS:
        index = ExactIndex(vectors, method=name)
        index.search(queries[:8], 51)
        times = []
        for _ in range(2):
            started = time.perf_counter()
            index.search(queries, 51)
            times.append(time.perf_counter() - started)
        out[name] = min(times)
    return out


def plain_product_seconds(vectors: np.ndarray) -> float:
    """The all-pairs product alone, in the same blocks, with no selection."""
    started = time.perf_counter()
    for i in range(0, len(vectors), BLOCK):
        _ = vectors[i:i + BLOCK] @ vectors.T
    return time.perf_counter() - started


# VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forking parent.
SERVING = """
import sys
from recommender import Recommender
rec = Recommender.open(sys.argv[1])
for article_id in sys.argv[2:]:
    rec.page(article_id)
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]) / 1024)
"""


def serving_memory(index: Path, ids: list[str]) -> float:
    """Peak resident memory of a fresh process that opens the index and renders pages."""
    out = subprocess.run([sys.executable, "-c", SERVING, str(index), *ids], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def news_page_latency(index: Path) -> None:
    """page() p50/p99 over every article of the real news index, at two clocks: wall time,
    and this thread's CPU time (what the page costs when other work shares the cores; the
    load average is printed beside it)."""
    for label, now in (("as of 2017-04-01", datetime(2017, 4, 1, tzinfo=UTC)),
                       ("as of today", None)):
        rec = Recommender.open(index, now=now, page_memo=0)  # every page computed
        ids = rec.ids()
        for article_id in ids[:50]:  # warm-up: lazy loads, caches
            rec.page(article_id)
        wall, cpu = [], []
        for article_id in ids:
            t0, c0 = time.perf_counter(), time.thread_time()
            rec.page(article_id)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - t0)
        print(f"news-stories page(), {len(ids):,} articles, {label:<17} p50 "
              f"{percentile_ms(wall, 50):6.3f} ms   p99 {percentile_ms(wall, 99):6.3f} ms   "
              f"(CPU p50 {percentile_ms(cpu, 50):.3f} p99 {percentile_ms(cpu, 99):.3f} ms; "
              f"load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--news-index", type=Path, default=Path("indexes/news-stories"))
    parser.add_argument("--news-only", action="store_true",
                        help="only the real news index, no synthetic build")
    args = parser.parse_args()
    if (args.news_index / "CURRENT").is_file():
        news_page_latency(args.news_index)
    if args.news_only:
        return
    n = args.articles
    clusters = max(n // 40, 2)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        data = records(n, clusters)
        embedder = ClusteredEmbedder(clusters)
        started = time.perf_counter()
        report = build_index(index, data, embedder=embedder)
        build_seconds = time.perf_counter() - started
        changed = [dict(r, body=f"{r['body']} updated") for r in data[:3]]
        del data

        started = time.perf_counter()
        rec = Recommender.open(index, page_memo=0)  # every page computed, none kept
        open_seconds = time.perf_counter() - started
        vectors = np.array(rec.snapshot().vectors)
        product = plain_product_seconds(vectors)
        methods = block_seconds(vectors)
        del vectors

        rng = np.random.default_rng(7)
        ids = rec.ids()
        sample = [ids[i] for i in rng.integers(0, len(ids), args.queries)]
        for article_id in sample[:50]:  # warm-up: lazy loads, caches
            rec.page(article_id)
        timings: dict[str, list[float]] = {"related": [], "page": []}
        for article_id in sample:
            t0 = time.perf_counter()
            rec.related(article_id, slot="you_may_also_like")
            t1 = time.perf_counter()
            rec.page(article_id)
            t2 = time.perf_counter()
            timings["related"].append(t1 - t0)
            timings["page"].append(t2 - t1)
        started = time.perf_counter()
        update = build_index(index, changed, embedder=embedder, incremental=True)
        update_seconds = time.perf_counter() - started
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        serving_mb = serving_memory(index, sample[:200])

    print(f"{n:,} synthetic articles, 384-d, {clusters:,} clusters; {args.queries:,} lookups")
    print(f"build (all stages)              {build_seconds:8.1f} s")
    print(f"  all-pairs top-50 precompute   {report.neighbours_seconds:8.1f} s   "
          f"({report.neighbours_mode})")
    print(f"  plain numpy product, same size{product:8.1f} s   "
          f"(precompute / product = {report.neighbours_seconds / product:.2f})")
    print("  one block of 1,024 queries:    " + ", ".join(
        f"{name} {seconds:.2f} s" for name, seconds in methods.items()))
    print(f"open                            {open_seconds * 1000:8.1f} ms")
    for name, samples in timings.items():
        print(f"{name + '()':<12} p50 {percentile_ms(samples, 50):6.3f} ms   "
              f"p99 {percentile_ms(samples, 99):6.3f} ms")
    print(f"update, 3 changed articles      {update_seconds:8.1f} s   (embedded "
          f"{update.embedded}, table {update.neighbours_mode} {update.neighbours_seconds:.1f} s)")
    print(f"peak resident memory, this run  {rss_mb:8.0f} MB   (build and queries)")
    print(f"serving process, open + 200 pages{serving_mb:7.0f} MB   (peak resident)")
    digest = hashlib.sha256(" ".join(sample[:10]).encode()).hexdigest()[:8]
    print(f"(query sample {digest})")


if __name__ == "__main__":
    main()
