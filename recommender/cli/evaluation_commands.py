"""`recommender evaluate`: relevance and list-health metrics, baselines side by side."""

from __future__ import annotations

import math

import click

from ..evaluation import (
    BASELINES,
    FieldLabels,
    Judgments,
    evaluate_ratings,
    read_ratings,
)
from ..evaluation import evaluate as run_evaluation
from ..recommender import Recommender
from .main import config_option, echo_json, index_option, json_option, reports_errors

TABLE = ("precision@{k}", "ndcg@{k}", "recall@{k}", "mrr", "coverage", "duplicate_rate",
         "same_story_list_rate", "leak_rate", "intra_list_diversity", "churn")


@click.command()
@index_option
@click.option("--label-field", metavar="FIELD",
              help="Articles sharing this field's value are relevant to each other "
                   "(section, story_id, or a metadata key such as label).")
@click.option("--judgments", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help='Graded judgments: JSON Lines {"query": ID, "doc": ID, "grade": 0..3}.')
@click.option("--ratings", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help='Pair ratings: JSON Lines {"a": ID, "b": ID, "rating": N}; reports '
                   "Pearson/Spearman correlation.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--slot", default="you_may_also_like", show_default=True,
              help="The slot whose policy is evaluated as the system 'recommender'.")
@click.option("--queries", type=click.IntRange(min=1), default=None,
              help="Evaluate a random sample of this many query articles [default: all].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--compare", type=click.Path(file_okay=False), metavar="OTHER_INDEX",
              help="Report churn of the recommender's lists against another index.")
@click.option("--report", type=click.Path(file_okay=False), metavar="DIR",
              help="Write an HTML report with plots (needs matplotlib).")
@config_option
@json_option
@reports_errors
def evaluate(index: str, label_field: str | None, judgments: str | None, ratings: str | None,
             k: int, slot: str, queries: int | None, seed: int, compare: str | None,
             report: str | None, config: str | None, as_json: bool) -> None:
    """Measure the project's slot (and its relevance ranking alone) against baselines
    (random, recent, tfidf, dense) on labels."""
    chosen = [x for x in (label_field, judgments, ratings) if x]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --label-field, --judgments, --ratings")
    rec = Recommender.open(index, config=config)
    rec.policy(slot)
    if ratings:
        result = evaluate_ratings(rec, read_ratings(ratings))
        if as_json:
            echo_json({"systems": result})
        else:
            for name, values in result.items():
                click.echo(f"{name:<12} pearson {values['pearson']:.3f}  spearman "
                           f"{values['spearman']:.3f}  ({values['pairs']:.0f} pairs)")
        return
    labels = FieldLabels(label_field, rec) if label_field else Judgments(str(judgments))
    other = Recommender.open(compare, config=config) if compare else None
    outcome = run_evaluation(rec, labels, k=k, slot=slot, queries=queries, seed=seed,
                             compare=other, label_name=label_field or str(judgments))
    if report:
        from ..report import write_report

        path = write_report(outcome, rec, report)
        click.echo(f"report: {path}", err=True)
    if as_json:
        echo_json(outcome.to_dict())
        return
    columns = [c.format(k=k) for c in TABLE
               if any(c.format(k=k) in m for m in outcome.systems.values())]
    click.echo(f"{outcome.queries} queries, labels: {outcome.labels}, k={k}")
    widths = [max(len(c), 6) + 2 for c in columns]
    click.echo(f"{'system':<12}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths,
                                                                       strict=True)))
    for name in ("recommender", "relevance", *BASELINES):
        if name in outcome.systems:
            metrics = outcome.systems[name]
            cells = "".join(f"{_cell(metrics.get(c)):>{w}}" for c, w in zip(columns, widths,
                                                                             strict=True))
            click.echo(f"{name:<12}{cells}")


def _cell(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


COMMANDS = [evaluate]
