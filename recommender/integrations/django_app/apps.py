"""App config: `INSTALLED_APPS += ["recommender.integrations.django_app"]`."""

from __future__ import annotations

from django.apps import AppConfig


class RecommenderConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "recommender.integrations.django_app"
    label = "recommender"
    verbose_name = "Related articles"
