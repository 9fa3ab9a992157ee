"""The bundled sample corpus: ~150 original short news articles written for this project,
with the cases that make recommending hard (multi-day stories, a syndicated copy,
translations, a draft, a deleted article, a very old article on a current topic)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_corpus_path() -> Path:
    return Path(str(resources.files("recommender") / "data" / "sample_articles.jsonl"))
