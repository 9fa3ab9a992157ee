"""The evaluation report: an HTML page with the metric table and matplotlib plots
(metric vs k per system, age gap of recommended articles, score distribution)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from .evaluation import EvaluationResult
from .recommender import Recommender

HEADLINE = ("precision@{k}", "ndcg@{k}", "recall@{k}", "mrr", "map@{k}", "coverage",
            "duplicate_rate", "same_story_list_rate", "leak_rate", "intra_list_diversity",
            "median_age_gap_days", "churn")


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the evaluation report needs matplotlib: "
                          "pip install 'recommender[eval]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(result: EvaluationResult, rec: Recommender, directory: str | Path) -> Path:
    plt = _plt()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    k = result.k
    names = list(result.systems)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("precision", "ndcg"), strict=True):
        for name in names:
            curve = [result.curves[name][f"{metric}@{i}"][0] for i in range(1, k + 1)]
            ax.plot(range(1, k + 1), curve, marker="o", label=name)
        ax.set_xlabel("k")
        ax.set_title(f"{metric}@k")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metric_vs_k.png", dpi=110)
    plt.close(fig)

    version = rec.snapshot()
    ts, pos = version.columns.timestamp, version.position
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in names:
        gaps = [(ts[pos[q]] - ts[pos[d]]) / 86_400 for q, ranked in result.lists[name].items()
                for d, _ in ranked if not (math.isnan(ts[pos[q]]) or math.isnan(ts[pos[d]]))]
        if gaps:
            axes[0].hist(gaps, bins=30, histtype="step", label=name)
        scores = [s for ranked in result.lists[name].values() for _, s in ranked]
        if name in ("recommender", "dense", "tfidf") and scores:
            axes[1].hist(scores, bins=30, histtype="step", label=name)
    axes[0].set_title("age of source minus age of link (days)")
    axes[1].set_title("scores of shown links")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "distributions.png", dpi=110)
    plt.close(fig)

    columns = [c.format(k=k) for c in HEADLINE
               if any(c.format(k=k) in m for m in result.systems.values())]
    rows = "".join(
        "<tr><th>" + html.escape(name) + "</th>" + "".join(
            f"<td>{_fmt(result.systems[name].get(c))}</td>" for c in columns) + "</tr>"
        for name in names)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>recommender evaluation</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{text-align:left}}</style></head><body>
<h1>Evaluation</h1>
<p>{result.queries} queries, labels: {html.escape(result.labels)}, k = {k},
index {html.escape(str(rec.path))} (version {html.escape(rec.version)}).</p>
<table><tr><th>system</th>{"".join(f"<th>{html.escape(c)}</th>" for c in columns)}</tr>
{rows}</table>
<h2>Metric vs k</h2><img src="metric_vs_k.png" alt="precision and nDCG at k per system">
<h2>Distributions</h2><img src="distributions.png" alt="age gap and score distributions">
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"

