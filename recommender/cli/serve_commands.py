"""Commands that serve an index over HTTP: serve."""

from __future__ import annotations

import importlib
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
@click.option("--http-server", "http_server", type=click.Choice(["granian", "uvicorn"]),
              default="granian", show_default=True, envvar="RECOMMENDER_HTTP_SERVER",
              help="The ASGI server that runs the app (or $RECOMMENDER_HTTP_SERVER).")
@config_option
@reports_errors
def serve(index: str, host: str, port: int, workers: int, max_age: int, http_server: str,
          config: str | None) -> None:
    """Serve the index as a read-only JSON API (FastAPI on granian or uvicorn; docs at
    /docs). It follows new versions published by build/update without a restart, switching
    to each off the request path."""
    try:
        # The server stack is an optional extra: the rest of the CLI works without it.
        runner = importlib.import_module(http_server)

        from .. import server
    except ImportError as exc:
        message = str(exc) if "recommender[server]" in str(exc) else \
            "recommender serve needs FastAPI, granian and Jinja2: pip install 'recommender[server]'"
        raise click.ClickException(message) from exc
    Recommender.open(index, config=config)  # a missing or bad index: one line, exit 1
    # Each worker process opens the index itself, from the environment.
    os.environ[server.INDEX_ENV] = str(index)
    os.environ[server.MAX_AGE_ENV] = str(max_age)
    if config:
        os.environ[server.CONFIG_ENV] = str(config)
    target = "recommender.server:app_from_environment"
    if http_server == "uvicorn":
        runner.run(target, factory=True, host=host, port=port, workers=workers,
                   log_level="warning")
        return
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    Server(target, factory=True, address=host, port=port, workers=workers,
           interface=Interfaces.ASGI, log_level=LogLevels.warning,
           # a worker still starting when SIGTERM comes would otherwise keep it waiting
           workers_kill_timeout=5).serve()


COMMANDS = [serve]
