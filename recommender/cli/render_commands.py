"""Commands that render pages through the template integrations: render."""

from __future__ import annotations

from pathlib import Path

import click

from ..recommender import Recommender
from .main import config_option, index_option, reports_errors


@click.command()
@click.argument("article_id", metavar="ID")
@index_option
@click.option("--out", "-o", "out", default="-", show_default=True, metavar="FILE",
              type=click.Path(dir_okay=False, allow_dash=True),
              help="HTML file to write (- for standard output).")
@click.option("--link-pattern", "link_pattern", metavar="PATTERN",
              help="Link each related article to PATTERN with {id} replaced by its "
                   "URL-encoded id (e.g. '{id}.html' for a folder of rendered pages); "
                   "default: the article's url.")
@config_option
@reports_errors
def render(article_id: str, index: str, out: str, link_pattern: str | None,
           config: str | None) -> None:
    """Render the article page of ID with its See also and You may also like slots (HTML,
    through the Jinja2 integration and the packaged template)."""
    try:
        # Jinja2 is an optional extra: the rest of the CLI works without it.
        from ..integrations.jinja import check_link_pattern, render_article_page
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        check_link_pattern(link_pattern)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--link-pattern") from None
    html = render_article_page(Recommender.open(index, config=config), article_id,
                               link_pattern=link_pattern)
    if out == "-":
        click.echo(html, nl=False)
    else:
        Path(out).write_text(html, encoding="utf-8")
        click.echo(f"Wrote {out}")


COMMANDS = [render]
