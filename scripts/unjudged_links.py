"""List the links the slots (and the top of `similar()`) show on the judged news-stories pages
that have no judgment yet, so they can be judged by the rubric of the dataset's README and
the grades added to recommender/data/judgments/news-stories-added.jsonl (ids and grades only;
the corpus text is never committed).

    python scripts/unjudged_links.py [--index indexes/news-stories] [--similar 10] [--json]

Prints one block per query: the query's title and date, then each unjudged link with the
slot that shows it, its date and title (read from the local index, not from the repository).
As of 2017-04-01 and as of today, like scripts/evaluate_news.py.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from recommender import Recommender
from recommender.datasets import judgment_files
from recommender.evaluation import Judgments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="indexes/news-stories", type=Path)
    parser.add_argument("--similar", type=int, default=10,
                        help="also the top N of similar() (0: slots only)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    labels = Judgments(*judgment_files("news-stories"))
    wanted: dict[str, dict[str, set[str]]] = {}
    for now in (datetime(2017, 4, 1, tzinfo=UTC), None):
        rec = Recommender.open(args.index, now=now)
        for q in labels.queries():
            if q not in rec:
                continue
            shown = {slot: [r.id for r in links] for slot, links in rec.page(q).items()}
            if args.similar:
                shown["similar"] = [r.id for r in rec.similar(q, k=args.similar)]
            for slot, ids in shown.items():
                for doc in ids:
                    if not labels.judged(q, doc):
                        wanted.setdefault(q, {}).setdefault(doc, set()).add(slot)
    if args.json:
        print(json.dumps([{"query": q, "doc": d, "shown_in": sorted(s)}
                          for q, docs in wanted.items() for d, s in docs.items()], indent=1))
        return
    total = 0
    for q, docs in wanted.items():
        source = rec.article(q)
        print(f"\n{q}  {source.published_at:%Y-%m-%d}  {source.title}")
        for doc, slots in sorted(docs.items()):
            article = rec.article(doc)
            date = f"{article.published_at:%Y-%m-%d}" if article.published_at else "undated"
            print(f"  {doc:<9} {date}  [{', '.join(sorted(slots))}]  {article.title}")
            total += 1
    print(f"\n{total} unjudged links on {len(wanted)} pages")


if __name__ == "__main__":
    main()
