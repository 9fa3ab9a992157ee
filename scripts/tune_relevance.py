"""Choose the relevance model by measurement: a logistic regression over the ranking's own
features (embedding cosine, word TF-IDF, names TF-IDF, time proximity and their products with
proximity), fitted on the judged news-stories pages and scored on held-out queries.

    python scripts/tune_relevance.py [--index indexes/news-stories] [--folds 5] [--seeds 5]

Each fold fits on the other queries' candidates (the precomputed table the slots read:
label = judged related or same story, unjudged = 0) and ranks the held-out queries'
candidates. It prints the held-out same-story retrieval (P@min(5,gold), R@10), the share of
related links at positions 3-8 (what You may also like sees once See also has taken the top),
beside the current defaults and the plain parts, then the weights fitted on all queries as
a `[ranking]` block. Build the index first (`python scripts/evaluate_news.py` does).

The names features are scaled by --names-prior (0.5) before the fit, which puts a stronger
L2 prior on their weights: names are read from capitalisation, a heuristic, and a heavy
names weight costs topic-level relevance elsewhere (BBC topics nDCG@10 0.928 at the
unscaled fit, 0.933 at 0.5, with the same held-out figures here within 0.003).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from recommender import Recommender
from recommender.config import RankingConfig
from recommender.datasets import judgment_files
from recommender.evaluation import Judgments, story_retrieval
from recommender.ranking import Candidates, Ranker

FEATURES = ("semantic", "lexical", "names", "proximity", "semantic_proximity",
            "lexical_proximity", "names_proximity")


def features(ranker: Ranker, source: int, c: Candidates) -> np.ndarray:
    _, parts = ranker.relevance(source, c)
    p = parts["proximity"]
    columns = [parts["semantic"], parts["lexical"], parts["names"], p,
               parts["semantic"] * p, parts["lexical"] * p, parts["names"] * p]
    return np.stack(columns, axis=1).astype(np.float64)


def pools(rec: Recommender, labels: Judgments) -> dict[str, tuple[Candidates, np.ndarray]]:
    """Each judged query's candidates (the precomputed table) and their features."""
    version = rec.snapshot()
    ranker = Ranker(version, RankingConfig())
    table = version.neighbour_table()
    assert table is not None, "the index has no candidate table"
    out = {}
    for q in labels.queries():
        if q not in version.position:
            continue
        source = version.position[q]
        keep = np.asarray(table[0][source]) >= 0
        c = Candidates(*(np.asarray(part[source])[keep].astype(dtype) for part, dtype in
                         zip(table, (np.int64, np.float32, np.float32, np.float32),
                             strict=True)))
        out[q] = (c, features(ranker, source, c))
    return out


def measure(ranked: dict[str, list[str]], labels: Judgments) -> dict[str, float]:
    """The same-story retrieval of `recommender evaluate` (story_retrieval), and the share
    related at ranks 3-8."""
    story = story_retrieval(labels, lambda q, k: [(d, 0.0) for d in ranked[q][:k]],
                            list(ranked))
    related = [labels.grade(q, d) > 0 for q, docs in ranked.items() for d in docs[2:8]]
    return {"P@min(5,gold)": story["precision@min(5,gold)"], "R@10": story["recall@10"],
            "related@3-8": float(np.mean(related))}


def rank(pool: dict[str, tuple[Candidates, np.ndarray]], ids: list[str], q: str,
         score: np.ndarray) -> list[str]:
    c, _ = pool[q]
    return [ids[int(r)] for r in c.rows[np.argsort(-score, kind="stable")]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="indexes/news-stories")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation")
    parser.add_argument("--names-prior", type=float, default=0.5,
                        help="scale of the names features during the fit (1 = no extra prior)")
    args = parser.parse_args()
    rec = Recommender.open(args.index)
    labels = Judgments(*judgment_files("news-stories"))
    pool = pools(rec, labels)
    ids = rec.snapshot().ids
    queries = sorted(pool)

    def target(q: str) -> np.ndarray:
        c, _ = pool[q]
        return np.array([labels.grade(q, ids[int(r)]) > 0 for r in c.rows], dtype=int)

    defaults = RankingConfig()
    weights = np.array([getattr(defaults, f"{name}_weight") for name in FEATURES])
    plain: dict[str, Any] = {
        "current defaults": lambda X: X @ weights + defaults.bias,
        "cosine only": lambda X: X[:, 0],
        "word TF-IDF only": lambda X: X[:, 1],
    }
    print(f"{args.index}: {len(queries)} judged queries, {args.folds}-fold CV x {args.seeds} "
          "seeds (held-out queries only)")
    print(f"{'model':<28}{'P@min(5,gold)':>15}{'R@10':>8}{'related@3-8':>13}")
    for name, fn in plain.items():
        m = measure({q: rank(pool, ids, q, fn(pool[q][1])) for q in queries}, labels)
        print(f"{name:<28}{m['P@min(5,gold)']:15.3f}{m['R@10']:8.3f}{m['related@3-8']:13.3f}")
    scale = np.array([args.names_prior if "names" in name else 1.0 for name in FEATURES])
    for q in queries:  # fit on scaled features; weights are reported on the original scale
        pool[q] = (pool[q][0], pool[q][1] * scale)
    held_out = []
    for seed in range(args.seeds):
        ranked: dict[str, list[str]] = {}
        for train, test in KFold(args.folds, shuffle=True, random_state=seed).split(queries):
            X = np.concatenate([pool[queries[i]][1] for i in train])
            y = np.concatenate([target(queries[i]) for i in train])
            model = LogisticRegression(C=args.C, max_iter=5000).fit(X, y)
            for i in test:
                q = queries[i]
                ranked[q] = rank(pool, ids, q, model.decision_function(pool[q][1]))
        held_out.append(measure(ranked, labels))
    m = {k: float(np.mean([h[k] for h in held_out])) for k in held_out[0]}
    spread = {k: float(np.std([h[k] for h in held_out])) for k in held_out[0]}
    print(f"{'logistic, held-out folds':<28}{m['P@min(5,gold)']:15.3f}{m['R@10']:8.3f}"
          f"{m['related@3-8']:13.3f}")
    print(f"{'  (std over seeds)':<28}{spread['P@min(5,gold)']:15.3f}{spread['R@10']:8.3f}"
          f"{spread['related@3-8']:13.3f}")
    X = np.concatenate([pool[q][1] for q in queries])
    y = np.concatenate([target(q) for q in queries])
    model = LogisticRegression(C=args.C, max_iter=5000).fit(X, y)
    print("\nfitted on all queries, for recommender/config.py (RankingConfig):")
    print(f"bias = {model.intercept_[0]:.2f}")
    for name, weight in zip(FEATURES, model.coef_[0] * scale, strict=True):
        print(f"{name}_weight = {weight:.2f}")


if __name__ == "__main__":
    main()
