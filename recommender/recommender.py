"""The one public face for templates, notebooks and the CLI: `Recommender.open(path)`."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from .articles import Article
from .embedding import Embedder, check_model
from .errors import ArticleNotFound, IndexCorrupt, ModelMismatch, UnknownSlot
from .ranking import (
    DEFAULT_SLOTS,
    PAGE_ORDER,
    Candidate,
    Recommendation,
    SlotPolicy,
    apply_policy,
    recommendation,
)
from .store import IndexDirectory, IndexVersion


class Recommender:
    """Read side of an index. Cheap to open (nothing but ids is loaded eagerly), safe to share
    across threads, and it follows new versions published by `build`/`update`: at most every
    `reload_interval` seconds a call checks the version pointer and swaps to the new version.
    """

    def __init__(self, directory: IndexDirectory, version: IndexVersion, *,
                 slots: dict[str, SlotPolicy] | None = None, reload_interval: float = 1.0
                 ) -> None:
        self._directory = directory
        self._version = version
        self._stamp = directory.pointer_stamp()
        self._checked = time.monotonic()
        self._reload_interval = reload_interval
        self._reload_lock = threading.Lock()
        self.slots = dict(slots or DEFAULT_SLOTS)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, model: str | Embedder | None = None,
             reload_interval: float = 1.0) -> Recommender:
        """Open the live version of the index at `path`. If `model` is given, it must be the
        model the index was built with (ModelMismatch otherwise)."""
        directory = IndexDirectory(path)
        version = IndexVersion(directory.current_path())
        if model is not None:
            manifest = version.manifest
            if isinstance(model, str):
                if model != manifest.model:
                    version.close()
                    raise ModelMismatch(
                        f"index {path} was built with model {manifest.model!r}, not {model!r}")
            else:
                check_model(manifest.model, manifest.dimension, model)
        return cls(directory, version, reload_interval=reload_interval)

    # ------------------------------------------------------------------ versions

    @property
    def path(self) -> Path:
        return self._directory.root

    @property
    def version(self) -> str:
        return self._current().manifest.version

    def reload(self) -> bool:
        """Switch to the newest published version now; True if it changed."""
        with self._reload_lock:
            self._checked = time.monotonic()
            try:
                stamp = self._directory.pointer_stamp()
            except FileNotFoundError:
                return False
            if stamp == self._stamp:
                return False
            newest = IndexVersion(self._directory.current_path())
            # The old version is not closed: another thread may be mid-query on it. Its
            # files stay readable until the object is collected.
            self._version, self._stamp = newest, stamp
            return True

    def _current(self) -> IndexVersion:
        if self._reload_interval >= 0 and \
                time.monotonic() - self._checked >= self._reload_interval:
            with contextlib.suppress(IndexCorrupt, OSError):
                self.reload()  # on failure: keep serving the version we have
        return self._version

    # ------------------------------------------------------------------ queries

    def article(self, article_id: str) -> Article:
        version = self._current()
        pos = self._position(version, article_id)
        return version.articles_at([pos])[pos]

    def ids(self) -> list[str]:
        """Every article id in the index, in index order (any status)."""
        return list(self._current().ids)

    def articles(self) -> list[Article]:
        """Every article in the index with its metadata (any status)."""
        return self._current().all_articles()

    def __contains__(self, article_id: object) -> bool:
        return isinstance(article_id, str) and article_id in self._current().position

    def __len__(self) -> int:
        return self._current().manifest.count

    @staticmethod
    def _position(version: IndexVersion, article_id: str) -> int:
        try:
            return version.position[article_id]
        except KeyError:
            raise ArticleNotFound(article_id) from None

    def _candidates(self, version: IndexVersion, article_id: str, n: int
                    ) -> tuple[Article, list[Candidate]]:
        pos = self._position(version, article_id)
        scores, rows = version.search(version.vectors[pos], n + 1)
        hits = [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True)
                if r >= 0 and r != pos]
        articles = version.articles_at([pos] + [r for r, _ in hits])
        return articles[pos], [Candidate(articles[r], s) for r, s in hits[:n]]

    def similar(self, article_id: str, k: int = 10) -> list[Recommendation]:
        """The relevance ranking itself: the k nearest articles by cosine similarity, before
        any slot policy (any status; each result says its status). Never the article itself."""
        _, candidates = self._candidates(self._current(), article_id, k)
        return [recommendation(c, {"semantic": round(c.score, 4)}) for c in candidates]

    def policy(self, slot: str) -> SlotPolicy:
        try:
            return self.slots[slot]
        except KeyError:
            raise UnknownSlot(f"unknown slot {slot!r} (known: {', '.join(self.slots)})") from None

    def related(self, article_id: str, slot: str = "you_may_also_like", k: int | None = None
                ) -> list[Recommendation]:
        """What `slot` shows on the page of `article_id`: published articles only."""
        policy = self.policy(slot)
        source, candidates = self._candidates(self._current(), article_id,
                                              max(policy.candidates, k or 0))
        return apply_policy(policy, source, candidates, k=k)

    def page(self, article_id: str) -> dict[str, list[Recommendation]]:
        """Every slot of one page; no article appears in two slots (earlier slots win)."""
        version = self._current()
        policies = [self.slots[name] for name in PAGE_ORDER if name in self.slots] + \
            [p for name, p in self.slots.items() if name not in PAGE_ORDER]
        source, candidates = self._candidates(version, article_id,
                                              max(p.candidates for p in policies))
        shown: set[str] = set()
        out: dict[str, list[Recommendation]] = {}
        for policy in policies:
            results = apply_policy(policy, source, candidates, exclude=shown)
            shown.update(r.id for r in results)
            out[policy.name] = results
        return out

    def info(self) -> dict[str, Any]:
        version = self._current()
        manifest = version.manifest.to_dict()
        manifest["path"] = str(self._directory.root)
        manifest["slots"] = {name: {"k": p.k, "min_score": p.min_score}
                             for name, p in self.slots.items()}
        return manifest
