"""The command group, shared options and the mapping of library errors to exit codes.

Exit codes: 0 success; 1 error (index missing or corrupt, model mismatch, unreadable input,
locked index); 2 usage error or unknown article id / slot; 3 some input records were invalid
(the valid ones were published, unless --strict).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import RecommenderError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INVALID_RECORDS = 3


class CommandError(click.ClickException):
    """A one-line error with the exit code of the library error behind it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class


def reports_errors(func: F) -> F:
    """Turn library errors into one-line messages and exit codes (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RecommenderError as exc:
            raise CommandError(str(exc), exc.exit_code) from exc

    return wrapper  # type: ignore[return-value]


def index_option(func: F) -> F:
    return click.option(
        "--index", "index", envvar="RECOMMENDER_INDEX", required=True,
        type=click.Path(file_okay=False), metavar="DIR",
        help="Index directory (or $RECOMMENDER_INDEX).")(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print a stable JSON document instead of a table.")(func)


def config_option(func: F) -> F:
    return click.option(
        "--config", "config", envvar="RECOMMENDER_CONFIG", default=None, metavar="FILE",
        type=click.Path(dir_okay=False),
        help="Slot policies (TOML) [default: <index>/recommender.toml].")(func)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class _StderrHandler(logging.Handler):
    """What the library logs ("recommender" logger) as `error: ...` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


def _log_to_stderr() -> None:
    library = logging.getLogger("recommender")
    if not any(isinstance(h, _StderrHandler) for h in library.handlers):
        library.addHandler(_StderrHandler(logging.WARNING))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="recommender")
def main() -> None:
    """Related articles for the "See also" and "You may also like" slots of news sites."""
    _log_to_stderr()


def _register() -> None:
    from . import (
        config_commands,
        dataset_commands,
        editorial_commands,
        evaluation_commands,
        index_commands,
        query_commands,
        render_commands,
        serve_commands,
    )

    for module in (index_commands, query_commands, editorial_commands, config_commands,
                   render_commands, evaluation_commands, dataset_commands, serve_commands):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
