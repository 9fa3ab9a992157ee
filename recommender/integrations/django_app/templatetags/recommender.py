"""`{% load recommender %}`: the slots of an article page, never raising into the template.

    {% related_articles article.id "see_also" as items %}
    {% related_articles article.id "you_may_also_like" k=4 as items %}
    {% related_page article.id as slots %}   {# every slot, no article twice #}
    {% for a in items %}
      <a href="{{ a.url }}" title="{{ a.reason|reason_text }}">{{ a.title }}</a>
    {% endfor %}
"""

from __future__ import annotations

from typing import Any

from django import template

from recommender.integrations.django import template_recommender
from recommender.integrations.safe import PageSlots, reason_text
from recommender.ranking import Recommendation

register = template.Library()


@register.simple_tag  # type: ignore[untyped-decorator]
def related_articles(article_id: str | int, slot: str = "you_may_also_like",
                     k: int | None = None) -> list[Recommendation]:
    """What `slot` shows on the page of `article_id` ([] on any failure, logged once)."""
    return template_recommender().related(article_id, slot, k)


@register.simple_tag  # type: ignore[untyped-decorator]
def related_page(article_id: str | int) -> PageSlots:
    """Every slot of the page of `article_id`, by name (no article twice on the page)."""
    return template_recommender().page(article_id)


@register.filter(name="reason_text")  # type: ignore[untyped-decorator]
def reason_text_filter(reason: dict[str, Any]) -> str:
    """Why a link is there, in one line (for a title attribute)."""
    return reason_text(reason)
