"""Jinja2 helpers: `install(env, rec)` gives templates `related`, `see_also` and `page`.

    {% for a in related(article.id, "you_may_also_like") %}
      <a href="{{ a.url }}" title="{{ a.reason|reason_text }}">{{ a.title }}</a>
    {% endfor %}

The helpers return `Recommendation` objects and never raise: a failure empties the slot and
is logged once (see `SafeRecommender`).
"""

from __future__ import annotations

import os

try:
    from jinja2 import Environment, PackageLoader, select_autoescape
except ImportError as exc:
    raise ImportError("recommender.integrations.jinja needs Jinja2: "
                      "pip install 'recommender[jinja]'") from exc

from ..config import Config
from ..recommender import Recommender
from .safe import (
    RecommenderSource,
    SafeRecommender,
    article_href,
    check_link_pattern,
    reason_text,
)

__all__ = ["ArticlePages", "article_href", "check_link_pattern", "install",
           "packaged_environment", "render_article_page"]


def install(env: Environment, rec: RecommenderSource | SafeRecommender, *,
            config: Config | str | os.PathLike[str] | None = None,
            link_pattern: str | None = None) -> SafeRecommender:
    """Register the globals `related(id, slot="you_may_also_like", k=None)`,
    `see_also(id, k=None)` and `page(id)` (every slot, no article twice), the filter
    `reason_text` and the filter `href` (where a link points: `link_pattern` with `{id}`
    replaced by the URL-encoded id, e.g. "/articles/{id}", or the article's own url when
    there is no pattern) in `env`. `rec` is a Recommender, an index path or a callable
    returning a Recommender (opened on first use); `config` applies to a path. Returns the
    helper object (its `reset()` drops the opened index and the errors already logged)."""
    safe = rec if isinstance(rec, SafeRecommender) else SafeRecommender(rec, config=config)
    check_link_pattern(link_pattern)
    env.globals.update(related=safe.related, see_also=safe.see_also, page=safe.page)
    env.filters["reason_text"] = reason_text
    env.filters["href"] = lambda link: article_href(link, link_pattern)
    return safe


def packaged_environment() -> Environment:
    """An environment over the templates shipped in `recommender/templates` (autoescaped)."""
    return Environment(loader=PackageLoader("recommender", "templates"),
                       autoescape=select_autoescape(default=True, default_for_string=True),
                       trim_blocks=True, lstrip_blocks=True)


class ArticlePages:
    """The packaged article page (or another template of `recommender/templates`) over one
    Recommender, compiled once: what `recommender render` writes and `recommender serve`
    answers at /articles/{id}. `link_pattern` as in `install`."""

    def __init__(self, rec: Recommender, *, template: str = "article.html",
                 link_pattern: str | None = None) -> None:
        self._rec = rec
        env = packaged_environment()
        install(env, rec, link_pattern=link_pattern)
        self._template = env.get_template(template)

    def render(self, article_id: str) -> str:
        """The page of `article_id`, as HTML. Raises ArticleNotFound for an unknown id (the
        page needs the article itself); the slots themselves never raise."""
        return self._template.render(article=self._rec.article(article_id))


def render_article_page(rec: Recommender, article_id: str, template: str = "article.html",
                        *, link_pattern: str | None = None) -> str:
    """The packaged article page of `article_id` with its slots, as HTML (see ArticlePages)."""
    return ArticlePages(rec, template=template, link_pattern=link_pattern).render(article_id)
