"""`recommender evaluate`: relevance and list-health metrics, baselines side by side."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from ..datasets import judgment_files
from ..errors import InputError
from ..evaluation import (
    BASELINES,
    FieldLabels,
    Judgments,
    evaluate_ratings,
    judged_pages,
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
@click.option("--judgments", multiple=True, metavar="FILE|DATASET",
              help='Graded judgments: JSON Lines {"query": ID, "doc": ID, "grade": 0..3} '
                   "(repeatable; later files win), or a dataset name whose judgments ship "
                   "with the package (news-stories). Also reports each slot as a reader "
                   "sees it on the judged pages.")
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
def evaluate(index: str, label_field: str | None, judgments: tuple[str, ...],
             ratings: str | None,
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
    judged = Judgments(*_judgment_paths(judgments)) if judgments else None
    labels = FieldLabels(label_field, rec) if label_field else judged
    assert labels is not None
    other = Recommender.open(compare, config=config) if compare else None
    outcome = run_evaluation(rec, labels, k=k, slot=slot, queries=queries, seed=seed,
                             compare=other, label_name=label_field or ", ".join(judgments))
    pages = judged_pages(rec, judged) if judged is not None else None
    if report:
        from ..report import write_report

        path = write_report(outcome, rec, report)
        click.echo(f"report: {path}", err=True)
    if as_json:
        echo_json({**outcome.to_dict(), **({"judged_pages": pages} if pages else {})})
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
    if pages is not None:
        _print_pages(pages)


PAGE_COLUMNS = ("links_per_page", "same_story_share", "related_share", "not_related_share",
                "unjudged_share", "fallback_share", "empty_pages", "copies")


def _print_pages(pages: dict[str, Any]) -> None:
    click.echo(f"\nWhat a reader sees on the {pages['queries']} judged pages "
               "(shares of shown links; related = graded >= 1):")
    click.echo(f"{'slot':<20}" + "".join(f"{c.removesuffix('_share'):>15}"
                                         for c in PAGE_COLUMNS))
    for slot, metrics in pages["slots"].items():
        click.echo(f"{slot:<20}" + "".join(f"{_cell(metrics[c]):>15}" for c in PAGE_COLUMNS))
    click.echo("\nSame story (grade 2) found by the ranking:")
    for name, metrics in pages["story_retrieval"].items():
        click.echo(f"{name:<20}P@min(5,gold) {_cell(metrics['precision@min(5,gold)'])}   "
                   f"R@10 {_cell(metrics['recall@10'])}   top 6 related "
                   f"{_cell(metrics['related@6'])}")


def _judgment_paths(values: tuple[str, ...]) -> list[Path]:
    paths: list[Path] = []
    for value in values:
        if Path(value).is_file():
            paths.append(Path(value))
        elif Path(value).suffix or "/" in value:
            raise InputError(f"judgments file {value!r} not found")
        else:
            paths += judgment_files(value)
    return paths


def _cell(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


COMMANDS = [evaluate]
