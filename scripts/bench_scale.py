"""Build, update and serve at scale: N synthetic articles (1,000,000 by default).

Vectors are synthetic 384-d unit vectors shaped like text embeddings (a shared direction,
topics of ~2,000 articles, stories of ~40, per-article noise: cosines of ~0.1 between random
articles, ~0.45 at the 50th neighbour, like all-MiniLM-L6-v2 on news), with the realistic
metadata of `bench_related.py` (sections, tags, two years of dates, drafts, paywalled and
Spanish articles, stories). Embedding is synthetic, so its time is excluded.

Reports: full build time by stage; the candidate table's method and its recall@50 against
exact search on a sample (as the build recorded it in the manifest); updates of 1% and of 3
articles; peak memory of each build (each runs in a fresh process, as from cron); serving
memory and page() p50/p99 in a fresh process (every page computed; and a page asked again,
from the PageMemo). With --compare-faiss (the default up to 200,000
articles) it also computes the all-pairs table with faiss.knn in the same run and checks the
lists are identical.

    python scripts/bench_scale.py [--articles 1000000] [--queries 2000] [--keep DIR]

It takes ~20 minutes at 1M on a 2-core machine; a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_related import ClusteredEmbedder, percentile_ms, records

from recommender.embedding import normalise

STORY_SIZE = 40      # articles per story (bench_related's clusters)
TOPIC_SIZE = 2000    # articles per topic
NEAR = 1e-5          # scores this close are a near-tie for step_compare (fp32 sums of 384 terms)


class TopicEmbedder(ClusteredEmbedder):
    """bench_related's "cluster C item I" titles, with clusters (stories) inside topics."""

    name = "synthetic-topics-384"
    noise = 0.592 / np.sqrt(ClusteredEmbedder.dimension)  # squared weight 0.35 of the total

    def __init__(self, clusters: int, topics: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        d = self.dimension
        shared = normalise(rng.standard_normal((1, d)))[0]
        topic = normalise(rng.standard_normal((topics, d)))
        story = normalise(rng.standard_normal((clusters, d)))
        # squared weights 0.1 / 0.25 / 0.3 / 0.35: random pairs ~0.1, same topic ~0.35,
        # same story ~0.65 (all-MiniLM-L6-v2 on news-stories: random median 0.10, 50th
        # neighbour 0.40 at 3.8k articles)
        self.centres = (0.316 * shared + 0.5 * topic[np.arange(clusters) % topics]
                        + 0.548 * story).astype(np.float32)


def shapes(n: int) -> tuple[int, int]:
    return max(n // STORY_SIZE, 2), max(n // TOPIC_SIZE, 2)


def moved(data: list[dict[str, Any]], count: int, clusters: int, seed: int
          ) -> list[dict[str, Any]]:
    """`count` articles edited into another story: new title, body and vector."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(data), count, replace=False):
        record = dict(data[int(i)])
        item = str(record["title"]).split()[3]
        record["title"] = f"cluster {int(rng.integers(clusters))} item {item}"
        record["body"] = f"{record['body']} updated"
        out.append(record)
    return out


def peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


# --------------------------------------------------------------------------- child steps


def step_build(index: Path, n: int, update: int) -> dict[str, Any]:
    """A full build (update=0) or an update of `update` articles, in this process."""
    from recommender import build_index

    clusters, topics = shapes(n)
    embedder = TopicEmbedder(clusters, topics)
    data = records(n, clusters)
    if update:
        data = moved(data, update, clusters, seed=update)
    before = peak_mb()
    started = time.perf_counter()
    report = build_index(index, data, embedder=embedder, incremental=bool(update))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "report": report.to_dict(), "peak_mb": peak_mb(),
            "peak_before_mb": before}


def step_serve(index: Path, queries: int, prefetch: bool = True) -> dict[str, Any]:
    """Pages in a fresh process; prefetch=False (`--step serve DIR N noprefetch`): without
    reading the files ahead, what a cold page cache costs."""
    from recommender import Recommender

    started = time.perf_counter()
    rec = Recommender.open(index, page_memo=0)  # every page computed, none kept
    open_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if prefetch:
        rec.prefetch()  # as the server does before it serves a version
    prefetch_seconds = time.perf_counter() - started
    ids = rec.ids()
    rng = np.random.default_rng(7)
    sample = [ids[i] for i in rng.integers(0, len(ids), queries)]
    for article_id in sample[:200]:  # warm-up, and what bench_related's serving RSS renders
        rec.page(article_id)
    rss_after_200 = peak_mb()
    samples = []
    for article_id in sample:
        t0 = time.perf_counter()
        rec.page(article_id)
        samples.append(time.perf_counter() - t0)
    rss_mb = peak_mb()
    status = Path("/proc/self/status").read_text()
    anon, file = (int(status.split(f"{k}:")[1].split()[0]) / 1024 for k in ("RssAnon", "RssFile"))
    # a page asked again whose inputs did not change: from the PageMemo
    kept = Recommender.open(index)
    for article_id in sample[:1000]:
        kept.page(article_id)
    again = []
    for article_id in sample[:1000]:
        t0 = time.perf_counter()
        kept.page(article_id)
        again.append(time.perf_counter() - t0)
    return {"open_seconds": open_seconds, "prefetch_seconds": prefetch_seconds,
            "rss_200_mb": rss_after_200, "rss_mb": rss_mb,
            "anon_mb": anon, "file_mb": file,
            "p50_ms": percentile_ms(samples, 50), "p99_ms": percentile_ms(samples, 99),
            "kept_p50_ms": percentile_ms(again, 50), "kept_p99_ms": percentile_ms(again, 99)}


def step_compare(index: Path) -> dict[str, Any]:
    """The all-pairs table by the build's own choice and by faiss.knn, interleaved twice on the
    same vectors: seconds of each and how far the lists agree. faiss orders scores within a
    rounding error as its own arithmetic ranks them, ours puts them in row order
    (`neighbours.best_first`), so the lists are compared as they come and with faiss' near-ties
    put in row order too; a row whose lists still differ is checked to differ only by
    near-ties (each position's scores within NEAR of each other)."""
    from recommender import Recommender
    from recommender.neighbours import best_first, compute_table

    version = Recommender.open(index).snapshot()
    vectors = np.asarray(version.vectors)
    published = np.asarray(version.columns.published)
    times: dict[str, list[float]] = {}
    tables: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    for _ in range(2):
        for method in ("exact", "faiss"):
            started = time.perf_counter()
            tables[method] = compute_table(vectors, published, 50, method=method)
            times.setdefault(method, []).append(time.perf_counter() - started)
    (ours, our_scores, used), (theirs, their_scores, _) = tables["exact"], tables["faiss"]
    order = best_first(their_scores, np.where(theirs >= 0, theirs, len(vectors)))
    tied = np.take_along_axis(theirs, order, axis=1)
    tied_scores = np.take_along_axis(their_scores, order, axis=1)
    differ = ~(ours == tied).all(axis=1)
    gap = np.abs(our_scores[differ] - tied_scores[differ])
    return {"method": used, "exact_seconds": times["exact"], "faiss_seconds": times["faiss"],
            "identical_lists": float((ours == theirs).all(axis=1).mean()),
            "identical_tie_order": float(1 - differ.mean()),
            "identical_sets": float(np.mean([set(a) == set(b) for a, b in
                                             zip(ours, theirs, strict=True)])),
            "differing_rows": int(differ.sum()),
            "differing_only_by_near_ties": bool((gap <= NEAR).all()),
            "largest_gap_in_differing_rows": float(gap.max()) if gap.size else 0.0,
            "max_score_difference": float(np.abs(our_scores - tied_scores).max())}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--step", *args], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def print_build(label: str, result: dict[str, Any]) -> None:
    report = result["report"]
    stages = report["stages"]
    excluded = stages.get("embed", 0.0)
    print(f"{label:<34} {result['seconds'] - excluded:8.1f} s   (embedding excluded; "
          f"{report['embedded']:,} embedded in {excluded:.1f} s; peak memory "
          f"{result['peak_mb']:,.0f} MB)")
    for name, seconds in stages.items():
        if name != "embed":
            print(f"    {name:<30} {seconds:8.1f} s")
    print(f"    table: {report['neighbours_mode']}, recall@50 {report['neighbours_recall']:.4f}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--compare-faiss", action=argparse.BooleanOptionalAction, default=None,
                        help="also time faiss.knn all-pairs [default: up to 200,000 articles]")
    parser.add_argument("--keep", type=Path, default=None,
                        help="build here and keep the index (default: a temporary directory)")
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        name, index, *rest = args.step
        steps = {"build": lambda: step_build(Path(index), int(rest[0]), int(rest[1])),
                 "serve": lambda: step_serve(Path(index), int(rest[0]),
                                             prefetch=rest[1:] != ["noprefetch"]),
                 "compare": lambda: step_compare(Path(index))}
        print(json.dumps(steps[name]()))
        return
    n = args.articles
    compare = args.compare_faiss if args.compare_faiss is not None else n <= 200_000
    clusters, topics = shapes(n)
    print(f"{n:,} synthetic articles, 384-d, {topics:,} topics, {clusters:,} stories; "
          f"{args.queries:,} page() lookups", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        index = args.keep or Path(tmp) / "index"
        full = run_child("build", str(index), str(n), "0")
        print_build("full build", full)
        one_percent = run_child("build", str(index), str(n), str(n // 100))
        print_build(f"update, {n // 100:,} changed (1%)", one_percent)
        full_seconds = full["seconds"] - full["report"]["stages"].get("embed", 0.0)
        update_seconds = (one_percent["seconds"]
                          - one_percent["report"]["stages"].get("embed", 0.0))
        print(f"1% update / full build               {update_seconds / full_seconds:8.1%}")
        print_build("update, 3 changed", run_child("build", str(index), str(n), "3"))
        serve = run_child("serve", str(index), str(args.queries))
        print(f"open                                 {serve['open_seconds'] * 1000:8.1f} ms")
        print(f"prefetch (files read ahead)          {serve['prefetch_seconds'] * 1000:8.1f} ms")
        print(f"page() p50 / p99                     {serve['p50_ms']:8.3f} / "
              f"{serve['p99_ms']:.3f} ms")
        print(f"page() kept (PageMemo) p50 / p99     {serve['kept_p50_ms']:8.3f} / "
              f"{serve['kept_p99_ms']:.3f} ms")
        print(f"serving process, open + 200 pages    {serve['rss_200_mb']:8.0f} MB   (peak "
              f"resident; {serve['rss_mb']:.0f} MB after all {args.queries:,}: "
              f"{serve['anon_mb']:.0f} MB the process' own, {serve['file_mb']:.0f} MB of "
              f"mapped index files, shared page cache)", flush=True)
        if compare:
            pairs = run_child("compare", str(index))
            ours, theirs = min(pairs["exact_seconds"]), min(pairs["faiss_seconds"])
            print(f"all-pairs top-50, {pairs['method']:<18} {ours:8.1f} s   (best of 2, "
                  f"interleaved)")
            print(f"all-pairs top-50, faiss.knn          {theirs:8.1f} s   "
                  f"(faiss / ours = {theirs / ours:.2f})")
            print(f"  identical lists {pairs['identical_lists']:.4f} as they come, "
                  f"{pairs['identical_tie_order']:.4f} with near-ties in row order; identical "
                  f"sets {pairs['identical_sets']:.4f}; max score difference "
                  f"{pairs['max_score_difference']:.1e}")
            print(f"  {pairs['differing_rows']:,} rows differ; only by near-ties (scores within "
                  f"{NEAR:.0e} place by place): {pairs['differing_only_by_near_ties']} "
                  f"(largest gap {pairs['largest_gap_in_differing_rows']:.1e})")


if __name__ == "__main__":
    main()
