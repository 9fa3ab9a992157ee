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

import contextlib
import json
import math
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IndexCorrupt

if TYPE_CHECKING:
    from .ranking import Recommendation
    from .recommender import Recommender
    from .store import IndexVersion

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


def write_pages(index_root: Path, version_dir: Path, previous: IndexVersion | None = None, *,
                now: datetime | None = None, config_file: Path | None = None) -> PagesReport:
    """Compute and store the page of every article of the (not yet published) version in
    `version_dir`, under the index's config and overrides, as of `now` (default:
    $RECOMMENDER_NOW, else the real time). Pages whose inputs did not change since the
    `previous` version's stored pages are copied from it, not ranked again."""
    from .config import Config, config_path, read_config
    from .recommender import Recommender, clock_from_environment
    from .store import IndexDirectory, IndexVersion

    started = time.perf_counter()
    file, required = config_path(index_root, config_file)
    config = read_config(file, required) if file is not None else Config()
    version = IndexVersion(version_dir)
    at = now or clock_from_environment() or datetime.now(UTC)  # one moment for every page
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        writer = _Writer(Recommender(IndexDirectory(index_root), version, config=config,
                                     reload_interval=-1, now=at, page_memo=0), at)
        old = previous.path / PAGES_FILE if previous is not None else None
        old_settings = _settings_of(old) if old is not None and old.is_file() else None
        target = version_dir / PAGES_FILE
        if old is not None and old_settings == writer.settings and previous is not None \
                and _rows_kept(previous, version):
            report = writer.carry(target, old, previous)
        else:
            report = writer.rewrite(target, old if old_settings == writer.settings else None)
    finally:
        version.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _settings_of(path: Path) -> str | None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1",
                                                uri=True)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if row is None else str(row[0])


def _rows_kept(previous: IndexVersion, version: IndexVersion) -> bool:
    """Does every article of `previous` keep its row in `version` (an update that only
    added or changed articles), with candidate tables of one shape?"""
    old, new = previous.neighbour_table(), version.neighbour_table()
    return old is not None and new is not None and old[0].shape[1] == new[0].shape[1] \
        and len(version.ids) >= len(previous.ids) \
        and version.ids[:len(previous.ids)] == previous.ids


class _Writer:
    """The pages of one version, computed by a Recommender over it at one moment."""

    def __init__(self, rec: Recommender, at: datetime) -> None:
        self.rec, self.at = rec, at
        self.live = rec._current()
        self.version = self.live.version
        self.now_ts = at.timestamp()
        self.settings = settings_key(self.live.digest, rec._overrides.stamp())
        self.lapses: dict[str, float] = {}  # source -> when its first pin lapses after now
        self.pinned: set[str] = set()       # sources with pins
        for pin in rec.overrides().pins:
            self.pinned.add(pin.source)
            if pin.until is not None and pin.until > at:
                self.lapses[pin.source] = min(self.lapses.get(pin.source, math.inf),
                                              pin.until.timestamp())
        self.report = PagesReport()

    def digest(self, row: int) -> tuple[bytes, tuple[Any, ...]] | None:
        """(what the page of `row` depends on, its inputs); None for a page that moves with
        the clock itself (an undated or future-dated article, or its original)."""
        timestamp = self.version.columns.timestamp
        anchor = self.live.ranker.anchor(row)
        if not (timestamp[row] <= self.now_ts and timestamp[anchor] <= self.now_ts):
            return None
        inputs = self.rec._page_inputs(self.version.ids[row], None)
        return inputs[-1], inputs

    def page(self, row: int, digest: bytes, inputs: tuple[Any, ...]
             ) -> tuple[int, str, bytes, float, float, bytes] | None:
        """The stored row of a page, ranked now; None for a page that took links "nearby"
        in time (read from the whole index by date: the clock moves it)."""
        from .recommender import takes_nearby

        page = self.rec._compute_page(inputs, None)
        if takes_nearby(page):
            return None
        article_id = self.version.ids[row]
        since, until = _validity(self.version.columns.timestamp, inputs, self.now_ts)
        until = min(until, self.lapses.get(article_id, math.inf))
        return row, article_id, digest, since, until, slots_json(page)

    def rewrite(self, target: Path, old: Path | None) -> PagesReport:
        """Every page's digest; those equal to a page stored in `old` are copied, the rest
        ranked."""
        report = self.report
        conn = sqlite3.connect(target)
        try:
            conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA)
            digests: dict[int, tuple[bytes, tuple[Any, ...]]] = {}
            for row in range(len(self.version.ids)):
                found = self.digest(row)
                if found is None:
                    report.left += 1
                else:
                    digests[row] = found
            kept: set[int] = set()
            if old is not None:
                conn.execute("ATTACH DATABASE ? AS old", (f"file:{old}?mode=ro&immutable=1",))
                conn.execute("CREATE TEMP TABLE fresh (id TEXT PRIMARY KEY, pos INTEGER, "
                             "digest BLOB)")
                conn.executemany("INSERT INTO fresh VALUES (?, ?, ?)",
                                 ((self.version.ids[r], r, d) for r, (d, _) in digests.items()))
                conn.execute("INSERT INTO pages SELECT f.pos, p.id, p.digest, p.since, "
                             "p.until, p.slots FROM old.pages p JOIN fresh f "
                             "ON f.id = p.id AND f.digest = p.digest")
                kept = {r for (r,) in conn.execute("SELECT pos FROM pages")}
                report.reused = len(kept)
            self._insert(conn, ((r, d, i) for r, (d, i) in digests.items() if r not in kept))
            self._finish(conn)
        finally:
            conn.close()
        return report

    def carry(self, target: Path, old: Path, previous: IndexVersion) -> PagesReport:
        """An update that kept every row: the previous version's pages file copied, and only
        the pages whose inputs may have changed looked at again (their digest against the
        stored one): a changed record among the article, its original and its candidates,
        another candidate list, a date the clock crossed, a pin, a new article."""
        report = self.report
        shutil.copyfile(old, target)
        version = self.version
        m, n = len(previous.ids), len(version.ids)
        look = np.zeros(n, dtype=bool)
        look[m:] = True
        anchors = self._anchors(version)
        a = np.minimum(anchors[:m], m - 1)
        look[:m] |= anchors[:m] != self._anchors(previous)
        changed = version.columns.fingerprint[:m] != previous.columns.fingerprint
        look[:m] |= changed | changed[a]
        new_table, old_table = version.neighbour_table(), previous.neighbour_table()
        assert new_table is not None and old_table is not None
        for new_part, old_part in zip(new_table, old_table, strict=True):
            look[:m] |= (np.asarray(new_part)[a] != np.asarray(old_part)[a]).any(axis=1)
        moved = np.concatenate([np.flatnonzero(changed), np.arange(m, n)])
        look[:m] |= np.isin(np.asarray(new_table[0])[a], moved).any(axis=1)
        for article_id in self.pinned:
            row = version.position.get(article_id)
            if row is not None:
                look[row] = True
        conn = sqlite3.connect(target)
        try:
            conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
            # the pages missing or not holding at this clock; a scan in SQLite, not in Python
            holding = np.zeros(m, dtype=bool)
            holding[np.fromiter((pos for (pos,) in conn.execute(
                "SELECT pos FROM pages WHERE pos < ? AND since <= ? AND ? < until",
                (m, self.now_ts, self.now_ts))), dtype=np.int64)] = True
            look[:m] |= ~holding
            todo = []
            for row in np.flatnonzero(look).tolist():
                found = self.digest(row)
                kept = conn.execute("SELECT digest, since, until FROM pages WHERE pos = ?",
                                    (row,)).fetchone()
                if found is None:
                    if kept is not None:
                        conn.execute("DELETE FROM pages WHERE pos = ?", (row,))
                    continue
                if kept is not None and bytes(kept[0]) == found[0] and \
                        kept[1] <= self.now_ts < kept[2]:
                    continue
                todo.append((row, *found))
            self._insert(conn, todo, replace=True)
            report.reused = conn.execute("SELECT count(*) FROM pages").fetchone()[0] \
                - report.computed
            report.left = n - report.reused - report.computed
            conn.execute("DELETE FROM meta")
            self._finish(conn)
        finally:
            conn.close()
        return report

    def _anchors(self, version: IndexVersion) -> np.ndarray:
        rows = np.arange(len(version.ids))
        if self.live.ranker.config.cross_lingual:
            return rows
        original = np.asarray(version.columns.original, dtype=np.int64)
        return np.where(original >= 0, original, rows)

    def _insert(self, conn: sqlite3.Connection,
                todo: Iterable[tuple[int, bytes, tuple[Any, ...]]], replace: bool = False
                ) -> None:
        sql = f"INSERT {'OR REPLACE ' if replace else ''}INTO pages VALUES (?, ?, ?, ?, ?, ?)"
        batch = []
        for row, digest, inputs in todo:
            page = self.page(row, digest, inputs)
            if page is None:
                self.report.left += 1
                if replace:
                    conn.execute("DELETE FROM pages WHERE pos = ?", (row,))
                continue
            batch.append(page)
            self.report.computed += 1
            if len(batch) >= 1000:
                conn.executemany(sql, batch)
                batch.clear()
        conn.executemany(sql, batch)

    def _finish(self, conn: sqlite3.Connection) -> None:
        count = conn.execute("SELECT count(*) FROM pages").fetchone()[0]
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("settings", self.settings), ("count", str(count)),
            ("written_at", datetime.now(UTC).isoformat()), ("as_of", self.at.isoformat())])
        conn.commit()


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
