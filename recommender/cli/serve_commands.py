"""Commands that serve an index over HTTP: serve."""

from __future__ import annotations

import os

import click

from ..recommender import Recommender
from .main import config_option, index_option, reports_errors


@click.command()
@index_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (each memory-maps the index).")
@click.option("--max-age", "max_age", default=60, show_default=True,
              type=click.IntRange(min=0), envvar="RECOMMENDER_MAX_AGE",
              help="Cache-Control max-age of answers, in seconds (or $RECOMMENDER_MAX_AGE).")
@config_option
@reports_errors
def serve(index: str, host: str, port: int, workers: int, max_age: int,
          config: str | None) -> None:
    """Serve the index as a read-only JSON API (FastAPI + uvicorn; docs at /docs). It follows
    new versions published by build/update without a restart."""
    try:
        # FastAPI and uvicorn are an optional extra: the rest of the CLI works without them.
        import uvicorn

        from .. import server
    except ImportError as exc:
        message = str(exc) if "recommender[server]" in str(exc) else \
            "recommender serve needs FastAPI, uvicorn and Jinja2: pip install 'recommender[server]'"
        raise click.ClickException(message) from exc
    Recommender.open(index, config=config)  # a missing or bad index: one line, exit 1
    if workers == 1:
        # New versions are opened and their answers computed off the request path.
        uvicorn.run(server.create_app(index, config=config, max_age=max_age,
                                      switch_in_background=True),
                    host=host, port=port, log_level="warning")
        return
    # Each worker process opens the index itself, from the environment.
    os.environ[server.INDEX_ENV] = str(index)
    os.environ[server.MAX_AGE_ENV] = str(max_age)
    if config:
        os.environ[server.CONFIG_ENV] = str(config)
    uvicorn.run("recommender.server:app_from_environment", factory=True, host=host,
                port=port, workers=workers, log_level="warning")


COMMANDS = [serve]
