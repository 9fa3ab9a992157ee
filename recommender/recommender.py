"""The one public face for templates, notebooks and the CLI: `Recommender.open(path)`."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .articles import Article, parse_datetime
from .config import PAGE_ORDER, Config, Filters, SlotPolicy, config_path, read_config
from .embedding import Embedder, check_model, model_name
from .errors import ArticleNotFound, ConfigError, IndexCorrupt, ModelMismatch, UnknownSlot
from .overrides import Overrides, OverridesFile
from .pages import PageStore, StoredPage
from .ranking import Candidates, Pick, Ranker, Recommendation
from .store import IndexDirectory, IndexVersion

Clock = Callable[[], datetime]
logger = logging.getLogger("recommender")
PAGE_MEMO = 10_000  # pages kept by what they depend on (Recommender.open(page_memo=))


@dataclass
class _Live:
    """One opened version and what the ranking derives from it."""

    version: IndexVersion
    ranker: Ranker
    digest: bytes  # what every page of this version and config depends on (PageMemo)
    pages: PageStore | None = None  # the pages written into the version (build --pages)


def takes_nearby(page: dict[str, list[Recommendation]]) -> bool:
    """Does a page show links "nearby" in time (a fallback drawn from the whole index by
    date, not from its candidates)? Such a page is kept for its version and minute only."""
    return any(r.reason.get("fallback") == "nearby" for links in page.values() for r in links)


class PageMemo:
    """Pages computed before, kept by what their answer depends on (a digest of the article's
    and its candidates' records and scores, the config, the overrides, what of it the clock
    decides), not by index version: a page whose inputs a publish did not touch is answered
    again from here in the next version, and the next minute does not recompute it. Shared by
    the Recommenders of successive versions (`Recommender.open(page_memo=...)`). Bounded:
    least recently used go first. hits and misses count lookups (for benches and tests)."""

    def __init__(self, size: int = PAGE_MEMO) -> None:
        self.size = size
        self.hits = self.misses = 0
        self._pages: OrderedDict[tuple[str, Any], tuple[bytes, tuple[str, str] | None,
                                                        dict[str, list[Recommendation]]]] = \
            OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, key: tuple[str, Any], depends: bytes, moment: tuple[str, str]
            ) -> dict[str, list[Recommendation]] | None:
        with self._lock:
            kept = self._pages.get(key)
            # a page that took links "nearby" in time read the whole index by date: it is
            # kept for its version and minute only
            if kept is None or kept[0] != depends or (kept[1] is not None and kept[1] != moment):
                self.misses += 1
                return None
            self._pages.move_to_end(key)
            self.hits += 1
        return {name: list(links) for name, links in kept[2].items()}

    def put(self, key: tuple[str, Any], depends: bytes, moment: tuple[str, str] | None,
            page: dict[str, list[Recommendation]]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._pages[key] = (depends, moment, {n: list(links) for n, links in page.items()})
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)


class Recommender:
    """Read side of an index. Cheap to open, safe to share across threads, and it follows new
    versions published by `build`/`update` and edits of its config file (at most every
    `reload_interval` seconds a call checks both) and of the overrides file. A new version or
    config that cannot be used is logged to the "recommender" logger and the one in use stays.

    `now` fixes the clock that freshness is computed against (a datetime or a callable);
    by default the real time, so precomputed lists age correctly.
    """

    def __init__(self, directory: IndexDirectory, version: IndexVersion, *, config: Config,
                 reload_interval: float = 1.0, now: datetime | Clock | None = None,
                 config_file: Path | None = None, config_required: bool = False,
                 page_memo: PageMemo | int = PAGE_MEMO) -> None:
        self._directory = directory
        self.memo = page_memo if isinstance(page_memo, PageMemo) else PageMemo(page_memo)
        # The configuration as given; `config` is it over the model profile of the version
        # served (config.MODEL_PROFILES), set with each version.
        self._given_config = config
        self._by_model: dict[str, Config] = {}  # it over each model's profile, made once
        self.config = config
        self._config_file, self._config_required = config_file, config_required
        self._config_stamp = file_stamp(config_file)
        self._config_lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()
        self._last_state: tuple[tuple[Any, ...], str] | None = None  # (parts, tag): state()
        self._live = self._prepare(version)
        try:
            self._stamp: tuple[int, int] | None = directory.pointer_stamp()
        except FileNotFoundError:  # a version not published yet (pages.write_pages)
            self._stamp = None
        self._checked = time.monotonic()
        self._reload_interval = reload_interval
        self._reload_lock = threading.Lock()
        self._overrides = OverridesFile(directory.root)
        if now is None:
            self._clock: Clock = lambda: datetime.now(UTC)
        elif isinstance(now, datetime):
            fixed = now if now.tzinfo else now.replace(tzinfo=UTC)
            self._clock = lambda: fixed
        else:
            self._clock = now

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, model: str | Embedder | None = None,
             config: Config | str | os.PathLike[str] | None = None,
             reload_interval: float = 1.0, now: datetime | Clock | None = None,
             strict_config: bool = True, page_memo: PageMemo | int = PAGE_MEMO
             ) -> Recommender:
        """Open the live version of the index at `path`.

        model: if given, must be the model the index was built with (else ModelMismatch).
        config: a Config, or a TOML path; default: $RECOMMENDER_CONFIG, then
        `<path>/recommender.toml`, then built-in defaults. A file is followed: its edits apply
        without reopening.
        now: the clock freshness is computed against; default $RECOMMENDER_NOW (ISO 8601),
        else the real time.
        strict_config: False to serve the built-in defaults (and log an error) rather than
        fail when the config file cannot be used; what the template helpers do.
        page_memo: how many pages `page()` keeps by what they depend on (0: none), or the
        PageMemo of the Recommender that served the previous version, to carry its pages.
        """
        directory = IndexDirectory(path)
        version = IndexVersion(directory.current_path())
        if model is not None:
            manifest = version.manifest
            if isinstance(model, str):
                if model_name(model) != manifest.model:
                    version.close()
                    raise ModelMismatch(
                        f"index {path} was built with model {manifest.model!r}, not {model!r}")
            else:
                check_model(manifest.model, manifest.dimension, model)
        file, required = (None, False) if isinstance(config, Config) else \
            config_path(path, config)
        if not isinstance(config, Config):
            try:
                config = read_config(file, required) if file is not None else Config()
            except ConfigError as exc:
                if strict_config:
                    version.close()
                    raise
                logger.error("%s; serving the built-in defaults until it is fixed", exc)
                config = Config()
        if now is None:
            now = clock_from_environment()
        return cls(directory, version, config=config, reload_interval=reload_interval,
                   now=now, config_file=file, config_required=required, page_memo=page_memo)

    def _prepare(self, version: IndexVersion) -> _Live:
        model = version.manifest.model
        if model not in self._by_model:  # parsed once, not on every version switch
            self._by_model = {model: self._given_config.for_model(model)}
        self.config = self._by_model[model]
        ranker = Ranker(version, self.config.ranking)
        # the file the config came from is for messages only: the same settings read from
        # another spelling of its path give the same pages
        settings = dataclasses.replace(self.config, source=None)
        digest = hashlib.sha256(repr((model, settings, ranker.page_wide())).encode()).digest()
        try:
            pages = PageStore.open(version.path)
        except IndexCorrupt as exc:  # pages are computed on request instead
            self._log_once("pages", f"{exc}; its pages are computed on request")
            pages = None
        return _Live(version, ranker, digest, pages)

    # ------------------------------------------------------------------ versions

    @property
    def path(self) -> Path:
        return self._directory.root

    @property
    def version(self) -> str:
        return self._current().version.manifest.version

    @property
    def slots(self) -> dict[str, SlotPolicy]:
        self._current()  # follows an edit of the config file first
        return self.config.slots

    def now(self) -> datetime:
        return self._clock()

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
            # The old version is not closed: another thread may be mid-query on it. Its
            # files stay readable until the object is collected.
            self._live = self._prepare(IndexVersion(self._directory.current_path()))
            self._stamp = stamp
            return True

    def _current(self) -> _Live:
        if self._reload_interval >= 0 and \
                time.monotonic() - self._checked >= self._reload_interval:
            try:
                self.reload()
            except (IndexCorrupt, OSError) as exc:  # keep serving the version we have
                self._log_once("version", f"{self.path}: cannot switch to the new version "
                               f"({exc}); still serving {self._live.version.manifest.version}")
            self._follow_config()
        return self._live

    def _follow_config(self) -> None:
        """Apply an edit of the config file; a file that cannot be used is logged and the
        config in use stays."""
        if self._config_file is None or not self._config_lock.acquire(blocking=False):
            return
        try:
            stamp = file_stamp(self._config_file)
            if stamp == self._config_stamp:
                return
            self._config_stamp = stamp
            try:
                config = read_config(self._config_file, self._config_required)
            except ConfigError as exc:
                self._log_once("config", f"{exc}; keeping the configuration in use")
                return
            self._given_config, self._by_model = config, {}
            self._live = self._prepare(self._live.version)
        finally:
            self._config_lock.release()

    def _log_once(self, kind: str, message: str, exc: Exception | None = None) -> None:
        key = (kind, message)
        if key in self._logged:
            return
        if len(self._logged) > 256:  # bounded: a long-running server logs new errors again
            self._logged.clear()
        self._logged.add(key)
        logger.error("%s", message, exc_info=exc)

    def overrides(self) -> Overrides:
        return self._overrides.load()

    def state(self) -> str:
        """A short tag that changes whenever answers may change for a reason other than the
        question: a new index version, an edit of the overrides or of the config file, or the
        clock moving to another minute (freshness, pins' and embargoes' ends). For caches: two
        equal tags give equal answers to equal queries (within the minute)."""
        version = self._current().version.manifest.version
        minute = int(self.now().timestamp() // 60)
        # the config file as last applied (`_follow_config`), not stat'ed on every call
        parts = (version, self._overrides.stamp(), self._config_stamp, minute)
        last = self._last_state
        if last is None or last[0] != parts:  # a cache asks on every request
            last = self._last_state = (parts, hashlib.sha256(repr(parts).encode()
                                                             ).hexdigest()[:20])
        return last[1]

    # ------------------------------------------------------------------ lookups

    def article(self, article_id: str) -> Article:
        version = self._current().version
        pos = self._position(version, article_id)
        return version.articles_at([pos])[pos]

    def ids(self) -> list[str]:
        """Every article id in the index, in index order (any status)."""
        return list(self._current().version.ids)

    def articles(self) -> list[Article]:
        """Every article in the index with its metadata (any status)."""
        return self._current().version.all_articles()

    def __contains__(self, article_id: object) -> bool:
        return isinstance(article_id, str) and article_id in self._current().version.position

    def __len__(self) -> int:
        return self._current().version.manifest.count

    @staticmethod
    def _position(version: IndexVersion, article_id: str) -> int:
        try:
            return version.position[article_id]
        except KeyError:
            raise ArticleNotFound(article_id) from None

    def policy(self, slot: str) -> SlotPolicy:
        try:
            return self.slots[slot]
        except KeyError:
            raise UnknownSlot(f"unknown slot {slot!r} (known: {', '.join(self.slots)})") from None

    # ------------------------------------------------------------------ queries

    def _candidates(self, live: _Live, source: int, n: int, *, at_least: int = 0,
                    precomputed: bool = True) -> Candidates:
        """Up to n nearest published articles to the source's anchor (itself, or its
        original): a read from the precomputed table (whose width, set at build time, caps n),
        or a live search where there is no table, where the table holds fewer than `at_least`
        (a caller asking for more links than were precomputed), or with precomputed=False
        (then any status)."""
        version, anchor = live.version, live.ranker.anchor(source)
        table = version.neighbour_table() if precomputed else None
        if table is not None and table[0].shape[1] >= at_least:
            parts = version.table_row(anchor)
            assert parts is not None  # (there is a table)
            keep = (parts[0] >= 0) & (parts[0] != source)
            return Candidates(*(np.asarray(part[keep][:n], dtype=dtype) for part, dtype
                                in zip(parts, (np.int64, np.float32, np.float32, np.float32),
                                       strict=True)))
        _, rows = version.search(version.vectors[anchor], n + 2)
        keep = (rows[0] >= 0) & (rows[0] != source) & (rows[0] != anchor)
        return live.ranker.candidates(anchor, rows[0][keep][:n])

    def _results(self, version: IndexVersion, picks: list[Pick],
                 rows: dict[int, tuple[Any, ...]] | None = None) -> list[Recommendation]:
        if rows is None:
            rows = version.summaries_at(p.row for p in picks)
        out = []
        for pick in picks:
            article_id, title, url, published_at, section, status = rows[pick.row]
            out.append(Recommendation(
                id=article_id, title=title, url=url, score=pick.score, reason=pick.reason,
                published_at=datetime.fromisoformat(published_at) if published_at else None,
                section=section, status=status))
        return out

    def similar(self, article_id: str, k: int = 10) -> list[Recommendation]:
        """The relevance ranking itself, before any slot policy: the k most related articles
        by fused relevance (any status; each result says its status). Never the article."""
        live = self._current()
        source = self._position(live.version, article_id)
        candidates = self._candidates(live, source, max(k, 50), precomputed=False)
        _, picks = live.ranker.ranking(source, candidates)
        return self._results(live.version, picks[:k])

    def related(self, article_id: str, slot: str = "you_may_also_like", k: int | None = None,
                *, filters: Filters | None = None) -> list[Recommendation]:
        """What `slot` shows on the page of `article_id` (see `ranking` for the steps).
        `filters` narrows the slot's policy for this call (only some sections, languages,
        a shorter age limit); it never widens it."""
        policy = self.policy(slot)
        live = self._current()
        source = self._position(live.version, article_id)
        narrowed = filters.narrow(policy) if filters else policy
        if narrowed is None:  # the filters ask for what the slot never shows
            return []
        candidates = self._candidates(live, source, max(policy.candidates, k or 0),
                                      at_least=k or policy.k)
        picks = live.ranker.select(narrowed, live.ranker.prepare(source, candidates),
                                   now=self.now(), overrides=self.overrides(), k=k,
                                   filtered=bool(filters))
        return self._results(live.version, picks)

    def translations(self, article_id: str) -> list[Recommendation]:
        """The article's versions in other languages (published): linked by
        `translation_of`, or, found by the model, another language, close in meaning
        (translation_similarity) and in time (translation_window_days). The slots never show
        them as separate stories; a page can offer them as "also in". Best first."""
        live = self._current()
        source = self._position(live.version, article_id)
        version, ranker = live.version, live.ranker
        anchor = ranker.anchor(source)
        _, near = version.search(version.vectors[anchor], 52)
        rows = near[0][(near[0] >= 0) & (near[0] != source)].astype(np.int64)
        cosine = ranker.candidates(anchor, rows).semantic
        # the original a translation is ranked through is one of its versions too
        found = ranker.translation(anchor, rows, cosine) | ((rows == anchor) & (anchor != source))
        found &= version.columns.published[rows]
        order = [i for i in np.argsort(-cosine, kind="stable") if found[i]]
        picks = [Pick(int(rows[i]), float(cosine[i]),
                      {"translation": True, "language": ranker.language_of(int(rows[i])),
                       "semantic": round(float(cosine[i]), 4)}) for i in order]
        return self._results(live.version, picks)

    def page(self, article_id: str, *, filters: Filters | None = None
             ) -> dict[str, list[Recommendation]]:
        """Every slot of one page. No article appears twice on the page, nor a copy of a link
        already on it, and where a slot keeps one link per event, no event twice; earlier
        slots (see_also) choose first. `filters` narrows every slot (see `related`).
        Kept in the PageMemo by what it depends on: asked again, it is answered from memory
        while none of that changed (the lists returned are new; the links are shared)."""
        # (without a PageMemo nothing reads the digest of what the page depends on)
        inputs = self._page_inputs(article_id, filters, digest=self.memo.size > 0)
        moment, depends = inputs[-2:]
        key = (article_id, filters)
        if self.memo.size > 0:
            kept = self.memo.get(key, depends, moment)
            if kept is not None:
                return kept
        page = self._compute_page(inputs, filters)
        if self.memo.size > 0:
            self.memo.put(key, depends, moment if takes_nearby(page) else None, page)
        return page

    def _compute_page(self, inputs: tuple[Any, ...], filters: Filters | None
                      ) -> dict[str, list[Recommendation]]:
        """The page from its inputs (`_page_inputs`), ranked now."""
        live, source, policies, candidates, now, overrides, pinned, _, _ = inputs
        version, ranker = live.version, live.ranker
        narrowed = {p.name: filters.narrow(p) if filters else p for p in policies}
        prepared = ranker.prepare(source, candidates)
        shown: list[int] = []
        chosen: dict[str, list[Pick]] = {}
        for policy in policies:
            reserved = {r for name, rows in pinned.items() if name != policy.name for r in rows}
            slot_policy = narrowed[policy.name]
            if slot_policy is None:  # the filters ask for what this slot never shows
                chosen[policy.name] = []
                continue
            try:
                picks = ranker.select(slot_policy, prepared, now=now, overrides=overrides,
                                      shown=shown, reserved=reserved, filtered=bool(filters))
            except Exception as exc:  # one broken slot renders empty alone, not the page
                self._log_once("slot", f"slot {policy.name!r} left empty: "
                               f"{type(exc).__name__}: {exc}", exc)
                picks = []
            shown.extend(p.row for p in picks)
            chosen[policy.name] = picks
        rows = version.summaries_at(shown)  # one read for the whole page
        return {name: self._results(version, picks, rows) for name, picks in chosen.items()}

    def stored_page(self, article_id: str) -> StoredPage | None:
        """The page of `article_id` (no filters) as computed ahead into this version
        (`build --pages`): the JSON of its slots, as the HTTP API sends them, and its
        `page_key`, when one is stored and still holds now (same config and overrides; the
        clock within the dates it was computed for); None otherwise (then `page()`)."""
        live = self._current()
        store = live.pages
        row = live.version.position.get(article_id)
        if store is None or row is None or \
                not store.holds(live.digest, self._overrides.stamp()):
            return None
        return store.get(row, article_id, self.now().timestamp())

    def page_key(self, article_id: str, *, filters: Filters | None = None) -> str:
        """A digest of everything `page(article_id, filters=filters)` depends on but the
        index version (see `_page_depends`): equal keys, equal pages, unless the page takes
        links "nearby" in time (`takes_nearby`), which read the whole version. Cheap (no
        ranking): what an HTTP cache validates a kept answer with."""
        return self._page_inputs(article_id, filters)[-1].hex()

    def _page_inputs(self, article_id: str, filters: Filters | None, digest: bool = True
                     ) -> tuple[_Live, int, list[SlotPolicy], Candidates, datetime, Overrides,
                                dict[str, list[int]], tuple[str, str], bytes]:
        """What a page is computed from, read once: (live version, source row, the slots in
        page order, candidates, now, overrides, pinned rows by slot, (version, minute),
        the digest of what it depends on; b"" with digest=False)."""
        live = self._current()
        source = self._position(live.version, article_id)
        policies = [self.slots[n] for n in PAGE_ORDER if n in self.slots] + \
            [p for n, p in self.slots.items() if n not in PAGE_ORDER]
        candidates = self._candidates(live, source, max(p.candidates for p in policies),
                                      at_least=max(p.k for p in policies))
        now, overrides = self.now(), self.overrides()
        pinned = {p.name: live.ranker.pinned_rows(source, p.name, overrides, now)
                  for p in policies}
        minute = now.astimezone(UTC).strftime("%Y%m%dT%H%M")
        depends = self._page_depends(live, source, candidates, pinned, filters, now, minute) \
            if digest else b""
        return (live, source, policies, candidates, now, overrides, pinned,
                (live.version.manifest.version, minute), depends)

    def _page_depends(self, live: _Live, source: int, candidates: Candidates,
                      pinned: dict[str, list[int]], filters: Filters | None, now: datetime,
                      minute: str) -> bytes:
        """A digest of everything a page's answer depends on but the index version: the
        version and config's page-wide digest, the overrides file, the filters, the records
        (fingerprints) of the article, of the one it translates and of its candidates and
        pins, the candidates' scores, which of them the clock still hides, and the minute
        where the clock moves the page's own reference date (an undated or future-dated
        article). Equal digests give equal pages, whichever version computed them."""
        version, ranker = live.version, live.ranker
        fingerprint, timestamp = version.columns.fingerprint, version.columns.timestamp
        anchor = ranker.anchor(source)
        now_ts = now.timestamp()
        digest = hashlib.blake2b(live.digest, digest_size=20)
        digest.update(repr((self._overrides.stamp(), filters)).encode())
        digest.update(fingerprint[[source, anchor]].tobytes())
        if not (timestamp[source] <= now_ts and timestamp[anchor] <= now_ts):  # NaN too
            digest.update(minute.encode())
        rows = candidates.rows
        for part in (fingerprint[rows], candidates.semantic, candidates.lexical,
                     candidates.names, timestamp[rows] > now_ts):
            digest.update(np.ascontiguousarray(part).tobytes())
        for name in sorted(pinned):
            digest.update(name.encode() + b"\0" + fingerprint[pinned[name]].tobytes())
        return digest.digest()

    def prefetch(self) -> int:
        """Ask the kernel to read the served version's vectors and candidate table into the
        page cache now, so the first pages after a cold start do not wait on the disk
        (IndexVersion.prefetch; the server does it when it starts and before each switch).
        Returns the bytes asked for."""
        return self._current().version.prefetch()

    def pair_relevance(self, first: str, second: str) -> float:
        """The fused relevance score of two articles (what `similar` ranks by)."""
        live = self._current()
        a, b = self._position(live.version, first), self._position(live.version, second)
        anchor = live.ranker.anchor(a)
        candidates = live.ranker.candidates(anchor, np.array([b], dtype=np.int64))
        score, _ = live.ranker.relevance(anchor, candidates)
        return float(score[0])

    def is_duplicate(self, first: str, second: str) -> bool:
        """Would the slots treat `second` as a copy of `first` (same meaning, headline or
        body)? The rule every slot applies, for evaluation and audits."""
        live = self._current()
        a, b = self._position(live.version, first), self._position(live.version, second)
        vectors = live.version.vectors
        cosine = np.array([float(np.dot(vectors[a], vectors[b]))], dtype=np.float32)
        return bool(live.ranker.duplicate(a, np.array([b]), cosine)[0])

    def snapshot(self) -> IndexVersion:
        """The version currently served, read-only: ids, vectors, columns, lexical matrix.
        For analysis (evaluation, notebooks); it does not follow later publishes."""
        return self._current().version

    def info(self) -> dict[str, Any]:
        live = self._current()
        manifest = live.version.manifest.to_dict()
        manifest["path"] = str(self._directory.root)
        manifest["config"] = self.config.source
        manifest["slots"] = {name: {"k": p.k, "min_score": p.min_score}
                             for name, p in self.slots.items()}
        return manifest


def clock_from_environment() -> datetime | None:
    """$RECOMMENDER_NOW (ISO 8601), a fixed clock for reproducible renders and evaluations;
    None when it is not set."""
    if not os.environ.get("RECOMMENDER_NOW"):
        return None
    try:
        return parse_datetime(os.environ["RECOMMENDER_NOW"], "RECOMMENDER_NOW")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def file_stamp(path: Path | None) -> tuple[int, int] | None:
    """(inode, mtime) of a file, None when it does not exist: a cheap change detector."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns
