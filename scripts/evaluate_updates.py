"""What updating an index costs its relevance: an index built in full against one built from
most of the articles and then updated with the rest (the TF-IDF weights frozen at the first
build's fit), on the judged news pages and on the BBC topics.

    python scripts/evaluate_updates.py [--news-index indexes/news-stories]
                                       [--bbc-index indexes/bbc] [--share 0.2] [--batches 4]

The given indexes supply the vectors (every build here reuses them by content hash, so
nothing is embedded; build them first as the README's evaluation section says). The updates
add the last `share` x the first build's count of the corpus's articles (0.2: the most that
`LEXICAL_REFIT_SHARE` lets updates add before one refits) in `batches` updates. Also shown:
the given index itself, as it was built (with the TF-IDF of its own format).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from recommender import Recommender, build_index
from recommender.datasets import export_jsonl, fetch, judgment_files
from recommender.evaluation import FieldLabels, Judgments, evaluate, judged_pages
from recommender.store import IndexDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_news import CORPUS_END


def records_of(dataset: str, scratch: Path) -> list[dict[str, Any]]:
    path = scratch / f"{dataset}.jsonl"
    export_jsonl(fetch(dataset), path)
    return [json.loads(line) for line in path.read_text().splitlines()]


def variants(source: Path, records: list[dict[str, Any]], share: float, batches: int,
             scratch: Path) -> dict[str, Path]:
    """{"as given": source, "full build": ..., "built by updates": ...}"""
    full, updated = scratch / f"{source.name}-full", scratch / f"{source.name}-updated"
    for target in (full, updated):
        shutil.copytree(source, target)
    build_index(full, records, max_removed_share=1.0)
    first = round(len(records) / (1 + share))
    build_index(updated, records[:first], max_removed_share=1.0)
    rest = records[first:]
    step = -(-len(rest) // batches)
    for start in range(0, len(rest), step):
        report = build_index(updated, rest[start:start + step], incremental=True)
        assert report.neighbours_mode == "incremental", report.neighbours_mode
    version = Recommender.open(updated).snapshot()
    extra = version.manifest.extra
    print(f"{source.name}: first build {first:,} articles, then {len(rest):,} added in "
          f"{batches} updates; weights fitted on {extra.get('lexical_fitted_on')}, "
          f"{extra.get('lexical_changed_since_fit')} articles changed since", flush=True)
    return {"as given": source, "full build": full, "built by updates": updated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--news-index", type=Path, default=Path("indexes/news-stories"))
    parser.add_argument("--bbc-index", type=Path, default=Path("indexes/bbc"))
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    for index in (args.news_index, args.bbc_index):
        if not IndexDirectory(index).exists():
            parser.error(f"no index at {index}: build it first (README, Evaluation)")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        news = variants(args.news_index, records_of("news-stories", scratch), args.share,
                        args.batches, scratch)
        labels = Judgments(*judgment_files("news-stories"))
        print(f"\n{'news-stories (43 judged pages)':<34}{'see also same':>14}"
              f"{'more links':>11}{'more related':>13}{'similar P@5':>12}{'R@10':>7}"
              f"{'tfidf P@5':>10}")
        for name, path in news.items():
            r = judged_pages(Recommender.open(path, now=CORPUS_END), labels)
            s, more = r["story_retrieval"], r["slots"]["you_may_also_like"]
            print(f"{name:<34}{r['slots']['see_also']['same_story_share']:14.1%}"
                  f"{more['links_per_page']:11.2f}{more['related_share']:13.1%}"
                  f"{s['similar']['precision@min(5,gold)']:12.3f}"
                  f"{s['similar']['recall@10']:7.3f}{s['tfidf']['precision@min(5,gold)']:10.3f}",
                  flush=True)
        bbc = variants(args.bbc_index, records_of("bbc", scratch), args.share, args.batches,
                       scratch)
        print(f"\n{'BBC topics, nDCG@10':<34}{'recommender':>12}{'relevance':>10}{'tfidf':>7}")
        for name, path in bbc.items():
            rec = Recommender.open(path)
            result = evaluate(rec, FieldLabels("label", rec), k=10,
                              systems=("recommender", "relevance", "tfidf"))
            ndcg = {system: m["ndcg@10"] for system, m in result.systems.items()}
            print(f"{name:<34}{ndcg['recommender']:12.3f}{ndcg['relevance']:10.3f}"
                  f"{ndcg['tfidf']:7.3f}", flush=True)


if __name__ == "__main__":
    main()
