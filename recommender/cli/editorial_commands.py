"""Editors' overrides: pin, unpin, block, unblock, never-pair, overrides (show the file)."""

from __future__ import annotations

import click

from ..articles import parse_datetime
from ..overrides import OverridesFile, Pin
from ..recommender import Recommender
from .main import CommandError, echo_json, index_option, reports_errors


def _known(index: str, *ids: str) -> None:
    """Overrides may name articles not indexed yet, but a typo is more likely: warn."""
    rec = Recommender.open(index)
    for article_id in ids:
        if article_id not in rec:
            click.echo(f"warning: {article_id!r} is not in the index (yet)", err=True)


@click.command()
@click.argument("source", metavar="SOURCE_ID")
@click.argument("target", metavar="TARGET_ID")
@index_option
@click.option("--slot", default="see_also", show_default=True, help="Slot to pin in.")
@click.option("--position", type=click.IntRange(min=1), default=1, show_default=True,
              help="1-based position in the slot.")
@click.option("--until", metavar="DATE", default=None,
              help="ISO 8601 date or datetime after which the pin lapses.")
@reports_errors
def pin(source: str, target: str, index: str, slot: str, position: int,
        until: str | None) -> None:
    """Always show TARGET_ID at POSITION in SLOT on the page of SOURCE_ID."""
    try:
        expires = parse_datetime(until, "--until")
    except ValueError as exc:
        raise CommandError(str(exc), 2) from exc
    Recommender.open(index).policy(slot)  # unknown slot -> exit 2
    _known(index, source, target)
    OverridesFile(index).pin(Pin(source, target, slot, position, expires))
    click.echo(f"pinned {target} at {slot}[{position}] on {source}"
               + (f" until {until}" if until else ""))


@click.command()
@click.argument("source", metavar="SOURCE_ID")
@click.argument("target", metavar="TARGET_ID")
@index_option
@click.option("--slot", default=None, help="Only the pin in this slot [default: all].")
@reports_errors
def unpin(source: str, target: str, index: str, slot: str | None) -> None:
    """Remove the pin of TARGET_ID on the page of SOURCE_ID."""
    removed = OverridesFile(index).unpin(source, target, slot)
    click.echo(f"removed {removed} pin(s)")


@click.command()
@click.argument("article_id", metavar="ID")
@index_option
@click.option("--reason", default="", help="Why (kept in the file for the next editor).")
@reports_errors
def block(article_id: str, index: str, reason: str) -> None:
    """Never show article ID in any slot."""
    _known(index, article_id)
    OverridesFile(index).block(article_id, reason)
    click.echo(f"blocked {article_id}")


@click.command()
@click.argument("article_id", metavar="ID")
@index_option
@reports_errors
def unblock(article_id: str, index: str) -> None:
    """Allow article ID in slots again."""
    found = OverridesFile(index).unblock(article_id)
    click.echo(f"unblocked {article_id}" if found else f"{article_id} was not blocked")


@click.command("never-pair")
@click.argument("first", metavar="ID")
@click.argument("second", metavar="OTHER_ID")
@index_option
@click.option("--remove", is_flag=True, help="Allow the pair again.")
@reports_errors
def never_pair(first: str, second: str, index: str, remove: bool) -> None:
    """Never show ID and OTHER_ID on each other's pages."""
    OverridesFile(index).never_pair(first, second, remove=remove)
    click.echo(f"{'allowed' if remove else 'never pairing'} {first} and {second}")


@click.command()
@index_option
@reports_errors
def overrides(index: str) -> None:
    """Print the editorial overrides of an index (the JSON file they are stored in)."""
    echo_json(OverridesFile(index).load().to_dict())


COMMANDS = [pin, unpin, block, unblock, never_pair, overrides]
