"""Choose the relevance weights by measurement: nDCG@10 and P@10 of the relevance ranking
(before slot policy) for several lexical/semantic/tag weightings, on labelled data.

    python scripts/tune_relevance.py --index indexes/bbc --label-field label
    python scripts/tune_relevance.py --index indexes/demo --label-field fixture_story

Build the indexes first (`recommender datasets export bbc --out bbc.jsonl`,
`recommender build bbc.jsonl --index indexes/bbc`; `recommender demo`).
"""

from __future__ import annotations

import argparse
import dataclasses

from recommender import Recommender
from recommender.config import Config, RankingConfig
from recommender.evaluation import FieldLabels, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--label-field", required=True)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=None)
    args = parser.parse_args()
    base = Recommender.open(args.index)
    labels = FieldLabels(args.label_field, base)
    grid = [(1.0, 0.0, 0.0), (0.9, 0.1, 0.0), (0.85, 0.15, 0.0), (0.8, 0.2, 0.0),
            (0.7, 0.3, 0.0), (0.6, 0.4, 0.0), (0.5, 0.5, 0.0), (0.0, 1.0, 0.0),
            (0.85, 0.1, 0.05), (0.65, 0.3, 0.05), (0.6, 0.3, 0.1)]
    print(f"{args.index}: labels {args.label_field}, relevance ranking (similar), k={args.k}")
    print(f"{'semantic':>8} {'lexical':>8} {'tags':>6} {'P@k':>7} {'nDCG@k':>7} {'MRR':>7}")
    for semantic, lexical, tags in grid:
        ranking = RankingConfig(semantic_weight=semantic, lexical_weight=lexical,
                                tag_weight=tags)
        rec = Recommender.open(args.index, config=dataclasses.replace(Config(),
                                                                      ranking=ranking))
        result = evaluate(rec, labels, k=args.k, systems=("relevance",), queries=args.queries)
        m = result.systems["relevance"]
        print(f"{semantic:8.2f} {lexical:8.2f} {tags:6.2f} {m[f'precision@{args.k}']:7.3f} "
              f"{m[f'ndcg@{args.k}']:7.3f} {m['mrr']:7.3f}")


if __name__ == "__main__":
    main()
