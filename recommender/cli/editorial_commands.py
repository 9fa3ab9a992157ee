"""Editors' overrides: pin, unpin, block, unblock, never-pair, overrides (show the file)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ..articles import format_datetime
from ..config import DEFAULT_SLOTS, load_config
from ..errors import ConfigError, RecommenderError, UnknownSlot
from ..overrides import Overrides, OverridesFile, Pin, parse_until
from ..store import IndexDirectory, IndexVersion
from .main import CommandError, echo_json, index_option, reports_errors

# Editorial commands never depend on recommender.toml being valid: a takedown (`block`) must
# work exactly when something else is broken. They read the index only to warn.


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _check_ids(index: str, *ids: str, now: datetime | None = None) -> None:
    """Overrides may name articles not indexed yet, but a typo is more likely: warn. Also warn
    when an article cannot be shown (withdrawn, or dated in the future)."""
    try:
        version = IndexVersion(IndexDirectory(index).current_path())
    except RecommenderError as exc:
        _warn(f"cannot check the ids against the index ({exc})")
        return
    try:
        articles = {aid: version.articles_at([version.position[aid]])[version.position[aid]]
                    for aid in ids if aid in version.position}
    finally:
        version.close()
    for article_id in ids:
        article = articles.get(article_id)
        if article is None:
            _warn(f"{article_id!r} is not in the index (yet)")
        elif not article.is_published:
            _warn(f"{article_id!r} is {article.status}: it is shown nowhere until it is "
                  "published")
        elif now is not None and article.published_at and article.published_at > now:
            _warn(f"{article_id!r} is dated {article.published_at.isoformat()}: it is held "
                  "back until then")


def _report(overrides: Overrides) -> None:
    for problem in overrides.problems:
        _warn(problem)


def _check_slot(index: str, slot: str) -> None:
    try:
        slots = load_config(index).slots
    except ConfigError as exc:
        _warn(f"the slot is not checked: {exc}")
        slots = DEFAULT_SLOTS
        if slot not in slots:
            return
    if slot not in slots:
        raise UnknownSlot(f"unknown slot {slot!r} (known: {', '.join(slots)})")


@click.command()
@click.argument("source", metavar="SOURCE_ID")
@click.argument("target", metavar="TARGET_ID")
@index_option
@click.option("--slot", default="see_also", show_default=True, help="Slot to pin in.")
@click.option("--position", type=click.IntRange(min=1), default=1, show_default=True,
              help="1-based position in the slot.")
@click.option("--until", metavar="DATE", default=None,
              help="Last day of the pin (ISO 8601, UTC; the day is included), or the "
                   "datetime at which it lapses.")
@reports_errors
def pin(source: str, target: str, index: str, slot: str, position: int,
        until: str | None) -> None:
    """Always show TARGET_ID at POSITION in SLOT on the page of SOURCE_ID."""
    try:
        expires = parse_until(until, "--until")
    except ValueError as exc:
        raise CommandError(str(exc), 2) from exc
    _check_slot(index, slot)
    now = datetime.now(UTC)
    saved = OverridesFile(index).pin(Pin(source, target, slot, position, expires), now=now)
    _report(saved)
    _check_ids(index, source, target, now=now)
    if target in saved.blocks:
        _warn(f"{target!r} is blocked: the pin shows nothing until it is unblocked")
    if frozenset((source, target)) in saved.never_pair:
        _warn(f"{source!r} and {target!r} are a never-pair: the pin shows nothing")
    click.echo(f"pinned {target} at {slot}[{position}] on {source}"
               + (f" until {until} (lapses at {format_datetime(expires)})" if expires else ""))


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
    _report(OverridesFile(index).block(article_id, reason))
    _check_ids(index, article_id)
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
    _report(OverridesFile(index).never_pair(first, second, remove=remove))
    if not remove:
        _check_ids(index, first, second)
    click.echo(f"{'allowed' if remove else 'never pairing'} {first} and {second}")


@click.command()
@index_option
@reports_errors
def overrides(index: str) -> None:
    """Print the editorial overrides of an index (the JSON file they are stored in)."""
    echo_json(OverridesFile(index).load().to_dict())  # what it had to drop is logged


COMMANDS = [pin, unpin, block, unblock, never_pair, overrides]
