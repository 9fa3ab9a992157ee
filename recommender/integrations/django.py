"""Django support: one `SafeRecommender` per process over `settings.RECOMMENDER_INDEX`, used by
the `{% load recommender %}` tag library of the app `recommender.integrations.django_app`.

    INSTALLED_APPS += ["recommender.integrations.django_app"]
    RECOMMENDER_INDEX = "/srv/indexes/news"          # else $RECOMMENDER_INDEX
    RECOMMENDER_CONFIG = "/etc/recommender.toml"     # optional; else as `Recommender.open`
"""

from __future__ import annotations

import os
import threading

try:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
except ImportError as exc:
    raise ImportError("recommender.integrations.django needs Django: "
                      "pip install 'recommender[django]'") from exc

from ..recommender import Recommender
from .safe import SafeRecommender

__all__ = ["reset", "template_recommender"]

_SettingsKey = tuple[str | None, str | None]

_lock = threading.Lock()
_current: tuple[_SettingsKey, SafeRecommender] | None = None


def _settings_key() -> _SettingsKey:
    index = getattr(settings, "RECOMMENDER_INDEX", None) or os.environ.get("RECOMMENDER_INDEX")
    config = getattr(settings, "RECOMMENDER_CONFIG", None)
    return (None if index is None else os.fspath(index),
            None if config is None else os.fspath(config))


def _opener(key: _SettingsKey) -> SafeRecommender:
    index, config = key

    def open_index() -> Recommender:
        if index is None:
            raise ImproperlyConfigured("set RECOMMENDER_INDEX in the Django settings "
                                       "(or $RECOMMENDER_INDEX) to the index directory")
        return Recommender.open(index, config=config, strict_config=False)

    return SafeRecommender(open_index)


def template_recommender() -> SafeRecommender:
    """The process's SafeRecommender for the current settings: opened on first use and shared
    by every thread; a change of RECOMMENDER_INDEX/RECOMMENDER_CONFIG (override_settings)
    gives a new one."""
    global _current
    key = _settings_key()
    current = _current
    if current is not None and current[0] == key:
        return current[1]
    with _lock:
        if _current is None or _current[0] != key:
            _current = (key, _opener(key))
        return _current[1]


def reset() -> None:
    """Drop the opened index and the errors already logged (tests, or after moving the
    index); the next tag opens it again."""
    global _current
    with _lock:
        _current = None
