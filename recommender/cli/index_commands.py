"""Commands that write or describe an index: build, update, info."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..articles import FORMATS, Problem, read_articles
from ..build import MAX_REMOVED_SHARE, BuildReport, build_index, rollback
from ..embedding import ProgressCallback
from ..engines import ENGINES, resolve_engine
from ..neighbours import DEFAULT_N
from ..recommender import Recommender
from .main import (
    EXIT_INVALID_RECORDS,
    echo_json,
    index_option,
    json_option,
    reports_errors,
    show_progress,
)


class _LazyProgressBar:
    """A click progress bar on stderr, opened on the first callback: the total is known only
    once the build knows what must be embedded."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.done = 0
        self.started = time.perf_counter()

    def rate(self, _item: Any) -> str:
        elapsed = time.perf_counter() - self.started
        return f"{self.done / elapsed:.0f} articles/s" if elapsed > 0 and self.done else ""

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.started = time.perf_counter()
            make_bar: Any = click.progressbar  # its overloads do not type length-only use
            self.bar = make_bar(length=total, label=self.label, show_eta=True, show_pos=True,
                                item_show_func=self.rate, file=sys.stderr)
            self.bar.__enter__()
        previous, self.done = self.done, done
        self.bar.update(done - previous, current_item=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@contextmanager
def progress_bar(enabled: bool, label: str = "Embedding") -> Iterator[ProgressCallback | None]:
    if not enabled:
        yield None
        return
    bar = _LazyProgressBar(label)
    try:
        yield bar
    finally:
        bar.close()


def print_report(report: BuildReport, as_json: bool, quiet: bool) -> None:
    if as_json:
        echo_json(report.to_dict())
    else:
        print_problems(report.problems)
        if not quiet:
            click.echo(
                f"{report.index}: version {report.version}, {report.total} articles "
                f"({report.published} published) — added {report.added}, changed "
                f"{report.changed}, unchanged {report.unchanged}, removed {report.removed}, "
                f"withdrawn {report.withdrawn}, invalid {report.invalid}; embedded "
                f"{report.embedded} in {report.embed_seconds:.1f}s, total {report.seconds:.1f}s"
                + (f"; pages computed {report.pages.computed}, reused {report.pages.reused}, "
                   f"left to requests {report.pages.left}" if report.pages else ""))
    if report.invalid:
        raise click.exceptions.Exit(EXIT_INVALID_RECORDS)


# A run over a bad export can have a problem per record: the first few of each kind are
# shown, then one line that counts the rest (`--json` lists every one).
SHOWN_PER_REASON = 3
SHOWN_IN_ALL = 100


def print_problems(problems: list[Problem]) -> None:
    by_reason: dict[tuple[str, str], list[Problem]] = {}
    for problem in problems:
        by_reason.setdefault((problem.severity, problem.reason), []).append(problem)
    shown = 0
    for (severity, reason), group in by_reason.items():
        for problem in group[:SHOWN_PER_REASON]:
            if shown < SHOWN_IN_ALL:
                click.echo(str(problem), err=True)
            shown += 1
        if len(group) > SHOWN_PER_REASON and shown < SHOWN_IN_ALL:
            click.echo(f"{severity}: {len(group) - SHOWN_PER_REASON:,} more like this: {reason}",
                       err=True)
    if shown > SHOWN_IN_ALL:
        click.echo(f"... {shown - SHOWN_IN_ALL:,} more problems not shown (--json lists every "
                   "one)", err=True)


def _common_build_options(func: Any) -> Any:
    for option in reversed([
        click.argument("inputs", nargs=-1, type=click.Path()),
        index_option,
        click.option("--format", "input_format", type=click.Choice(list(FORMATS)),
                     default=None,
                     help="Read every INPUT as this format, and these files in an INPUT "
                          "folder (html: saved article pages) [default: by file extension]."),
        click.option("--model", "-m", metavar="M", envvar="RECOMMENDER_MODEL",
                     help="minilm (bundled all-MiniLM-L6-v2, English), multilingual "
                          "(16 languages, the [multilingual] extra), e5-small, or a "
                          "sentence-transformers name or local path "
                          "[default: minilm; update: the index's model]."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
                     default="auto", show_default=True,
                     help="auto = bf16 where the CPU has native bf16, else fp32."),
        click.option("--runtime", type=click.Choice(["auto", "torch", "openvino"]),
                     envvar="RECOMMENDER_RUNTIME", default="auto", show_default=True,
                     help="What runs the model: auto = openvino when installed (the "
                          "openvino extra), else torch (or $RECOMMENDER_RUNTIME)."),
        click.option("--strict", is_flag=True,
                     help="Publish nothing if any record is invalid."),
        click.option("--neighbours", type=click.IntRange(min=1), default=DEFAULT_N,
                     show_default=True,
                     help="Candidates precomputed per article (slots read these)."),
        click.option("--engine", type=click.Choice(ENGINES, case_sensitive=False),
                     default=None,
                     help="Where embedding and the candidate search run: here, or as Ray "
                          "Data jobs on a Ray cluster (or $RECOMMENDER_ENGINE) "
                          "[default: local]."),
        click.option("--address", metavar="ADDR", default=None,
                     help="The Ray cluster for --engine ray: auto, HOST:6379 or "
                          "ray://HOST:10001 [default: $RAY_ADDRESS, else a local Ray]."),
        click.option("--pages/--no-pages", "pages", default=None,
                     help="Compute every article's page into the version, so that "
                          "`recommender serve` answers pages never asked before without "
                          "ranking them [default: as the live version has them]."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary."),
        json_option,
    ]):
        func = option(func)
    return func


def _run_build(inputs: tuple[str, ...], index: str, input_format: str | None, model: str | None,
               precision: str, runtime: str, strict: bool, neighbours: int, quiet: bool,
               as_json: bool, incremental: bool, engine: str | None, address: str | None,
               pages: bool | None, delete: tuple[str, ...] = (),
               max_removed_share: float = MAX_REMOVED_SHARE) -> None:
    from ..embedding import load_embedder
    from ..store import IndexDirectory, IndexVersion

    if model is None and incremental and IndexDirectory(index).exists():
        version = IndexVersion(IndexDirectory(index).current_path())
        model = version.manifest.model
        version.close()
    loaded = read_articles(list(inputs), input_format)
    embedder = load_embedder(model, precision=precision, runtime=runtime)
    with resolve_engine(engine, address) as runner, \
            progress_bar(show_progress(quiet or as_json)) as progress:
        report = build_index(index, loaded, embedder=embedder, incremental=incremental,
                             delete=delete, strict=strict, progress=progress,
                             neighbours=neighbours, max_removed_share=max_removed_share,
                             engine=runner, pages=pages)
    print_report(report, as_json, quiet)


@click.command()
@_common_build_options
@click.option("--max-removals", "max_removals", type=click.FloatRange(0, 1), metavar="SHARE",
              envvar="RECOMMENDER_MAX_REMOVALS", default=MAX_REMOVED_SHARE, show_default=True,
              help="Refuse to publish if more than this share of the index would be removed "
                   "(or $RECOMMENDER_MAX_REMOVALS).")
@click.option("--allow-removals", is_flag=True,
              help="Remove whatever the input does not list, even all of it.")
@reports_errors
def build(inputs: tuple[str, ...], index: str, input_format: str | None, model: str | None,
          precision: str, runtime: str, strict: bool, neighbours: int, engine: str | None,
          address: str | None, pages: bool | None, quiet: bool, as_json: bool,
          max_removals: float, allow_removals: bool) -> None:
    """Build the index from INPUT files (.jsonl, .csv, saved .html pages), folders (with
    --format) or glob patterns: it then holds exactly those articles. Vectors of unchanged
    articles in an existing index are reused. A build that would remove more than
    --max-removals of the index (an empty or cut export) is refused."""
    if not inputs:
        raise click.UsageError("give at least one INPUT file")
    _run_build(inputs, index, input_format, model, precision, runtime, strict, neighbours,
               quiet, as_json, incremental=False, engine=engine, address=address,
               pages=pages, max_removed_share=1.0 if allow_removals else max_removals)


@click.command()
@_common_build_options
@click.option("--delete", "delete", multiple=True, metavar="ID",
              help="Remove this article id (repeatable).")
@reports_errors
def update(inputs: tuple[str, ...], index: str, input_format: str | None, model: str | None,
           precision: str, runtime: str, strict: bool, neighbours: int, engine: str | None,
           address: str | None, pages: bool | None, quiet: bool, as_json: bool,
           delete: tuple[str, ...]) -> None:
    """Upsert articles from INPUT files into the index: new and changed ones are embedded,
    unchanged ones keep their vectors, a status other than published withdraws an article."""
    if not inputs and not delete:
        raise click.UsageError("give INPUT files and/or --delete ID")
    _run_build(inputs, index, input_format, model, precision, runtime, strict, neighbours, quiet,
               as_json, incremental=True, engine=engine, address=address, pages=pages,
               delete=delete)


@click.command()
@index_option
@json_option
@reports_errors
def info(index: str, as_json: bool) -> None:
    """Describe the live version of an index: model, dimension, counts, build time."""
    data = Recommender.open(index).info()
    if as_json:
        echo_json(data)
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        click.echo(f"{key:<{width}}  {value}")


@click.command("rollback")
@index_option
@click.option("--to", "to", metavar="VERSION", default=None,
              help="The version to make live [default: the one before the live one].")
@reports_errors
def rollback_command(index: str, to: str | None) -> None:
    """Make the previous version of the index live again (open readers follow within a
    second). The versions on disk are the live one and the two before it."""
    was, now = rollback(index, to)
    click.echo(f"{index}: {now} is live again (was {was})")


COMMANDS = [build, update, info, rollback_command]
