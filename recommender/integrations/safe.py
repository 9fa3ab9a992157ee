"""What the template integrations share: a `Recommender` opened lazily, once, that never
raises into a page (a failure empties the slot and is logged once), and a link's reason as text.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import quote

from ..articles import safe_url
from ..config import Config
from ..errors import ArticleNotFound, RecommenderError
from ..ranking import Recommendation, explain_reason
from ..recommender import Recommender

RecommenderSource = Recommender | str | os.PathLike[str] | Callable[[], Recommender]

logger = logging.getLogger("recommender")


class PageSlots(dict[str, list[Recommendation]]):
    """The slots of one page by name; a slot that is not there reads as empty, so a template
    can write `page(id).see_also` whatever happened."""

    def __missing__(self, slot: str) -> list[Recommendation]:
        return []


class SafeRecommender:
    """The slot queries of `Recommender` for templates: the same methods, but a failure of any
    kind (unknown id, no index, corrupt index, a bug) gives an empty slot instead of an
    exception, and each distinct failure is logged once to the "recommender" logger.

    `source` is a `Recommender`, an index path, or a callable returning a `Recommender`; a
    path or callable is opened on first use (once, even with many threads rendering). A failed
    open is retried at most every `retry_interval` seconds, so a page starts filling as soon as
    the index is built.

    Note: separate `related` calls for two slots can show one article twice; `page` fills
    every slot of a page with no repeats (as `Recommender.page` does).
    """

    def __init__(self, source: RecommenderSource, *,
                 config: Config | str | os.PathLike[str] | None = None,
                 retry_interval: float = 1.0, remember_errors: int = 256) -> None:
        self._source = source
        self._config = config
        self._retry_interval = retry_interval
        self._lock = threading.Lock()
        self._recommender = source if isinstance(source, Recommender) else None
        self._failed_at: float | None = None
        self._logged = _LogOnce(remember_errors)

    def recommender(self) -> Recommender:
        """The opened Recommender (opening it now if needed); raises what opening raises."""
        rec = self._recommender
        if rec is not None:
            return rec
        with self._lock:
            if self._recommender is None:
                self._recommender = self._open()
            return self._recommender

    def _open(self) -> Recommender:
        source = self._source
        if isinstance(source, Recommender):
            return source
        if callable(source):
            return source()
        # A bad recommender.toml must not blank the site: defaults serve (logged) until fixed.
        return Recommender.open(source, config=self._config, strict_config=False)

    def _ready(self) -> Recommender | None:
        """The Recommender, or None while a failed open waits for its retry."""
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < self._retry_interval:
            return None
        try:
            rec = self.recommender()
        except Exception as exc:
            self._failed_at = time.monotonic()
            self._logged.report(exc)
            return None
        self._failed_at = None
        return rec

    def related(self, article_id: str | int, slot: str = "you_may_also_like",
                k: int | None = None) -> list[Recommendation]:
        """What `slot` shows on the page of `article_id`; [] on any failure."""
        rec = self._ready()
        if rec is None:
            return []
        try:
            return _linkable(rec.related(str(article_id), slot=slot,
                                         k=None if k is None else int(k)))
        except Exception as exc:
            self._logged.report(exc)
            return []

    def see_also(self, article_id: str | int, k: int | None = None) -> list[Recommendation]:
        """The "See also" slot of `article_id`; [] on any failure."""
        return self.related(article_id, "see_also", k)

    def page(self, article_id: str | int) -> PageSlots:
        """Every slot of the page of `article_id` (no article twice); on a failure, every
        slot empty."""
        rec = self._ready()
        if rec is None:
            return PageSlots()
        try:
            return PageSlots((name, _linkable(results))
                             for name, results in rec.page(str(article_id)).items())
        except Exception as exc:
            self._logged.report(exc)
            return PageSlots((name, []) for name in rec.slots)

    def reset(self) -> None:
        """Forget the opened Recommender (unless one was given) and the errors logged."""
        with self._lock:
            if not isinstance(self._source, Recommender):
                self._recommender = None
            self._failed_at = None
            self._logged.clear()


def _linkable(results: list[Recommendation]) -> list[Recommendation]:
    """Only http(s) and relative URLs reach a template's href (an index built before URLs
    were checked may still hold a `javascript:` one): any other becomes None."""
    return [r if r.url == safe_url(r.url) else dataclasses.replace(r, url=safe_url(r.url))
            for r in results]


class _LogOnce:
    """Logs each distinct (kind, message) failure once; remembers the last `limit` of them,
    so a page rendered a million times logs its failure once and memory stays bounded."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def report(self, exc: Exception) -> None:
        key = (type(exc).__name__, str(exc))
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return
            self._seen[key] = None
            if len(self._seen) > self._limit:
                self._seen.popitem(last=False)
        # An id the index does not know yet is routine (published before the next update);
        # anything else means the slots of every page are empty.
        level = logging.WARNING if isinstance(exc, ArticleNotFound) else logging.ERROR
        unexpected = not isinstance(exc, RecommenderError)  # a bug: keep its traceback
        logger.log(level, "related articles left empty: %s: %s (logged once)",
                   key[0], key[1], exc_info=exc if unexpected else None)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def check_link_pattern(pattern: str | None) -> None:
    """A link pattern must say where the id goes (and be a link a page may hold)."""
    if pattern is None:
        return
    if "{id}" not in pattern:
        raise ValueError(f"link pattern {pattern!r} has no {{id}} (e.g. '/articles/{{id}}')")
    if safe_url(pattern.replace("{id}", "x")) is None:
        raise ValueError(f"link pattern {pattern!r} is not an http(s) or relative URL")


def article_href(link: Recommendation, pattern: str | None = None) -> str | None:
    """Where a link points: `pattern` with `{id}` replaced by the URL-encoded id (a site's
    own article pages, or the server's /articles/{id}), else the article's own url (None
    when it has none or it is not an http(s) or relative URL)."""
    if pattern is None:
        return safe_url(link.url)
    return pattern.replace("{id}", quote(link.id, safe=""))


# The one-line explanation of a result, for tooltips.
reason_text = explain_reason
