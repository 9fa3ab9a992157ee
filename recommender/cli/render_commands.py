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
@config_option
@reports_errors
def render(article_id: str, index: str, out: str, config: str | None) -> None:
    """Render the article page of ID with its See also and You may also like slots (HTML,
    through the Jinja2 integration and the packaged template)."""
    try:
        # Jinja2 is an optional extra: the rest of the CLI works without it.
        from ..integrations.jinja import render_article_page
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    html = render_article_page(Recommender.open(index, config=config), article_id)
    if out == "-":
        click.echo(html, nl=False)
    else:
        Path(out).write_text(html, encoding="utf-8")
        click.echo(f"Wrote {out}")


COMMANDS = [render]
