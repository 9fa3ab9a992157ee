"""Commands that read an index: related, similar, demo."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from ..build import build_index
from ..ranking import Recommendation, explain_reason
from ..recommender import Recommender
from ..samples import sample_corpus_path
from .index_commands import progress_bar
from .main import (
    config_option,
    echo_json,
    index_option,
    json_option,
    reports_errors,
    show_progress,
)


def format_results(results: Sequence[Recommendation], show_reasons: bool = False) -> str:
    if not results:
        return "  (nothing clears the bar)"
    lines = []
    for rank, r in enumerate(results, start=1):
        date = r.published_at.date().isoformat() if r.published_at else "undated"
        flag = " [pinned]" if r.reason.get("pinned") else \
            " [fallback]" if "fallback" in r.reason else ""
        if r.reason.get("other_language"):  # a link to an article in another language
            flag += f" [{r.reason.get('language') or 'other language'}]"
        lines.append(f"  {rank}. {r.score:.2f}  {r.title}  [{r.id}, {date}]{flag}")
        if show_reasons:
            lines.append(f"       why: {explain_reason(r.reason)}")
    return "\n".join(lines)


@click.command()
@click.argument("article_id", metavar="ID")
@index_option
@click.option("--slot", default="you_may_also_like", show_default=True,
              help="Slot whose policy is applied (see_also, you_may_also_like, ...).")
@click.option("-k", "k", type=click.IntRange(min=1), default=None,
              help="Number of results [default: the slot's].")
@click.option("--explain", is_flag=True, help="Show the parts of each score and its flags.")
@config_option
@json_option
@reports_errors
def related(article_id: str, index: str, slot: str, k: int | None, explain: bool,
            config: str | None, as_json: bool) -> None:
    """What slot SLOT shows on the page of article ID."""
    results = Recommender.open(index, config=config).related(article_id, slot=slot, k=k)
    if as_json:
        echo_json([r.to_dict() for r in results])
    else:
        click.echo(format_results(results, show_reasons=explain))


@click.command()
@click.argument("article_id", metavar="ID")
@index_option
@click.option("--explain", is_flag=True, help="Show the parts of each score and its flags.")
@config_option
@json_option
@reports_errors
def page(article_id: str, index: str, explain: bool, config: str | None,
         as_json: bool) -> None:
    """Every slot of the page of article ID (no article twice on the page)."""
    slots = Recommender.open(index, config=config).page(article_id)
    if as_json:
        echo_json({name: [r.to_dict() for r in results] for name, results in slots.items()})
        return
    for name, results in slots.items():
        click.echo(f"{name}:")
        click.echo(format_results(results, show_reasons=explain))


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
        click.echo(format_results(results, show_reasons=True))


# First articles of three multi-day stories and one standalone piece of the sample corpus.
DEMO_ARTICLES = ("a001", "a012", "a040", "a115")


@click.command()
@click.option("--index", "index", default="indexes/demo", show_default=True,
              type=click.Path(file_okay=False), metavar="DIR",
              help="Where to build the demo index.")
@click.option("--model", "-m", metavar="M", default=None,
              help="Model to embed with: minilm, multilingual, e5-small, or a "
                   "sentence-transformers name [default: minilm].")
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


COMMANDS = [related, page, similar, demo]
