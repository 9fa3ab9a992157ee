"""Exceptions raised by the library; the CLI maps each to a one-line message and an exit code.

    RecommenderError
    ├── IndexNotFound        no index at the given path (or never built)
    ├── IndexCorrupt         a file of the index is missing, truncated or inconsistent
    ├── IndexLocked          another build or update holds the index lock (or an editor
    │                        holds the overrides lock longer than the timeout)
    ├── StorageError         a write failed: disk full, read-only or not permitted (with the
    │                        cause); what was half written is removed
    ├── RemovalRefused       a build would remove more of the index than allowed (an empty
    │                        or truncated export): nothing was published
    ├── ModelMismatch        the index was built with another model or dimension
    ├── EngineError          the build engine cannot run: an unknown --engine, Ray not
    │                        installed, the cluster unreachable, a worker failed
    ├── RuntimeUnavailable   the embedding runtime asked for (openvino) is not installed or
    │                        cannot run this model
    ├── ArticleNotFound      an id that is not in the index
    ├── UnknownSlot          a slot name that no policy defines
    ├── InputError           an input file cannot be read at all (missing, unknown format)
    ├── InvalidArticle       one record breaks the article rules (carries file, line, reason)
    ├── InvalidInput         --strict run with invalid records: nothing was published
    ├── ConfigError          recommender.toml or an override file is wrong
    │   └── InvalidOverride  an editorial command that breaks a rule (an article paired or
    │                        pinned with itself, an --until in the past)
    └── DatasetError         a public dataset cannot be fetched or verified
"""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class of every error this library raises on purpose."""

    exit_code = 1


class IndexNotFound(RecommenderError):
    pass


class IndexCorrupt(RecommenderError):
    pass


class IndexLocked(RecommenderError):
    pass


class StorageError(RecommenderError):
    pass


class RemovalRefused(RecommenderError):
    pass


class ModelMismatch(RecommenderError):
    pass


class EngineError(RecommenderError):
    pass


class RuntimeUnavailable(RecommenderError):
    pass


class ArticleNotFound(RecommenderError, KeyError):
    exit_code = 2

    def __init__(self, article_id: str) -> None:
        super().__init__(f"unknown article id: {article_id!r}")
        self.article_id = article_id

    def __str__(self) -> str:  # KeyError would quote the message again
        return str(self.args[0])


class UnknownSlot(RecommenderError):
    exit_code = 2


class InputError(RecommenderError):
    pass


class InvalidArticle(RecommenderError, ValueError):
    """One invalid record; `source` and `line` say where it came from (line is 1-based)."""

    def __init__(self, reason: str, *, source: str = "<records>", line: int | None = None,
                 article_id: str | None = None) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.article_id = article_id
        super().__init__(self.location() + ": " + reason)

    def location(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source


class InvalidInput(RecommenderError):
    exit_code = 3


class ConfigError(RecommenderError):
    pass


class InvalidOverride(ConfigError):
    exit_code = 2


class DatasetError(RecommenderError):
    pass
