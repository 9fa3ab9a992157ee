"""`recommender config check`: validate the slot policies file (and the index's overrides)."""

from __future__ import annotations

import click

from ..config import config_path, read_config
from ..overrides import OverridesFile
from .main import CommandError, reports_errors


@click.group("config")
def config_group() -> None:
    """The slot policies file, recommender.toml."""


@config_group.command("check")
@click.argument("file", required=False, metavar="[FILE]", type=click.Path(dir_okay=False))
@click.option("--index", "index", envvar="RECOMMENDER_INDEX", default=None, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Check <DIR>/recommender.toml (unless FILE or $RECOMMENDER_CONFIG is "
                   "given) and <DIR>/overrides.json.")
@reports_errors
def check(file: str | None, index: str | None) -> None:
    """Validate FILE (default: $RECOMMENDER_CONFIG, else <index>/recommender.toml): every
    section, key, value and slot name. Exit 1 with the problems, naming file, key and value."""
    path, required = config_path(index, file)
    if path is None:
        raise click.UsageError("give FILE or --index DIR")
    if not required and not path.is_file():
        click.echo(f"{path}: no such file; the built-in defaults apply")
    else:
        config = read_config(path, required=True)
        slots = ", ".join(f"{name} (k={p.k})" for name, p in config.slots.items())
        click.echo(f"{path}: ok; slots {slots}")
    if index is not None:
        overrides = OverridesFile(index).load()  # what it drops is logged as errors
        if overrides.problems:
            raise CommandError(f"{OverridesFile(index).path}: {len(overrides.problems)} "
                               "problem(s), see above")
        if OverridesFile(index).path.is_file():
            click.echo(f"{OverridesFile(index).path}: ok; {len(overrides.pins)} pin(s), "
                       f"{len(overrides.blocks)} block(s), {len(overrides.never_pair)} "
                       "never-pair(s)")


COMMANDS = [config_group]
