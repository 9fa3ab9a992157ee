"""Commands that read an index: related, similar, demo."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from ..build import build_index
from ..ranking import Recommendation
from ..recommender import Recommender
from ..samples import sample_corpus_path
from .index_commands import progress_bar
from .main import echo_json, index_option, json_option, reports_errors, show_progress


def format_results(results: Sequence[Recommendation], explain: bool = False) -> str:
    if not results:
        return "  (nothing clears the bar)"
    lines = []
    for rank, r in enumerate(results, start=1):
        date = r.published_at.date().isoformat() if r.published_at else "undated"
        lines.append(f"  {rank}. {r.score:.2f}  {r.title}  [{r.id}, {date}]")
        if explain:
            parts = ", ".join(f"{k}={v}" for k, v in r.reason.items())
            lines.append(f"        why: {parts}")
    return "\n".join(lines)


@click.command()
@click.argument("article_id", metavar="ID")
@index_option
@click.option("--slot", default="you_may_also_like", show_default=True,
              help="Slot whose policy is applied (see_also, you_may_also_like, ...).")
@click.option("-k", "k", type=click.IntRange(min=1), default=None,
              help="Number of results [default: the slot's].")
@json_option
@reports_errors
def related(article_id: str, index: str, slot: str, k: int | None, as_json: bool) -> None:
    """What slot SLOT shows on the page of article ID."""
    results = Recommender.open(index).related(article_id, slot=slot, k=k)
    if as_json:
        echo_json([r.to_dict() for r in results])
    else:
        click.echo(format_results(results))


@click.command()
@click.argument("article_id", metavar="ID")
@index_option
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@json_option
@reports_errors
def similar(article_id: str, index: str, k: int, as_json: bool) -> None:
    """The raw relevance ranking for article ID (no slot policy; any status)."""
    results = Recommender.open(index).similar(article_id, k=k)
    if as_json:
        echo_json([r.to_dict() for r in results])
    else:
        click.echo(format_results(results))


# First articles of three multi-day stories and one standalone piece of the sample corpus.
DEMO_ARTICLES = ("a001", "a012", "a040", "a115")


@click.command()
@click.option("--index", "index", default="indexes/demo", show_default=True,
              type=click.Path(file_okay=False), metavar="DIR",
              help="Where to build the demo index.")
@click.option("--model", "-m", metavar="M", default=None,
              help="Model to embed with [default: bundled all-MiniLM-L6-v2].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.argument("article_ids", nargs=-1, metavar="[ID]...")
@reports_errors
def demo(index: str, model: str | None, quiet: bool, article_ids: tuple[str, ...]) -> None:
    """Build an index of the bundled sample corpus and print both slots for a few articles."""
    with progress_bar(show_progress(quiet)) as progress:
        report = build_index(index, [sample_corpus_path()], model=model, progress=progress)
    click.echo(f"Built {Path(index)}: {report.total} sample articles "
               f"({report.embedded} embedded in {report.embed_seconds:.1f}s).\n")
    rec = Recommender.open(index)
    for article_id in article_ids or DEMO_ARTICLES:
        article = rec.article(article_id)
        date = article.published_at.date().isoformat() if article.published_at else "undated"
        click.echo(f"■ {article.title}  [{article.id}, {article.section}, {date}]")
        for slot, results in rec.page(article_id).items():
            click.echo(f"  {slot.replace('_', ' ').capitalize()}:")
            click.echo("  " + format_results(results).replace("\n", "\n  "))
        click.echo()


COMMANDS = [related, similar, demo]
