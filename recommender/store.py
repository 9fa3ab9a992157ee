"""The index on disk: immutable versions published by atomic rename, read without locks.

    indexes/<name>/
        CURRENT                  name of the live version (replaced atomically)
        .lock                    held (flock) by the one build/update allowed at a time
        versions/<version>/      one complete, immutable index:
            manifest.json        format, model, dimension, metric, counts, build time
            articles.sqlite      article metadata and content hashes (row `pos` = vector row)
            vectors.npy          float32 (n + headroom, d), unit rows, memory-mapped by
                                 readers and searched in place (`vector_index.ExactIndex`):
                                 stored once, shared by the versions an update writes
            vectors_patch*.npy   the rows that differ from vectors.npy (`read_vectors`)
            columns.npz/.json    per-article metadata as arrays, for filtering candidates
            lexical_*.npy        TF-IDF rows (CSR arrays, hashed terms) for the lexical score
            names_*.npy          TF-IDF rows over the names each article mentions
            lexical_idf.npz      the IDF weights both were weighed with (fitted by `build`)
            neighbour*.npy       the candidate table (`neighbours`), and its reserve and
                                 floors, which only the next update reads
        recommender.toml, overrides.json   (configuration and editorial overrides: they live
                                 outside versions so they survive rebuilds)

A writer builds a version under `versions/.tmp-*`, fsyncs it, renames it into place, then
replaces CURRENT. An update writes it as the previous version plus its changes: SQLite copied
and updated by rows, vectors.npy shared by a hard link with a patch of the new rows (no
version ever writes a file in place). A crash at any point leaves CURRENT naming a complete
version; leftovers are removed by the next writer. Readers keep the files of the version they
opened.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import threading
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .articles import Article, format_datetime, parse_datetime
from .errors import IndexCorrupt, IndexLocked, IndexNotFound, StorageError
from .files import copy_range, runs
from .lexical import NAMES, OLD_FILES, WORDS, has_lexical_files, read_lexical
from .neighbours import FLOOR_FILE, TABLE_FILES, Table, read_table
from .text import normalised_title
from .vector_index import ExactIndex

# 2: columns, lexical scores; 3: precomputed candidate table; 4: names; 5: hashed TF-IDF with
# its weights, and the table's reserve (files readers never open); 6: the vectors' headroom
# and patch; 7: the reserve in the table's own files, after each list's served entries
FORMAT_VERSION = 7
# A reader serves 4 to 6 as it did; an update of one writes a whole version, and the next
# ones are incremental.
READABLE_FORMATS = (4, 5, 6, 7)
KEEP_VERSIONS = 3  # the live one and two older ones, for readers still holding them
VECTORS_FILE = "vectors.npy"  # the base: float32 rows, and headroom for rows added later
PATCH_FILE, PATCH_ROWS_FILE = "vectors_patch.npy", "vectors_patch_rows.npy"
# rows a patch may hold before an update writes a new base: 2% of the rows, at least 1,024
PATCH_LIMIT, PATCH_MIN_ROWS = 0.02, 1024
# What a truncated or garbled .npy/.npz raises when it is read.
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)

CRASH_ENV = "RECOMMENDER_CRASH_AT"


def crash_point(name: str) -> None:
    """A named point of the write path. With $RECOMMENDER_CRASH_AT set to its name the process
    kills itself there with SIGKILL, as `kill -9` would: the crash tests use it to prove that a
    crash at each point leaves the previous version serving."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


_CAUSES = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system",
           errno.EACCES: "permission denied", errno.EPERM: "permission denied",
           errno.EDQUOT: "disk quota exceeded"}
_SQLITE_CAUSES = {13: "disk full", 8: "read-only database"}  # SQLITE_FULL, SQLITE_READONLY


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn a failed write (OSError, SQLite) into a one-line StorageError naming `what`."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise storage_error(exc, what) from exc


def storage_error(exc: BaseException, what: str) -> StorageError:
    """A one-line error for a failed write, naming what was written and the cause."""
    if isinstance(exc, OSError):
        cause = _CAUSES.get(exc.errno or 0) or exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        return StorageError(f"cannot write {what}: {cause}{where}")
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", None)
    known = _SQLITE_CAUSES.get(code) if isinstance(code, int) else None
    return StorageError(f"cannot write {what}: {known} (SQLite: {message})" if known else
                        f"cannot write {what}: {message}")


_SCHEMA = """
CREATE TABLE articles (
    pos INTEGER PRIMARY KEY,      -- row in vectors.npy
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    url TEXT,
    published_at TEXT,
    updated_at TEXT,
    section TEXT,
    tags TEXT NOT NULL,           -- JSON list
    language TEXT,
    status TEXT NOT NULL,
    paywalled INTEGER NOT NULL,
    story_id TEXT,
    metadata TEXT NOT NULL,       -- JSON object of fields this schema does not know
    content_hash TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Manifest:
    model: str
    dimension: int
    count: int
    built_at: str
    version: str
    format_version: int = FORMAT_VERSION
    metric: str = "inner_product"
    normalised: bool = True
    index_type: str = "flat"
    published_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def article_row(article: Article, pos: int, content_hash: str) -> tuple[Any, ...]:
    return (pos, article.id, article.title, article.body, article.url,
            format_datetime(article.published_at), format_datetime(article.updated_at),
            article.section,
            json.dumps(list(article.tags), ensure_ascii=False), article.language,
            article.status, int(article.paywalled), article.story_id,
            json.dumps(dict(article.metadata), ensure_ascii=False, default=str), content_hash)


ARTICLE_COLUMNS = ("pos, id, title, body, url, published_at, updated_at, section, tags, "
                   "language, status, paywalled, story_id, metadata, content_hash")


def article_from_row(row: Sequence[Any]) -> Article:
    return Article(
        id=row[1], title=row[2], body=row[3], url=row[4],
        published_at=parse_datetime(row[5], "published_at"),
        updated_at=parse_datetime(row[6], "updated_at"),
        section=row[7], tags=tuple(json.loads(row[8])), language=row[9], status=row[10],
        paywalled=bool(row[11]), story_id=row[12], metadata=json.loads(row[13]),
    )


# --------------------------------------------------------------------------- writing


class IndexDirectory:
    """Paths and the version pointer of one index directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def current_file(self) -> Path:
        return self.root / "CURRENT"

    def exists(self) -> bool:
        return self.current_file.is_file()

    def current_version(self) -> str:
        try:
            name = self.current_file.read_text().strip()
        except FileNotFoundError:
            if self.root.is_dir() and any(self.root.iterdir()):
                raise IndexNotFound(f"{self.root} holds no published index (no CURRENT file); "
                                    "run `recommender build`") from None
            raise IndexNotFound(f"no index at {self.root}: run `recommender build` first") from None
        if not name or not (self.versions / name).is_dir():
            raise IndexCorrupt(f"{self.current_file} names version {name!r}, which is missing")
        return name

    def current_path(self) -> Path:
        return self.versions / self.current_version()

    def pointer_stamp(self) -> tuple[int, int]:
        """Cheap change detector for readers: (inode, mtime_ns) of CURRENT."""
        st = os.stat(self.current_file)
        return st.st_ino, st.st_mtime_ns

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock. flock is released by the kernel if the process dies, so a
        killed build never leaves the index locked."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / ".lock", "a+")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise storage_error(exc, f"the index at {self.root}") from exc
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise IndexLocked(f"{self.root} is being built by {holder}; "
                                  "try again when it finishes") from None
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()}")
                handle.flush()
            except OSError as exc:
                raise storage_error(exc, f"the index at {self.root}") from exc
            self._clean_leftovers()
            try:
                yield
            finally:
                # A failed run's half-written version goes now (on a full disk it would keep
                # the disk full); one killed outright goes at the next run's start.
                self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        if not self.versions.is_dir():
            return
        for entry in self.versions.iterdir():
            if entry.name.startswith(".tmp-"):
                shutil.rmtree(entry, ignore_errors=True)
        tmp_pointer = self.root / "CURRENT.tmp"
        tmp_pointer.unlink(missing_ok=True)

    def new_version_dir(self) -> tuple[str, Path]:
        # Names sort in publishing order (pruning relies on it): writers hold the lock, so
        # two versions never share a microsecond.
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"v{stamp}-{uuid.uuid4().hex[:6]}"
        tmp = self.versions / f".tmp-{name}"
        tmp.mkdir(parents=True)
        crash_point("version-dir-created")
        return name, tmp

    def publish(self, name: str, tmp: Path) -> None:
        """Make a fully written version live: rename into place, then swap CURRENT. If it
        fails before CURRENT names the new version, the new version is removed."""
        for path in tmp.iterdir():
            _fsync_file(path)
        final = self.versions / name
        os.rename(tmp, final)
        crash_point("version-renamed")
        try:
            _fsync_dir(self.versions)
            self._point_to(name)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        crash_point("pointer-replaced")
        self._prune(keep=name)

    def _point_to(self, name: str) -> None:
        pointer = self.root / "CURRENT.tmp"
        try:
            with open(pointer, "w") as handle:
                handle.write(name + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            crash_point("pointer-written")
            os.replace(pointer, self.current_file)
        except BaseException:
            pointer.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)

    def published_versions(self) -> list[str]:
        """Names of the complete versions on disk, oldest first."""
        if not self.versions.is_dir():
            return []
        return sorted(p.name for p in self.versions.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def rollback(self, to: str | None = None) -> tuple[str, str]:
        """Make an earlier version live again: `to`, or the newest one older than the live
        one. Call with the writer lock held. Returns (previous live, now live)."""
        live = self.current_version()
        versions = self.published_versions()
        if to is None:
            older = [v for v in versions if v < live]
            if not older:
                raise IndexNotFound(f"{self.root}: no version older than {live} to roll back to "
                                    f"(on disk: {', '.join(versions)})")
            to = older[-1]
        elif to not in versions:
            raise IndexNotFound(f"{self.root}: no version {to!r} "
                                f"(on disk: {', '.join(versions)})")
        IndexVersion(self.versions / to).close()  # complete and readable, or IndexCorrupt
        try:
            self._point_to(to)
        except OSError as exc:
            raise storage_error(exc, f"the index at {self.root}") from exc
        return live, to

    def _prune(self, keep: str) -> None:
        versions = self.published_versions()
        old = [v for v in versions if v != keep][: max(0, len(versions) - KEEP_VERSIONS)]
        for name in old:
            shutil.rmtree(self.versions / name, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync_file(path)


def write_articles(path: Path, articles: Sequence[Article], hashes: Sequence[str]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_SCHEMA)
        conn.executemany(f"INSERT INTO articles ({ARTICLE_COLUMNS}) VALUES "
                         "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (article_row(a, i, h)
                          for i, (a, h) in enumerate(zip(articles, hashes, strict=True))))
        conn.commit()
    finally:
        conn.close()


def update_articles(path: Path, previous: Path, removed: Sequence[int],
                    upserts: Sequence[tuple[int, Article, str]], copied: bool = False) -> None:
    """articles.sqlite of a new version written as the previous one plus the changes: a copy
    of its file (copied: `path` is one already), the removed rows (previous positions)
    deleted, the rows after them moved up, then the (new position, article, content hash)
    rows written."""
    if not copied:
        shutil.copyfile(previous, path)
    conn = sqlite3.connect(path)
    try:
        # a half-written version is discarded whole, so the copy needs no journal
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        if removed:
            gone = sorted(set(int(p) for p in removed))
            conn.executemany("DELETE FROM articles WHERE pos = ?", [(p,) for p in gone])
            # in ascending order every row moves into a place already free
            moves = conn.execute("SELECT pos FROM articles WHERE pos > ? ORDER BY pos",
                                 (gone[0],)).fetchall()
            shift = np.searchsorted(np.array(gone), [m[0] for m in moves])
            conn.executemany("UPDATE articles SET pos = ? WHERE pos = ?",
                             [(m[0] - int(k), m[0]) for m, k in zip(moves, shift, strict=True)])
        conn.executemany(f"INSERT OR REPLACE INTO articles ({ARTICLE_COLUMNS}) VALUES "
                         "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (article_row(a, pos, h) for pos, a, h in upserts))
        conn.commit()
    finally:
        conn.close()


def link_or_copy(source: Path, target: Path) -> None:
    """A file unchanged since the previous version, shared with it by a hard link (copied
    where links are not possible). Versions never write a file in place, so sharing is safe."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def headroom(count: int) -> int:
    """Rows a new vectors file keeps free past `count`, for the articles later updates add
    (zeros in a sparse file: no disk until written)."""
    return max(count // 8, 1024)


def write_vectors(directory: Path, vectors: np.ndarray) -> None:
    """A new base vectors file: the rows, then `headroom` rows of zeros (a hole in the file)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    with open(directory / VECTORS_FILE, "wb") as out:
        np.lib.format.write_array_header_1_0(out, {
            "descr": np.lib.format.dtype_to_descr(vectors.dtype), "fortran_order": False,
            "shape": (count + headroom(count), dim)})
        vectors.tofile(out)
        out.truncate(out.tell() + headroom(count) * dim * 4)


def read_vectors(directory: Path, count: int, dim: int) -> np.ndarray:
    """The version's vectors, (count, dim) float32, read-only: the base file memory-mapped,
    with the rows of its patch (if any) laid over it. The patched rows are private to this
    process (copy-on-write pages); every other row is the shared page cache of the base."""
    patched = (directory / PATCH_ROWS_FILE).is_file()
    path = directory / VECTORS_FILE
    try:
        base = np.load(path, mmap_mode="c" if patched else "r", allow_pickle=False)
    except READ_ERRORS as exc:
        raise IndexCorrupt(f"cannot read {path}: {exc}") from exc
    if base.ndim != 2 or base.dtype != np.float32 or base.shape[0] < count \
            or base.shape[1] != dim:
        raise IndexCorrupt(f"{path} has shape {base.shape}, manifest says ({count}, {dim})")
    vectors = np.asarray(base[:count])
    if patched:
        rows, values = read_patch(directory)
        if values.shape != (len(rows), dim) or (len(rows) and (
                rows[0] < 0 or rows[-1] >= count or (np.diff(rows) <= 0).any())):
            raise IndexCorrupt(f"the vector patch of {directory} does not fit its "
                               f"{count} rows")
        vectors[rows] = values
    vectors.flags.writeable = False
    return vectors


def read_patch_rows(directory: Path) -> np.ndarray:
    """The rows a version's vector patch replaces (sorted; none without a patch)."""
    if not (directory / PATCH_ROWS_FILE).is_file():
        return np.zeros(0, dtype=np.int64)
    return np.asarray(np.load(directory / PATCH_ROWS_FILE, allow_pickle=False), dtype=np.int64)


def read_patch(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rows, vectors) a version lays over its base vectors file; none without a patch."""
    if not (directory / PATCH_ROWS_FILE).is_file():
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    try:
        rows = np.load(directory / PATCH_ROWS_FILE, allow_pickle=False)
        values = np.load(directory / PATCH_FILE, allow_pickle=False)
    except READ_ERRORS as exc:
        raise IndexCorrupt(f"cannot read the vector patch of {directory}: {exc}") from exc
    return np.asarray(rows, dtype=np.int64), np.asarray(values, dtype=np.float32)


def update_vectors(target: Path, source: Path, carried: np.ndarray, count: int,
                   fresh_rows: np.ndarray, fresh: np.ndarray | None) -> None:
    """The vectors of the next version (directory `target`) from those of the previous one
    (`source`): row i is row carried[i] of the previous version (-1: not carried) or, for the
    rows in fresh_rows, the new vector.

    While no row is removed, the new rows fit in the base file's headroom and the rows that
    differ from the base stay within the patch limit, the base file is shared with
    the previous version by a hard link and only a patch is written: the previous patch with
    the new vectors merged in. Otherwise a new base is written: the carried rows copied by
    the kernel in runs of consecutive rows (copy_file_range: no pass through this process),
    then the previous patch's rows and the new ones."""
    carried = np.asarray(carried, dtype=np.int64)
    fresh_rows = np.asarray(fresh_rows, dtype=np.int64)
    old_rows, old_values = read_patch(source)
    old_count = int(np.count_nonzero(carried >= 0)) if len(carried) else 0
    identity = np.array_equal(carried[:old_count], np.arange(old_count)) \
        and not (carried[old_count:] >= 0).any()
    if fresh is None or not len(fresh_rows):
        fresh_rows, fresh = np.zeros(0, dtype=np.int64), None
    if identity:
        kept = old_rows < old_count  # (rows past the carried ones were removed)
        old_rows, old_values = old_rows[kept], old_values[kept]
        rows = np.union1d(old_rows, fresh_rows)
        capacity, dim = np.load(source / VECTORS_FILE, mmap_mode="r", allow_pickle=False).shape
        if len(rows) <= max(PATCH_LIMIT * count, PATCH_MIN_ROWS) and count <= capacity:
            link_or_copy(source / VECTORS_FILE, target / VECTORS_FILE)
            if not len(rows):
                return
            values = np.empty((len(rows), dim), dtype=np.float32)
            if len(old_rows):
                values[np.searchsorted(rows, old_rows)] = old_values
            if fresh is not None:
                values[np.searchsorted(rows, fresh_rows)] = fresh
            np.save(target / PATCH_FILE, values)
            np.save(target / PATCH_ROWS_FILE, rows)
            return
    _rewrite_vectors(target, source, carried, count, old_rows, old_values, fresh_rows, fresh)


def _rewrite_vectors(target: Path, source: Path, carried: np.ndarray, count: int,
                     old_rows: np.ndarray, old_values: np.ndarray, fresh_rows: np.ndarray,
                     fresh: np.ndarray | None) -> None:
    out = carry_rows(source / VECTORS_FILE, target / VECTORS_FILE, carried, np.float32,
                     spare=headroom(count))
    new_rows = np.flatnonzero(carried >= 0)
    mapping = np.full(max(int(carried.max(initial=-1)), int(old_rows.max(initial=-1))) + 1, -1,
                      dtype=np.int64)
    mapping[carried[new_rows]] = new_rows
    patched = mapping[old_rows] if len(old_rows) else old_rows
    if len(old_rows):  # the previous version's patched rows, where they were carried
        out[patched[patched >= 0]] = old_values[patched >= 0]
    if fresh is not None and len(fresh_rows):
        out[fresh_rows] = fresh
    out.flush()
    del out


def carry_rows(source: Path, target: Path, carried: np.ndarray, dtype: Any, spare: int = 0
               ) -> np.memmap:
    """A new .npy file `target` whose row i is row carried[i] of the .npy file `source`
    (carried[i] -1: a row of zeros), followed by `spare` rows of zeros (a hole in the file):
    the kernel copies runs of consecutive rows (copy_file_range), nothing passes through this
    process. Returns the new file memory-mapped for writing, every row of it."""
    try:
        previous = np.load(source, mmap_mode="r", allow_pickle=False)
    except READ_ERRORS as exc:
        raise IndexCorrupt(f"cannot read {source}: {exc}") from exc
    if previous.dtype != np.dtype(dtype) or not previous.flags.c_contiguous \
            or previous.ndim != 2:
        raise IndexCorrupt(f"{source} does not hold rows of {np.dtype(dtype)}")
    source_offset, width = previous.offset, previous.shape[1]
    del previous
    row_bytes = width * np.dtype(dtype).itemsize
    out = np.lib.format.open_memmap(target, mode="w+", dtype=dtype,
                                    shape=(len(carried) + spare, width))
    new_rows = np.flatnonzero(carried >= 0)
    with open(source, "rb") as src, open(target, "r+b") as dst:
        for read_row, write_row, rows in zip(*(part.tolist() for part in runs(
                carried[new_rows], new_rows)), strict=True):
            copy_range(src.fileno(), dst.fileno(), rows * row_bytes,
                       source_offset + read_row * row_bytes, out.offset + write_row * row_bytes,
                       target)
    return out


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")


# --------------------------------------------------------------------------- columns


@dataclass
class Columns:
    """Per-article metadata as arrays (row = vector row), for filtering candidates without a
    database round trip. Codes index the string tables; -1 means "none"."""

    published: np.ndarray          # bool
    timestamp: np.ndarray          # float64 epoch seconds of published_at, NaN if undated
    language: np.ndarray           # int32 codes into languages
    section: np.ndarray            # int32 codes into sections
    story: np.ndarray              # int32 codes into stories (the given story_id)
    paywalled: np.ndarray          # bool
    title_key: np.ndarray          # int64 hash of the normalised title
    body_key: np.ndarray           # int64 hash of the normalised body (0 if empty)
    original: np.ndarray           # int64 row of the article this one translates, or -1
    tag_indptr: np.ndarray         # int64, CSR-style: tags of row i are
    tag_codes: np.ndarray          # tag_codes[tag_indptr[i]:tag_indptr[i+1]]
    fingerprint: np.ndarray        # int64 hash of the article's whole record (record_key)
    languages: list[str]
    sections: list[str]
    stories: list[str]
    tags: list[str]

    ARRAYS = ("published", "timestamp", "language", "section", "story", "paywalled",
              "title_key", "body_key", "original", "tag_indptr", "tag_codes", "fingerprint")
    TABLES = ("languages", "sections", "stories", "tags")

    def tags_of(self, row: int) -> np.ndarray:
        codes: np.ndarray = self.tag_codes[self.tag_indptr[row]:self.tag_indptr[row + 1]]
        return codes


def build_columns(articles: Sequence[Article]) -> Columns:
    tables: dict[str, dict[str, int]] = {name: {} for name in Columns.TABLES}

    def code(table: str, value: str | None) -> int:
        if value is None:
            return -1
        return tables[table].setdefault(value, len(tables[table]))

    rows = {a.id: i for i, a in enumerate(articles)}
    indptr = [0]
    tag_codes: list[int] = []
    for article in articles:
        tag_codes.extend(sorted({code("tags", t.casefold()) for t in article.tags}))
        indptr.append(len(tag_codes))
    return Columns(
        published=np.array([a.is_published for a in articles], dtype=bool),
        timestamp=np.array([a.published_at.timestamp() if a.published_at else np.nan
                            for a in articles], dtype=np.float64),
        language=np.array([code("languages", a.language.casefold() if a.language else None)
                           for a in articles], dtype=np.int32),
        section=np.array([code("sections", a.section.casefold() if a.section else None)
                          for a in articles], dtype=np.int32),
        story=np.array([code("stories", a.story_id) for a in articles], dtype=np.int32),
        paywalled=np.array([a.paywalled for a in articles], dtype=bool),
        title_key=np.array([_text_key(normalised_title(a.title)) for a in articles],
                           dtype=np.int64),
        body_key=np.array([_text_key(" ".join(a.body.casefold().split())) for a in articles],
                          dtype=np.int64),
        original=np.array([rows.get(str(a.metadata.get("translation_of")), -1)
                           for a in articles], dtype=np.int64),
        tag_indptr=np.array(indptr, dtype=np.int64),
        tag_codes=np.array(tag_codes, dtype=np.int32),
        fingerprint=np.array([record_key(a) for a in articles], dtype=np.int64),
        **{name: list(tables[name]) for name in Columns.TABLES},
    )


def update_columns(old: Columns, carried: np.ndarray, fresh: Sequence[Article],
                   fresh_rows: np.ndarray, ids: Sequence[str],
                   translations: dict[int, str] | None = None) -> Columns:
    """The columns of a new version from the previous one's: row i carries row carried[i] of
    `old` (-1: not carried), and the articles `fresh` land at `fresh_rows`. ids: every row's
    article id; translations: carried rows whose `translation_of` may name an article that
    was not there before (new position -> that id). Equal to `build_columns` of the whole
    list up to the numbering of the codes."""
    count = len(ids)
    new = build_columns(fresh)
    fresh_rows = np.asarray(fresh_rows, dtype=np.int64)
    keep = np.flatnonzero(carried >= 0)
    source = carried[keep]
    data: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    # string tables: the previous codes, then the new values; unused ones are dropped below
    remaps: dict[str, np.ndarray] = {}
    for column, table in (("language", "languages"), ("section", "sections"),
                          ("story", "stories"), ("tags", "tags")):
        values = list(getattr(old, table))
        known = {v: i for i, v in enumerate(values)}
        for value in getattr(new, table):
            known.setdefault(value, len(known))
        tables[table] = list(known)
        remaps[column] = np.array([known[v] for v in getattr(new, table)], dtype=np.int32)
    for name in ("published", "timestamp", "language", "section", "story", "paywalled",
                 "title_key", "body_key", "fingerprint"):
        old_values = getattr(old, name)
        out = np.zeros(count, dtype=old_values.dtype)
        out[keep] = old_values[source]
        values = getattr(new, name)
        if name in remaps:
            values = np.append(remaps[name], -1)[values]  # -1 (none) stays -1
        out[fresh_rows] = values
        data[name] = out
    # original: a carried row's original moves with it (or is gone); a fresh row's is looked
    # up by id, and so is a carried row's whose original was not in the previous version
    old_to_new = np.full(len(old.published), -1, dtype=np.int64)
    old_to_new[source] = keep
    original = np.full(count, -1, dtype=np.int64)
    pointed = old.original[source]
    original[keep] = np.where(pointed >= 0, old_to_new[np.clip(pointed, 0, None)], -1)
    original[fresh_rows] = -1  # a fresh row's original is the one its metadata names
    linked = [(row, str(a.metadata["translation_of"])) for row, a in
              zip(fresh_rows.tolist(), fresh, strict=True) if "translation_of" in a.metadata]
    if linked or translations:  # (most updates have none: no id lookup over every row)
        position = dict(zip(ids, range(count), strict=True))
        for row, target in [*linked, *(translations or {}).items()]:
            original[row] = position.get(target, original[row])
    data["original"] = original
    # tags: each row's run of codes, carried or fresh, in row order
    lengths = np.zeros(count, dtype=np.int64)
    lengths[keep] = np.diff(old.tag_indptr)[source]
    lengths[fresh_rows] = np.diff(new.tag_indptr)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    codes = np.zeros(int(indptr[-1]), dtype=np.int32)
    starts = np.zeros(count, dtype=np.int64)
    starts[keep] = old.tag_indptr[source]
    pool = old.tag_codes
    fresh_codes = remaps["tags"][new.tag_codes] if len(new.tag_codes) else \
        np.zeros(0, dtype=np.int32)
    offset = len(pool)
    starts[fresh_rows] = offset + new.tag_indptr[:-1]
    everything = np.concatenate([pool, fresh_codes]).astype(np.int32)
    if len(codes):
        within = np.arange(len(codes)) - np.repeat(indptr[:-1], lengths)
        codes = everything[np.repeat(starts, lengths) + within]
    data["tag_indptr"], data["tag_codes"] = indptr, codes
    # drop the values no row uses any more, as a build of the whole list would
    for column, table in (("language", "languages"), ("section", "sections"),
                          ("story", "stories"), ("tags", "tags")):
        used_codes = data["tag_codes"] if column == "tags" else data[column]
        used = np.unique(used_codes[used_codes >= 0])
        renumbered = np.full(len(tables[table]) + 1, -1, dtype=np.int32)
        renumbered[used] = np.arange(len(used), dtype=np.int32)
        target = "tag_codes" if column == "tags" else column
        values = data[target]
        data[target] = np.where(values >= 0, renumbered[values], -1).astype(np.int32)
        tables[table] = [tables[table][i] for i in used.tolist()]
    return Columns(**data, **tables)


def record_key(article: Article) -> int:
    """64-bit hash of everything stored of an article (its SQLite row but the row number):
    equal keys in two versions mean the same article, text, dates, status and metadata,
    hence the same vector and the same part in any page. What a kept page depends on
    (`Recommender.page`)."""
    digest = hashlib.blake2b(repr(article_row(article, 0, "")).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _text_key(text: str) -> int:
    """64-bit hash of a text; 0 stands for "no text" and never matches."""
    if not text:
        return 0
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def write_columns(directory: Path, columns: Columns) -> None:
    np.savez(directory / "columns.npz", **{k: getattr(columns, k) for k in Columns.ARRAYS})
    (directory / "columns.json").write_text(json.dumps(
        {k: getattr(columns, k) for k in Columns.TABLES}, ensure_ascii=False))


def read_columns(directory: Path) -> Columns:
    try:
        with np.load(directory / "columns.npz", allow_pickle=False) as arrays:
            data: dict[str, Any] = {k: arrays[k] for k in Columns.ARRAYS if k in arrays}
            if "fingerprint" not in data:  # written before fingerprints: one per version,
                # so nothing kept is taken for another version's
                stamp = os.stat(directory / "columns.npz")
                key = hash((str(directory.resolve()), stamp.st_ino, stamp.st_mtime_ns))
                data["fingerprint"] = np.full(len(arrays["published"]), key, dtype=np.int64)
        data.update(json.loads((directory / "columns.json").read_text()))
    except READ_ERRORS as exc:
        raise IndexCorrupt(f"cannot read the columns of {directory}: {exc}") from exc
    return Columns(**data)


# --------------------------------------------------------------------------- reading


# A version whose vectors and table files together are up to this size is read through
# their memory maps (all of them resident cost no more than this); a larger one a row at a
# time with pread (see RowFile).
MAP_LIMIT = 512 << 20
# RowFile.prefetch asks for this much at a time (one call per file reads ahead only the
# kernel's readahead window, a few MB).
PREFETCH_CHUNK = 8 << 20


class RowFile:
    """Rows of a 2-d .npy file as a server reads them, a few random rows a page: with pread,
    nothing of the file mapped into the process (a memory map costs resident memory far
    beyond the rows touched: the kernel maps the whole page-cache folio around each row, up
    to 2 MB, and a build's files sit in the cache in large folios), or, given `mapped` (the
    file's memory map, for a small index: see MAP_LIMIT), through that, which is faster. The
    file stays open, so the rows can still be read after a newer build pruned the version."""

    def __init__(self, path: Path, dtype: Any, count: int, columns: int | None = None,
                 mapped: np.ndarray | None = None) -> None:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
        if header.ndim != 2 or header.dtype != np.dtype(dtype) or header.shape[0] < count \
                or not header.flags.c_contiguous:
            raise ValueError(f"{path} holds {header.dtype} of shape {header.shape}, not "
                             f"{count} rows of {np.dtype(dtype)}")
        self.path, self.dtype = path, np.dtype(dtype)
        self.columns = header.shape[1] if columns is None else min(columns, header.shape[1])
        self._offset, self._row_bytes = header.offset, header.shape[1] * self.dtype.itemsize
        self._read_bytes = self.columns * self.dtype.itemsize
        del header
        self.mapped = mapped
        # a file object, not a bare descriptor: closed with the version, or when collected
        self._file = open(path, "rb", buffering=0) if mapped is None else None  # noqa: SIM115
        self._fd = self._file.fileno() if self._file is not None else -1

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), columns) for these rows (int64), read-only."""
        if self.mapped is not None:
            out: np.ndarray = self.mapped[rows]
            return out
        pread, fd, size = os.pread, self._fd, self._read_bytes
        data = b"".join([pread(fd, size, at) for at in
                         (self._offset + rows * self._row_bytes).tolist()])
        if len(data) != len(rows) * size:
            raise IndexCorrupt(f"{self.path} is shorter than its header says")
        return np.frombuffer(data, dtype=self.dtype).reshape(len(rows), self.columns)

    def row(self, row: int) -> np.ndarray:
        """One row (columns,), read-only."""
        if self.mapped is not None:
            out: np.ndarray = self.mapped[row]
            return out
        data = os.pread(self._fd, self._read_bytes, self._offset + row * self._row_bytes)
        if len(data) != self._read_bytes:
            raise IndexCorrupt(f"{self.path} is shorter than its header says")
        return np.frombuffer(data, dtype=self.dtype)

    def prefetch(self) -> int:
        """Ask the kernel to read the file's rows into the page cache ahead of the pages
        that read them (posix_fadvise WILLNEED, in chunks: one call for a whole file reads
        ahead only a few MB). Nothing is mapped or copied into the process. Returns the
        bytes asked for (0 where the platform has no posix_fadvise)."""
        advise = getattr(os, "posix_fadvise", None)
        if advise is None:
            return 0
        # the file a pread reader holds (still there after a newer build pruned the
        # version), else the path (a reader through the memory map)
        with contextlib.nullcontext(self._file) if self._file is not None else \
                open(self.path, "rb", buffering=0) as handle:
            offset = int(self._offset)
            size = os.fstat(handle.fileno()).st_size - offset
            for start in range(offset, offset + size, PREFETCH_CHUNK):
                advise(handle.fileno(), start, PREFETCH_CHUNK, os.POSIX_FADV_WILLNEED)
        return max(size, 0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class IndexVersion:
    """One published version, opened read-only. Cheap: vectors are memory-mapped (and searched
    in place when a live search is needed), and SQLite is opened immutable (no locking)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest = read_manifest(path)
        self.vectors = read_vectors(path, self.manifest.count, self.manifest.dimension)
        db = path / "articles.sqlite"
        if not db.is_file():
            raise IndexCorrupt(f"missing {db}")
        try:
            self._conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True,
                                         check_same_thread=False)
            ids = self._conn.execute("SELECT id FROM articles ORDER BY pos").fetchall()
        except sqlite3.DatabaseError as exc:
            raise IndexCorrupt(f"cannot read {db}: {exc}") from exc
        self._db_lock = threading.Lock()
        self.ids: list[str] = [row[0] for row in ids]
        if len(self.ids) != self.manifest.count:
            raise IndexCorrupt(f"{db} holds {len(self.ids)} articles, manifest says "
                               f"{self.manifest.count}")
        self.position: dict[str, int] = dict(zip(self.ids, range(len(self.ids)), strict=True))
        self.columns = read_columns(path)
        if len(self.columns.published) != self.manifest.count:
            raise IndexCorrupt(f"the columns of {path} do not match its manifest")
        # The TF-IDF rows, memory-mapped now (a mapping outlives the pruning of this
        # version); a version from before format 7 keeps them in .npz files, held open so that
        # their lazy load still works after pruning.
        self._sparse: dict[str, Any] = {}
        self._sparse_files: dict[str, Any] = {}
        try:
            if has_lexical_files(path):
                self._sparse = {name: read_lexical(path, name) for name in (WORDS, NAMES)}
            else:
                self._sparse_files = {name: open(path / OLD_FILES[name], "rb")  # noqa: SIM115
                                      for name in (WORDS, NAMES)}
        except READ_ERRORS as exc:
            raise IndexCorrupt(f"cannot read the TF-IDF rows of {path}: {exc}") from exc
        for matrix in self._sparse.values():
            if matrix.shape[0] != self.manifest.count:
                raise IndexCorrupt(f"the TF-IDF rows of {path} do not match its manifest")
        # Live search runs over the memory-mapped vectors themselves: no second copy.
        self._search_index = ExactIndex(self.vectors, method="faiss")
        try:  # memory-mapped now: the mapping outlives the pruning of this version
            table = read_table(path)
            # Plain arrays over the same memory maps: slicing a np.memmap costs a subclass
            # round trip on every lookup.
            self._table = None if table is None else \
                (np.asarray(table[0]), np.asarray(table[1]), np.asarray(table[2]),
                 np.asarray(table[3]))
        except READ_ERRORS as exc:
            raise IndexCorrupt(f"cannot read the neighbour table of {path}: {exc}") from exc
        if self._table is not None and self._table[0].shape[0] != self.manifest.count:
            raise IndexCorrupt(f"the neighbour table of {path} does not match its manifest")
        # What a page reads: a few random rows of the vectors and of the table, with pread.
        count, served = self.manifest.count, None if table is None else table[2].shape[1]
        try:
            small = sum((path / name).stat().st_size for name in (VECTORS_FILE, *(
                TABLE_FILES if self._table is not None else ()))) <= MAP_LIMIT
            self._vector_rows = RowFile(path / VECTORS_FILE, np.float32, count,
                                        mapped=self.vectors if small else None)
            self._patched = read_patch_rows(path)
            self._table_rows = None if self._table is None else tuple(
                RowFile(path / name, dtype, count, served, mapped=part if small else None)
                for name, dtype, part in zip(
                    TABLE_FILES, (np.int32, np.float32, np.float32, np.float32), self._table,
                    strict=True))
            # each list's floor (every candidate left out of the list scores below it), for
            # a list shorter than the served width; before format 5 none was kept
            self._floor = np.load(path / FLOOR_FILE, mmap_mode="r", allow_pickle=False) \
                if self._table is not None and (path / FLOOR_FILE).is_file() else None
        except READ_ERRORS as exc:
            raise IndexCorrupt(f"cannot read {path}: {exc}") from exc
        self._load_lock = threading.Lock()
        self._summaries: dict[int, tuple[Any, ...]] = {}

    def close(self) -> None:
        self._conn.close()
        for handle in self._sparse_files.values():
            handle.close()
        for rows in (self._vector_rows, *(self._table_rows or ())):
            rows.close()

    def vectors_at(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The vectors of these rows, (len(rows), dim) float32, read from the files (see
        RowFile); `vectors` holds the same values."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = self._vector_rows.read(rows)
        if len(self._patched) and self._vector_rows.mapped is None:
            at = np.searchsorted(self._patched, rows)
            hit = self._patched[np.minimum(at, len(self._patched) - 1)] == rows
            if hit.any():  # (the patch's rows: private pages of `vectors`, resident anyway)
                out = out.copy()
                out[hit] = self.vectors[rows[hit]]
        return out

    def prefetch(self) -> int:
        """Bring the files every page reads at random (the vectors and the candidate table)
        into the page cache ahead of the pages (RowFile.prefetch): after a reboot, or a
        build whose memory pushed them out, a page of a large index would otherwise wait on
        the disk for each row (at 1M articles here, p50 2.14 ms right after a build
        against 0.53 ms warm).
        Returns the bytes asked for."""
        return sum(rows.prefetch() for rows in (self._vector_rows, *(self._table_rows or ())))

    def table_row(self, row: int) -> Table | None:
        """One article's precomputed candidates, as `neighbour_table()[i][row]` for each part,
        read from the files (see RowFile); None without a table."""
        if self._table_rows is None:
            return None
        rows, scores, lexical, names = (part.row(row) for part in self._table_rows)
        return rows, scores, lexical, names

    def lists_at(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The served candidate lists of these rows (int64), read from the table files:
        (candidate rows (len(rows), n) int32, -1 past a list's end; their cosines; bound),
        where bound[i] is a cosine that no candidate left out of row i's list exceeds (its
        last score when the list is full, else its floor; +inf where the index cannot tell).
        None without a table."""
        if self._table_rows is None:
            return None
        listed, scores = self._table_rows[0].read(rows), self._table_rows[1].read(rows)
        if not listed.shape[1]:
            return listed, scores, np.full(len(rows), np.inf, dtype=np.float32)
        full = listed[:, -1] >= 0
        if full.all():
            return listed, scores, scores[:, -1]
        floor = np.asarray(self._floor[rows], dtype=np.float32) if self._floor is not None \
            else np.full(len(rows), np.inf, dtype=np.float32)
        return listed, scores, np.where(full, scores[:, -1], floor)

    def neighbour_table(self) -> Table | None:
        """The precomputed candidates (rows, cosines, TF-IDF cosines of words and names),
        memory-mapped."""
        return self._table

    def lexical(self) -> Any:
        """The word TF-IDF matrix (scipy CSR), memory-mapped (format 7) or loaded on first
        use."""
        return self._load_sparse(WORDS)

    def names(self) -> Any:
        """The names TF-IDF matrix (scipy CSR), as `lexical`."""
        return self._load_sparse(NAMES)

    def _load_sparse(self, name: str) -> Any:
        with self._load_lock:
            if name not in self._sparse:
                import scipy.sparse as sp

                handle = self._sparse_files[name]
                handle.seek(0)
                try:
                    self._sparse[name] = sp.csr_matrix(sp.load_npz(handle))
                except READ_ERRORS as exc:
                    raise IndexCorrupt(f"cannot read {self.path / OLD_FILES[name]}: {exc}"
                                       ) from exc
            return self._sparse[name]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._db_lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise IndexCorrupt(f"cannot read {self.path / 'articles.sqlite'}: {exc}") from exc

    def _rows_at(self, columns: str, positions: Iterable[int]) -> list[Any]:
        """`columns` (pos first) of the articles at these rows."""
        wanted = [int(p) for p in positions]
        if not wanted:
            return []
        return self.query(f"SELECT {columns} FROM articles WHERE pos IN "
                          f"({','.join('?' * len(wanted))})", wanted)

    def articles_at(self, positions: Iterable[int]) -> dict[int, Article]:
        return {row[0]: article_from_row(row)
                for row in self._rows_at(ARTICLE_COLUMNS, positions)}

    SUMMARY_CACHE = 65_536  # rows kept per version: a site's popular links repeat

    def summaries_at(self, positions: Iterable[int]) -> dict[int, tuple[Any, ...]]:
        """(id, title, url, published_at, section, status) per row: what a result shows,
        without decoding whole articles (the serving path). A version never changes, so the
        rows read are kept (up to SUMMARY_CACHE) and a link shown on many pages is read once."""
        wanted = [int(p) for p in positions]
        cache = self._summaries
        out = {p: cache[p] for p in wanted if p in cache}
        missing = [p for p in wanted if p not in out]
        if missing:
            for row in self._rows_at("pos, id, title, url, published_at, section, status",
                                     missing):
                out[row[0]] = row[1:]
                if len(cache) < self.SUMMARY_CACHE:
                    cache[row[0]] = row[1:]
        return out

    def content_hashes(self) -> dict[str, tuple[int, str]]:
        """id -> (row, content hash), for reusing vectors in the next build."""
        return {row[0]: (row[1], row[2])
                for row in self.query("SELECT id, pos, content_hash FROM articles")}

    def articles_by_id(self, ids: Iterable[str]) -> dict[str, tuple[Article, str]]:
        """(article, content hash) of each of these ids the version holds."""
        wanted = list(dict.fromkeys(ids))
        out: dict[str, tuple[Article, str]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            for row in self.query(f"SELECT {ARTICLE_COLUMNS} FROM articles WHERE id IN "
                                  f"({','.join('?' * len(chunk))})", chunk):
                out[row[1]] = (article_from_row(row), row[-1])
        return out

    def translations(self) -> dict[int, str]:
        """Row -> the id its `translation_of` names, for the articles that have one."""
        out = {}
        for pos, metadata in self.query("SELECT pos, metadata FROM articles "
                                        "WHERE metadata LIKE '%translation_of%'"):
            target = json.loads(metadata).get("translation_of")
            if target is not None:
                out[int(pos)] = str(target)
        return out

    def all_articles(self) -> list[Article]:
        return [article_from_row(r) for r in
                self.query(f"SELECT {ARTICLE_COLUMNS} FROM articles ORDER BY pos")]

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product top-k for one or more unit query vectors: (scores, rows)."""
        query = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
        k = min(k, self.manifest.count)
        if k <= 0:
            return (np.zeros((len(query), 0), dtype=np.float32),
                    np.zeros((len(query), 0), dtype=np.int64))
        return self._search_index.search(query, k)


def read_manifest(path: Path) -> Manifest:
    file = path / "manifest.json"
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise IndexCorrupt(f"missing {file}") from None
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read {file}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format_version") not in READABLE_FORMATS:
        raise IndexCorrupt(f"{file}: unsupported index format "
                           f"{data.get('format_version') if isinstance(data, dict) else data!r} "
                           f"(this version reads {FORMAT_VERSION}); rebuild the index")
    try:
        return Manifest.from_dict(data)
    except TypeError as exc:
        raise IndexCorrupt(f"{file}: {exc}") from exc


def now_iso() -> str:
    return format_datetime(datetime.now(UTC).replace(microsecond=0)) or ""

