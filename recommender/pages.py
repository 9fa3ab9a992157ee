"""Pages computed ahead: the page of every article (all slots, no filters) as the JSON the
HTTP API sends, written into a version by `build --pages` / `update` (`pages.sqlite`), so a
server answers a page nobody asked for yet without ranking it.

A stored page is the page `Recommender.page()` computes, and is used only while that holds:
for the version it was written into, with the same settings (config and model, the
overrides file) and while the clock stays on the same side of every date the page's
candidates and pins have (`since` ≤ now < `until`: nothing they hide comes into view, no pin
lapses). Pages whose answer moves with the clock itself are not stored: an undated or
future-dated article's (its reference date is now) and those that take links "nearby" in time
(read from the whole index by date). An update recomputes only the pages whose inputs changed
(`Recommender._page_inputs`' digest); the others are copied from the previous version.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IndexCorrupt

if TYPE_CHECKING:
    from .ranking import Recommendation

PAGES_FILE = "pages.sqlite"
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE pages (pos INTEGER PRIMARY KEY, id TEXT NOT NULL, digest BLOB NOT NULL,
                    since REAL NOT NULL, until REAL NOT NULL, slots BLOB NOT NULL);
"""
# Read through a memory map (shared by every worker that serves the version); a rowid
# lookup of a page is ~7 µs where a text key costs 20-40 µs.
MMAP_BYTES = 1 << 30


def slots_json(page: dict[str, list[Recommendation]]) -> bytes:
    """The "slots" member of a /page answer, encoded as the HTTP API encodes it (Starlette's
    JSONResponse: UTF-8, no spaces, no NaN)."""
    return json.dumps({name: [r.to_dict() for r in links] for name, links in page.items()},
                      ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def settings_key(live_digest: bytes, overrides_stamp: Any) -> str:
    """What every stored page of a version was computed under: the version and config's
    page-wide digest and the overrides file (as `OverridesFile.stamp` sees it)."""
    return json.dumps([live_digest.hex(), None if overrides_stamp is None
                       else list(overrides_stamp)])


@dataclass(frozen=True)
class StoredPage:
    slots: bytes    # slots_json of the page
    digest: bytes   # what it depends on (Recommender.page_key, as bytes)


class PageStore:
    """The pages written into one version, opened read-only (SQLite, immutable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True,
                                         check_same_thread=False)
            self._conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            self.settings: str = meta["settings"]
            self.count = int(meta["count"])
            self.as_of: str = meta["as_of"]
        except (sqlite3.DatabaseError, KeyError, ValueError) as exc:
            raise IndexCorrupt(f"cannot read {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._held: tuple[bytes, Any] | None = None  # the last settings that held

    @classmethod
    def open(cls, version_dir: Path) -> PageStore | None:
        """The version's stored pages, None when it has none."""
        path = version_dir / PAGES_FILE
        return cls(path) if path.is_file() else None

    def holds(self, live_digest: bytes, overrides_stamp: Any) -> bool:
        """Were these pages computed under these settings (settings_key)?"""
        asked = (live_digest, overrides_stamp)
        if asked == self._held:
            return True
        if self.settings != settings_key(live_digest, overrides_stamp):
            return False
        self._held = asked
        return True

    def get(self, row: int, article_id: str, now_ts: float) -> StoredPage | None:
        """The page of `article_id` (at `row` of the version) if it is stored and still
        holds at `now_ts`."""
        with self._lock:
            try:
                found = self._conn.execute("SELECT id, digest, since, until, slots FROM pages "
                                           "WHERE pos = ?", (row,)).fetchone()
            except sqlite3.DatabaseError as exc:
                raise IndexCorrupt(f"cannot read {self.path}: {exc}") from exc
        if found is None or found[0] != article_id or not found[2] <= now_ts < found[3]:
            return None
        return StoredPage(bytes(found[4]), bytes(found[1]))

    def close(self) -> None:
        self._conn.close()


@dataclass
class PagesReport:
    computed: int = 0   # ranked for this version
    reused: int = 0     # copied from the previous version (inputs unchanged)
    left: int = 0       # not stored: they move with the clock, computed on request
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"computed": self.computed, "reused": self.reused, "left": self.left,
                "seconds": self.seconds}


def write_pages(index_root: Path, version_dir: Path, previous_dir: Path | None = None, *,
                now: datetime | None = None, config_file: Path | None = None) -> PagesReport:
    """Compute and store the page of every article of the (not yet published) version in
    `version_dir`, under the index's config and overrides, as of `now` (default:
    $RECOMMENDER_NOW, else the real time). Pages whose inputs did not change since
    `previous_dir`'s stored pages are copied, not ranked again."""
    from .config import Config, config_path, read_config
    from .recommender import Recommender, clock_from_environment, takes_nearby
    from .store import IndexDirectory, IndexVersion

    started = time.perf_counter()
    report = PagesReport()
    file, required = config_path(index_root, config_file)
    config = read_config(file, required) if file is not None else Config()
    version = IndexVersion(version_dir)
    at = now or clock_from_environment() or datetime.now(UTC)  # one moment for every page
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    rec = Recommender(IndexDirectory(index_root), version, config=config, reload_interval=-1,
                      now=at, page_memo=0)
    live = rec._current()
    now_ts = at.timestamp()
    overrides = rec.overrides()
    settings = settings_key(live.digest, rec._overrides.stamp())
    lapses: dict[str, float] = {}  # source -> when its first pin lapses after now
    for pin in overrides.pins:
        if pin.until is not None and pin.until > at:
            lapses[pin.source] = min(lapses.get(pin.source, math.inf), pin.until.timestamp())
    timestamp = version.columns.timestamp
    target = version_dir / PAGES_FILE
    conn = sqlite3.connect(target)
    try:
        conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA)
        digests: list[tuple[str, int, bytes]] = []
        inputs_of: dict[str, tuple[Any, ...]] = {}
        for article_id in version.ids:
            inputs = rec._page_inputs(article_id, None)
            source = inputs[1]
            anchor = live.ranker.anchor(source)
            if not (timestamp[source] <= now_ts and timestamp[anchor] <= now_ts):
                report.left += 1  # its reference date is now: it moves with the clock
                continue
            digests.append((article_id, source, inputs[-1]))
            inputs_of[article_id] = inputs
        reuse = previous_dir is not None and (previous_dir / PAGES_FILE).is_file()
        if reuse:
            assert previous_dir is not None
            conn.execute("ATTACH DATABASE ? AS old", (f"file:{previous_dir / PAGES_FILE}"
                                                       "?mode=ro&immutable=1",))
            old_settings = conn.execute("SELECT value FROM old.meta WHERE key = 'settings'"
                                        ).fetchone()
            reuse = old_settings is not None and old_settings[0] == settings
        if reuse:
            conn.execute("CREATE TEMP TABLE fresh (id TEXT PRIMARY KEY, pos INTEGER, "
                         "digest BLOB)")
            conn.executemany("INSERT INTO fresh VALUES (?, ?, ?)", digests)
            conn.execute("INSERT INTO pages SELECT f.pos, p.id, p.digest, p.since, p.until, "
                         "p.slots FROM old.pages p JOIN fresh f "
                         "ON f.id = p.id AND f.digest = p.digest")
            kept = {row[0] for row in conn.execute("SELECT id FROM pages")}
            report.reused = len(kept)
        else:
            kept = set()
        batch: list[tuple[int, str, bytes, float, float, bytes]] = []
        for article_id, source, digest in digests:
            if article_id in kept:
                continue
            inputs = inputs_of[article_id]
            page = rec._compute_page(inputs, None)
            if takes_nearby(page):  # read from the whole index by date: the clock moves it
                report.left += 1
                continue
            since, until = _validity(timestamp, inputs, now_ts)
            until = min(until, lapses.get(article_id, math.inf))
            batch.append((source, article_id, digest, since, until, slots_json(page)))
            report.computed += 1
            if len(batch) >= 1000:
                conn.executemany("INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?)", batch)
                batch.clear()
        conn.executemany("INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?)", batch)
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("settings", settings), ("count", str(report.computed + report.reused)),
            ("written_at", datetime.now(UTC).isoformat()), ("as_of", at.isoformat())])
        conn.commit()
    finally:
        conn.close()
        version.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _validity(timestamp: np.ndarray, inputs: tuple[Any, ...], now_ts: float
              ) -> tuple[float, float]:
    """(since, until): the clock values a page computed at `now_ts` holds for. It reads the
    clock only through which of its candidates and pins are dated after now (hidden) and
    through the source's own date (dated, not after now: checked by the caller), so it holds
    from the latest of their dates not after now to the earliest after it."""
    _, source, _, candidates, _, _, pinned, _, _ = inputs
    rows = np.concatenate([candidates.rows.astype(np.int64), np.array([source], np.int64),
                           *(np.asarray(r, dtype=np.int64) for r in pinned.values())])
    dates = timestamp[rows]
    dates = dates[~np.isnan(dates)]
    before, after = dates[dates <= now_ts], dates[dates > now_ts]
    return (float(before.max()) if before.size else -math.inf,
            float(after.min()) if after.size else math.inf)
