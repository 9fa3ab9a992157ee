"""Offline evaluation: relevance metrics against labels, list-health metrics of the slots as
served, and baselines run side by side on the same index.

    result = evaluate(rec, FieldLabels("section"), k=10)
    result.systems["recommender"]["ndcg@10"]

Systems are functions `(article_id, k) -> [(id, score), ...]`. The baselines are what sites
use today: `random`, `recent` (newest first), `tfidf` (the classic related-posts plugin) and
`dense` (embedding cosine only); `recommender` is the project's full slot policy and
`relevance` its fused relevance ranking before the policy.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import stats
from sklearn.metrics import ndcg_score

from .config import RankingConfig
from .errors import InputError
from .ranking import Candidates, Ranker
from .recommender import Recommender
from .store import IndexVersion

Ranked = list[tuple[str, float]]
System = Callable[[str, int], Ranked]
BASELINES = ("random", "recent", "tfidf", "dense")


# --------------------------------------------------------------------------- labels


class Labels(Protocol):
    def grade(self, query: str, doc: str) -> float:
        """Relevance of doc for query: 0 = not relevant, higher = more."""
        ...

    def relevant(self, query: str) -> set[str]:
        """Every doc with grade > 0 for query (for recall and ideal DCG)."""
        ...

    def queries(self) -> list[str]:
        ...


class FieldLabels:
    """Same value of a field (an article attribute like `section` or `story_id`, or a
    metadata key like `label`) = relevant (grade 1)."""

    def __init__(self, field_name: str, rec: Recommender) -> None:
        self.field = field_name
        self._value: dict[str, str] = {}
        published = set()
        for article in rec.articles():
            value = getattr(article, field_name, None) if field_name in _ATTRIBUTES \
                else article.metadata.get(field_name)
            if value not in (None, ""):
                self._value[article.id] = str(value)
            if article.is_published:
                published.add(article.id)
        if not self._value:
            raise InputError(f"no article has a value for the label field {field_name!r}")
        self._groups: dict[str, set[str]] = {}
        for article_id, value in self._value.items():
            if article_id in published:
                self._groups.setdefault(value, set()).add(article_id)
        self._published = published

    def grade(self, query: str, doc: str) -> float:
        value = self._value.get(query)
        return 1.0 if value is not None and self._value.get(doc) == value else 0.0

    def relevant(self, query: str) -> set[str]:
        value = self._value.get(query)
        return (self._groups.get(value, set()) - {query}) if value is not None else set()

    def queries(self) -> list[str]:
        return sorted(q for q in self._value if q in self._published and self.relevant(q))


_ATTRIBUTES = ("section", "story_id", "language", "status")


class Judgments:
    """Graded judgments, JSON Lines of {"query": id, "doc": id, "grade": 0..3}, from one or
    more files (a later file's grade for a pair replaces an earlier one's). Unjudged pairs
    count as 0 in the metrics; `judged` tells them apart."""

    def __init__(self, *paths: str | Path) -> None:
        self._grades: dict[str, dict[str, float]] = {}
        for path in paths:
            for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self._grades.setdefault(str(row["query"]), {})[str(row["doc"])] = \
                        float(row["grade"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise InputError(f"{path}:{number}: expected "
                                     '{"query": ID, "doc": ID, "grade": N}: ' + str(exc)) \
                        from exc

    def grade(self, query: str, doc: str) -> float:
        return self._grades.get(query, {}).get(doc, 0.0)

    def judged(self, query: str, doc: str) -> bool:
        return doc in self._grades.get(query, {})

    def with_grade(self, query: str, grade: float) -> set[str]:
        """Docs judged exactly `grade` for query (2 = the same story)."""
        return {d for d, g in self._grades.get(query, {}).items() if g == grade}

    def relevant(self, query: str) -> set[str]:
        return {d for d, g in self._grades.get(query, {}).items() if g > 0}

    def queries(self) -> list[str]:
        return sorted(q for q in self._grades if self.relevant(q))


def read_ratings(path: str | Path) -> list[tuple[str, str, float]]:
    """Pairwise similarity ratings, JSON Lines of {"a": id, "b": id, "rating": number}."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((str(row["a"]), str(row["b"]), float(row["rating"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{number}: expected "
                             '{"a": ID, "b": ID, "rating": N}: ' + str(exc)) from exc
    return rows


# --------------------------------------------------------------------------- metrics


def precision_at_k(grades: Sequence[float], k: int) -> float:
    return float(np.count_nonzero(np.asarray(grades[:k]) > 0)) / k


def recall_at_k(grades: Sequence[float], k: int, relevant: int) -> float:
    return float(np.count_nonzero(np.asarray(grades[:k]) > 0)) / relevant if relevant else 0.0


def ndcg_at_k(grades: Sequence[float], ideal: Sequence[float], k: int) -> float:
    """nDCG@k (scikit-learn's, linear gains) of a ranked list against the ideal grades of
    every relevant document, retrieved or not."""
    retrieved = list(grades[:k])
    missing = sorted(ideal, reverse=True)
    # The retrieved list, then the relevant documents it missed, ranked after it.
    y_true = np.array([retrieved + missing + [0.0]], dtype=float)
    n = y_true.shape[1]
    y_score = np.array([np.arange(n, 0, -1)], dtype=float)
    if not y_true.any():
        return 0.0
    return float(ndcg_score(y_true, y_score, k=k))


def reciprocal_rank(grades: Sequence[float]) -> float:
    hits = np.flatnonzero(np.asarray(grades) > 0)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def average_precision_at_k(grades: Sequence[float], k: int, relevant: int) -> float:
    """AP@k = sum of precision@i at each relevant rank i <= k, over min(relevant, k)."""
    hits = np.asarray(grades[:k]) > 0
    if not relevant or not hits.any():
        return 0.0
    precisions = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precisions[hits].sum() / min(relevant, k))


def correlation(scores: Sequence[float], ratings: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (scipy) between system scores and human ratings."""
    if len(scores) < 3:
        return {"pearson": math.nan, "spearman": math.nan, "pairs": float(len(scores))}
    return {"pearson": float(stats.pearsonr(scores, ratings).statistic),
            "spearman": float(stats.spearmanr(scores, ratings).statistic),
            "pairs": float(len(scores))}


# --------------------------------------------------------------------------- systems


def system_recommender(rec: Recommender, slot: str) -> System:
    """The project's full slot policy."""
    def run(article_id: str, k: int) -> Ranked:
        return [(r.id, r.score) for r in rec.related(article_id, slot=slot, k=k)]
    return run


def system_relevance(rec: Recommender) -> System:
    """The project's fused relevance ranking alone (published articles, no slot policy): tells
    how much of a difference comes from the ranking and how much from the policy."""
    def run(article_id: str, k: int) -> Ranked:
        return [(r.id, r.score) for r in rec.similar(article_id, k=k + 20)
                if r.status == "published"][:k]
    return run


def _published_rows(version: IndexVersion) -> np.ndarray:
    rows: np.ndarray = np.flatnonzero(version.columns.published)
    return rows


def _top(version: IndexVersion, scores: np.ndarray, source: int, k: int) -> Ranked:
    scores = scores.astype(np.float64)
    scores[~version.columns.published] = -np.inf
    scores[source] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    return [(version.ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]


def baseline(name: str, rec: Recommender, seed: int = 0) -> System:
    """The baselines, over published articles, never the source itself."""
    version = rec.snapshot()
    published = _published_rows(version)
    if name == "random":
        rng = np.random.default_rng(seed)

        def run_random(article_id: str, k: int) -> Ranked:
            source = version.position[article_id]
            pool = published[published != source]
            picks = rng.choice(pool, size=min(k, len(pool)), replace=False)
            return [(version.ids[i], 0.0) for i in picks]
        return run_random
    if name == "recent":
        ts = version.columns.timestamp
        order = published[np.argsort(-np.nan_to_num(ts[published], nan=-np.inf),
                                      kind="stable")]

        def run_recent(article_id: str, k: int) -> Ranked:
            source = version.position[article_id]
            return [(version.ids[i], float(np.nan_to_num(ts[i]))) for i in order
                    if i != source][:k]
        return run_recent
    if name == "tfidf":
        matrix = version.lexical()

        def run_tfidf(article_id: str, k: int) -> Ranked:
            source = version.position[article_id]
            scores = np.asarray((matrix @ matrix[source].T).toarray()).ravel()
            return _top(version, scores, source, k)
        return run_tfidf
    if name == "dense":
        vectors = version.vectors

        def run_dense(article_id: str, k: int) -> Ranked:
            source = version.position[article_id]
            return _top(version, np.asarray(vectors @ vectors[source]), source, k)
        return run_dense
    raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")


# --------------------------------------------------------------------------- list health


def list_health(rec: Recommender, lists: Mapping[str, Ranked],
                other: Mapping[str, Ranked] | None = None) -> dict[str, float]:
    """Health of recommendation lists (source id -> list): what readers and editors notice."""
    version = rec.snapshot()
    cols, pos = version.columns, version.position
    published = set(np.asarray(version.ids)[cols.published].tolist())
    recommended = {d for ranked in lists.values() for d, _ in ranked}
    shown = [(q, d) for q, ranked in lists.items() for d, _ in ranked]
    total = max(len(shown), 1)
    stories = {a.id: a.story_id for a in version.all_articles()}

    def same_story(a: str, b: str) -> bool:
        return stories[a] is not None and stories[a] == stories[b]

    ages = [(cols.timestamp[pos[q]] - cols.timestamp[pos[d]]) / 86_400 for q, d in shown
            if not (math.isnan(cols.timestamp[pos[q]]) or math.isnan(cols.timestamp[pos[d]]))]
    diversity = []
    story_repeat = 0
    for ranked in lists.values():
        rows = [pos[d] for d, _ in ranked]
        if len(rows) >= 2:
            v = np.asarray(version.vectors[rows])
            sims = v @ v.T
            upper = sims[np.triu_indices(len(rows), 1)]
            diversity.append(1.0 - float(upper.mean()))
        ids = [d for d, _ in ranked]
        if any(same_story(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]):
            story_repeat += 1
    language = cols.language
    out = {
        "coverage": len(recommended & published) / max(len(published), 1),
        "orphan_rate": len(published - recommended) / max(len(published), 1),
        "self_rate": sum(q == d for q, d in shown) / total,
        # the slots' own rule: same meaning, headline or body
        "duplicate_rate": sum(rec.is_duplicate(q, d) for q, d in shown if q != d) / total,
        "same_story_list_rate": story_repeat / max(len(lists), 1),
        "leak_rate": sum(d not in published for _, d in shown) / total,
        "median_age_gap_days": float(np.median(ages)) if ages else math.nan,
        "cross_language_rate": sum(
            bool(language[pos[q]] >= 0 and language[pos[d]] >= 0 and
                 language[pos[q]] != language[pos[d]]) for q, d in shown) / total,
        "intra_list_diversity": float(np.mean(diversity)) if diversity else math.nan,
        "mean_list_length": len(shown) / max(len(lists), 1),
    }
    if other is not None:
        churn = [1.0 - _jaccard({d for d, _ in lists[q]}, {d for d, _ in other.get(q, [])})
                 for q in lists]
        out["churn"] = float(np.mean(churn)) if churn else math.nan
    return out


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvaluationResult:
    k: int
    queries: int
    labels: str
    systems: dict[str, dict[str, float]] = field(default_factory=dict)
    lists: dict[str, dict[str, Ranked]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "queries": self.queries, "labels": self.labels,
                "systems": {name: {m: _clean(v) for m, v in metrics.items()}
                            for name, metrics in self.systems.items()}}


def _clean(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else round(value, 4)


def evaluate(rec: Recommender, labels: Labels, *, k: int = 10, slot: str = "you_may_also_like",
             systems: Iterable[str] = ("recommender", "relevance", *BASELINES),
             queries: int | None = None,
             seed: int = 0, compare: Recommender | None = None, label_name: str = "labels",
             extra: Mapping[str, System] | None = None) -> EvaluationResult:
    """Run every system on the same queries; relevance metrics at k (and curves for 1..k),
    list-health metrics of the lists as served. `extra`: more systems, by name (a notebook's
    own variant, say)."""
    query_ids = [q for q in labels.queries() if q in rec]
    if queries is not None and queries < len(query_ids):
        rng = np.random.default_rng(seed)
        query_ids = sorted(rng.choice(query_ids, size=queries, replace=False).tolist())
    if not query_ids:
        raise InputError("no query article has relevant documents under these labels")
    result = EvaluationResult(k=k, queries=len(query_ids), labels=label_name)
    runners: dict[str, System] = {
        name: system_recommender(rec, slot) if name == "recommender" else
        system_relevance(rec) if name == "relevance" else
        baseline(name, rec, seed) for name in systems}
    runners.update(extra or {})
    other_lists = None
    if compare is not None:
        run_other = system_recommender(compare, slot)
        other_lists = {q: run_other(q, k) for q in query_ids if q in compare}
    for name, run in runners.items():
        lists = {q: run(q, k) for q in query_ids}
        per_query: dict[str, list[float]] = {m: [] for m in
                                             ("precision", "recall", "ndcg", "mrr", "map")}
        curve: dict[str, list[float]] = {f"{m}@{i}": [] for m in ("ndcg", "precision")
                                         for i in range(1, k + 1)}
        for q in query_ids:
            grades = [labels.grade(q, d) for d, _ in lists[q]]
            relevant = labels.relevant(q)
            ideal = [labels.grade(q, d) for d in relevant if d not in {x for x, _ in lists[q]}]
            per_query["precision"].append(precision_at_k(grades, k))
            per_query["recall"].append(recall_at_k(grades, k, len(relevant)))
            per_query["ndcg"].append(ndcg_at_k(grades, ideal, k))
            per_query["mrr"].append(reciprocal_rank(grades))
            per_query["map"].append(average_precision_at_k(grades, k, len(relevant)))
            for i in range(1, k + 1):
                curve[f"precision@{i}"].append(precision_at_k(grades, i))
                curve[f"ndcg@{i}"].append(ndcg_at_k(grades[:i], ideal + [
                    labels.grade(q, d) for d, _ in lists[q][i:]], i))
        metrics = {f"precision@{k}": float(np.mean(per_query["precision"])),
                   f"recall@{k}": float(np.mean(per_query["recall"])),
                   f"ndcg@{k}": float(np.mean(per_query["ndcg"])),
                   "mrr": float(np.mean(per_query["mrr"])),
                   f"map@{k}": float(np.mean(per_query["map"]))}
        metrics.update(list_health(rec, lists, other_lists if name == "recommender" else None))
        result.systems[name] = metrics
        result.lists[name] = lists
        result.curves[name] = {m: [float(np.mean(v))] for m, v in curve.items()}
    return result


# --------------------------------------------------------------------------- judged pages

SAME_STORY = 2.0  # the grade of "same story" in graded judgments (1 = related, 0 = not)


def page_report(rec: Recommender, labels: Judgments, queries: Sequence[str] | None = None
                ) -> dict[str, dict[str, float]]:
    """What a reader sees on each judged query's page (`Recommender.page`), per slot: links
    per page, the shares of links judged same story / related or better / not related /
    not judged, the share shown as fallback, pages with an empty slot, and links that copy
    another link on the page (the slots' own duplicate rule)."""
    query_ids = [q for q in (queries or labels.queries()) if q in rec]
    if not query_ids:
        raise InputError("no judged query article is in the index")
    counts: dict[str, dict[str, float]] = {}
    for q in query_ids:
        page = rec.page(q)
        earlier: list[str] = []
        for slot, links in page.items():
            c = counts.setdefault(slot, dict.fromkeys(
                ("links", "same_story", "related", "not_related", "unjudged", "fallback",
                 "copies", "empty_pages"), 0.0))
            ids = [r.id for r in links]
            c["links"] += len(ids)
            c["empty_pages"] += not ids
            for r in links:
                judged, grade = labels.judged(q, r.id), labels.grade(q, r.id)
                c["unjudged"] += not judged
                c["not_related"] += judged and grade <= 0
                c["related"] += grade > 0
                c["same_story"] += grade >= SAME_STORY
                c["fallback"] += "fallback" in r.reason
            c["copies"] += sum(rec.is_duplicate(a, b) for i, a in enumerate(ids)
                               for b in [*earlier, *ids[i + 1:]])
            earlier += ids
    out = {}
    for slot, c in counts.items():
        shown = max(c["links"], 1.0)
        out[slot] = {"pages": float(len(query_ids)),
                     "links_per_page": c["links"] / len(query_ids),
                     **{f"{name}_share": c[name] / shown for name in
                        ("same_story", "related", "not_related", "unjudged", "fallback")},
                     "empty_pages": c["empty_pages"], "copies": c["copies"]}
    return out


# What a perfect ranking would show: the judgments in place of the model's relevance.
PERFECT = {2: 0.99, 1: 0.6, 0: 0.02}  # same story, related, the rest (unjudged: 0)


class _JudgedRanker(Ranker):
    """The slot policies as they are, over a relevance read from the judgments: same story
    PERFECT[2], related PERFECT[1], the rest PERFECT[0], and within a grade the model's order.
    The bars keep their meaning: related clears every slot's bar, the rest none (fallback)."""

    def __init__(self, version: IndexVersion, config: RankingConfig, labels: Judgments
                 ) -> None:
        super().__init__(version, config)
        self._labels = labels

    def relevance(self, source: int, c: Candidates, later: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        model, parts = super().relevance(source, c, later)
        query = self.ids[source]
        grades = np.array([self._labels.grade(query, self.ids[r]) for r in c.rows.tolist()])
        judged = np.where(grades >= SAME_STORY, PERFECT[2],
                          np.where(grades > 0, PERFECT[1], PERFECT[0]))
        return (judged + 0.009 * model).astype(np.float32), parts


def with_perfect_ranking(rec: Recommender, labels: Judgments) -> Recommender:
    """A second reader of `rec`'s index, with the same config and clock, whose relevance is the
    judgments (a perfect ranking; see _JudgedRanker) while every slot rule stays: See also
    first, one link per event, no copies, the status, age and paywall rules, the fallback.
    `page_report` of it is the most a better ranking could reach on these pages, and what is
    still missing there is what the policies cost, not the ranking. It never switches
    versions; `rec` is left as it was."""
    twin = Recommender.open(rec.path, config=rec.config, now=rec.now(), reload_interval=-1,
                            page_memo=0)
    live = twin._current()
    twin._live = dataclasses.replace(
        live, ranker=_JudgedRanker(live.version, twin.config.ranking, labels))
    return twin


def story_retrieval(labels: Judgments, run: System, queries: Sequence[str]) -> dict[str, float]:
    """How a ranking finds the query's own story (grade 2): P@min(5, |gold|) and R@10 with
    the denominator min(10, |gold|), averaged over queries that have gold; and the share of
    its top 6 judged related or better (what a plain "top 6" widget would show)."""
    precision, recall, related = [], [], []
    for q in queries:
        ranked = [d for d, _ in run(q, 10)]
        related += [labels.grade(q, d) > 0 for d in ranked[:6]]
        gold = labels.with_grade(q, SAME_STORY)
        if not gold:
            continue
        n = min(5, len(gold))
        precision.append(sum(d in gold for d in ranked[:n]) / n)
        recall.append(sum(d in gold for d in ranked[:10]) / min(10, len(gold)))
    return {"precision@min(5,gold)": float(np.mean(precision)) if precision else math.nan,
            "recall@10": float(np.mean(recall)) if recall else math.nan,
            "related@6": float(np.mean(related)) if related else math.nan,
            "queries": float(len(precision))}


def system_similar(rec: Recommender) -> System:
    """`Recommender.similar`: the relevance ranking (any status), as a reader of the API
    sees it."""
    def run(article_id: str, k: int) -> Ranked:
        return [(r.id, r.score) for r in rec.similar(article_id, k=k)]
    return run


def judged_pages(rec: Recommender, labels: Judgments, systems: Iterable[str] = ("tfidf", "dense"),
                 ) -> dict[str, Any]:
    """The judged-pages report: each slot as a reader sees it, and the same-story retrieval
    of `similar()` beside the baselines (which see the same index)."""
    queries = [q for q in labels.queries() if q in rec]
    runners = {"similar": system_similar(rec), **{n: baseline(n, rec) for n in systems}}
    return {"queries": len(queries), "slots": page_report(rec, labels, queries),
            "story_retrieval": {name: story_retrieval(labels, run, queries)
                                for name, run in runners.items()}}


def evaluate_ratings(rec: Recommender, ratings: Sequence[tuple[str, str, float]],
                     systems: Iterable[str] = ("recommender", "tfidf", "dense")
                     ) -> dict[str, dict[str, float]]:
    """Correlation between each system's pair scores and human similarity ratings. The
    recommender's pair score is its fused relevance (before slot policy)."""
    version = rec.snapshot()
    pos = version.position
    pairs = [(a, b, r) for a, b, r in ratings if a in pos and b in pos]
    out: dict[str, dict[str, float]] = {}
    for name in systems:
        scores = []
        for a, b, _ in pairs:
            if name == "dense":
                scores.append(float(np.dot(version.vectors[pos[a]], version.vectors[pos[b]])))
            elif name == "tfidf":
                m = version.lexical()
                scores.append(float((m[pos[a]] @ m[pos[b]].T).toarray()[0, 0]))
            else:
                scores.append(rec.pair_relevance(a, b))
        out[name] = correlation(scores, [r for _, _, r in pairs])
    return out
