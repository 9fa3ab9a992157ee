"""Build and update: read articles, embed what changed, publish a new index version.

Both commands write a complete new version and switch to it atomically (see `store`); an
unchanged article reuses its stored vector (same content hash, same model). An update writes
its version as the previous one plus what changed (`_update_in_place`), so it costs what
changed; a build refits the TF-IDF weights and writes everything.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .articles import Article, LoadReport, Problem, read_articles
from .embedding import Embedder, ProgressCallback, load_embedder
from .engines import BuildEngine, LocalEngine
from .errors import IndexCorrupt, IndexNotFound, InvalidInput, ModelMismatch, RemovalRefused
from .lexical import (
    NAMES,
    WORDS,
    LexicalModel,
    has_lexical_files,
    pair_scores,
    splice_lexical,
    write_lexical,
)
from .neighbours import (
    DEFAULT_N,
    GONE,
    LEXICAL_FILE,
    NAMES_FILE,
    RECALL_SAMPLE,
    RESERVE,
    ROWS_FILE,
    SCORES_FILE,
    lexical_table,
    list_floor,
    read_reserve,
    table_recall,
    update_lists,
    write_table,
)
from .pages import PAGES_FILE, PagesReport, write_pages
from .store import (
    IndexDirectory,
    IndexVersion,
    Manifest,
    article_row,
    build_columns,
    carry_rows,
    crash_point,
    now_iso,
    read_vectors,
    storage_errors,
    update_articles,
    update_columns,
    update_vectors,
    write_articles,
    write_columns,
    write_manifest,
    write_vectors,
)
from .text import content_hash, embed_text_for
from .vector_index import Partition

# A full build that would remove more than this share of the live index is refused: an
# empty, header-only or truncated export looks exactly like "every other article is gone".
MAX_REMOVED_SHARE = 0.2
# Updates weigh words with the IDF of the last fit until the articles added, changed or
# removed since then pass this share of the articles it was fitted on; that update refits.
LEXICAL_REFIT_SHARE = 0.2


@dataclass
class BuildReport:
    """What a build or update did. `changed`: records whose content differs from the live
    version in any field; `embedded`: how many needed a new vector (added, or changed in the
    text the model reads, or everything after a model change)."""

    index: str
    version: str | None = None
    total: int = 0
    published: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    withdrawn: int = 0
    invalid: int = 0
    embedded: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    neighbours_seconds: float = 0.0
    neighbours_mode: str = ""      # "full, exact (bf16)", "full, ivf-flat (...)", "incremental"
    neighbours_recall: float = 1.0  # recall@n of the table vs exact search, on a sample
    pages: PagesReport | None = None  # the pages computed ahead (build --pages)
    stages: dict[str, float] = field(default_factory=dict)  # seconds by stage, in order
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "version": self.version, "total": self.total,
            "published": self.published, "added": self.added, "changed": self.changed,
            "unchanged": self.unchanged, "removed": self.removed, "withdrawn": self.withdrawn,
            "invalid": self.invalid, "embedded": self.embedded, "seconds": self.seconds,
            "embed_seconds": self.embed_seconds, "neighbours_seconds": self.neighbours_seconds,
            "neighbours_mode": self.neighbours_mode, "neighbours_recall": self.neighbours_recall,
            "stages": dict(self.stages),
            "pages": self.pages.to_dict() if self.pages is not None else None,
            "problems": [p.to_dict() for p in self.problems],
        }


def build_index(index: str | Path, sources: Iterable[str | Path | Mapping[str, Any]] | LoadReport,
                *, model: str | None = None, embedder: Embedder | None = None,
                incremental: bool = False, delete: Iterable[str] = (), strict: bool = False,
                progress: ProgressCallback | None = None,
                neighbours: int = DEFAULT_N,
                max_removed_share: float = MAX_REMOVED_SHARE,
                engine: BuildEngine | None = None, pages: bool | None = None) -> BuildReport:
    """Publish a new version of the index at `index`.

    incremental=False (build): the index holds exactly the input articles; a build that would
    remove more than `max_removed_share` of the live index (1.0: anything) raises
    RemovalRefused and publishes nothing.
    incremental=True (update): the input is upserted into the live index, `delete` ids removed.
    Vectors are reused whenever content hash and model match the live version.
    engine: where the embedding and a full candidate search run (default: this process;
    `RayEngine` for a Ray cluster); the version is written here either way.
    pages: compute every article's page into the version (recommender.pages), for a server
    to answer pages never asked before without ranking; None: as the live version has them.
    A failed write raises StorageError (disk full, read-only, ...) and leaves no half-written
    version behind.
    """
    started = time.perf_counter()
    engine = engine or LocalEngine()
    directory = IndexDirectory(index)
    loaded = sources if isinstance(sources, LoadReport) else read_articles(sources)
    report = BuildReport(index=str(directory.root), problems=list(loaded.problems),
                         invalid=len(loaded.errors))
    lap = _stopwatch(report.stages)
    lap("read")
    if strict and loaded.errors:
        raise InvalidInput(f"{len(loaded.errors)} invalid record(s); nothing was published "
                           f"(first: {loaded.errors[0]})")

    with storage_errors(f"the index at {directory.root}"), directory.lock():
        previous = _open_previous(directory, report, incremental)
        try:
            if embedder is None:
                embedder = load_embedder(model or (previous.manifest.model
                                                   if previous and incremental else None))
            if incremental and previous is not None and previous.manifest.model != embedder.name:
                raise ModelMismatch(
                    f"index was built with model {previous.manifest.model!r}, not "
                    f"{embedder.name!r}: rebuild it with `recommender build` to change models")
            reusable = previous is not None and previous.manifest.model == embedder.name
            if incremental and previous is not None and reusable:
                done = _update_in_place(directory, previous, loaded, set(delete), embedder,
                                        engine, report, lap, progress, neighbours, pages)
                if done:
                    report.seconds = round(time.perf_counter() - started, 3)
                    return report
            previous_articles = previous.all_articles() if previous is not None else []
            articles = _plan(loaded, previous_articles, previous is not None, incremental,
                             set(delete), report, max_removed_share)
            lap("previous version and plan")
            old_vectors = previous.vectors if previous is not None else None
            texts = [embed_text_for(a) for a in articles]
            hashes = [content_hash(t) for t in texts]
            old_hashes = previous.content_hashes() if previous is not None else {}

            to_embed: list[int] = []
            keep: list[tuple[int, int]] = []
            for row, (article, digest) in enumerate(zip(articles, hashes, strict=True)):
                old = old_hashes.get(article.id)
                if reusable and old is not None and old[1] == digest:
                    keep.append((row, old[0]))
                else:
                    to_embed.append(row)
            lap("content hashes")
            embed_started = time.perf_counter()
            if to_embed:
                fresh = engine.embed(embedder, [articles[i].id for i in to_embed],
                                     [texts[i] for i in to_embed], progress=progress)
                dim = fresh.shape[1]
            else:  # nothing to embed: the model is not even loaded
                fresh = None
                dim = previous.manifest.dimension if reusable and previous else \
                    embedder.dimension
            report.embed_seconds = round(time.perf_counter() - embed_started, 3)
            lap("embed")
            if keep and previous is not None and dim != previous.manifest.dimension:
                raise ModelMismatch(f"index has dimension {previous.manifest.dimension}, model "
                                    f"{embedder.name!r} gives {dim}")
            vectors = np.empty((len(articles), dim), dtype=np.float32)
            if keep:
                assert old_vectors is not None
                new_rows, old_rows = zip(*keep, strict=True)
                vectors[list(new_rows)] = old_vectors[list(old_rows)]
            if to_embed:
                vectors[to_embed] = fresh
            report.embedded = len(to_embed)
            # Content changed in any field (as stored); a model change re-embeds everything
            # but changes no content.
            stored = {a.id: article_row(a, 0, "") for a in previous_articles}
            report.added = sum(1 for a in articles if a.id not in stored)
            report.changed = sum(1 for a in articles
                                 if a.id in stored and stored[a.id] != article_row(a, 0, ""))
            report.unchanged = len(articles) - report.added - report.changed

            name, tmp = directory.new_version_dir()
            lap("vectors and counts")
            write_articles(tmp / "articles.sqlite", articles, hashes)
            crash_point("articles-written")
            lap("articles.sqlite")
            write_vectors(tmp, vectors)
            crash_point("vectors-written")
            columns = build_columns(articles)
            write_columns(tmp, columns)
            lap("vectors and columns")
            weights, lexical, names = LexicalModel.fit(articles)
            write_lexical(tmp, lexical, names)
            weights.save(tmp)
            crash_point("columns-written")
            lap("TF-IDF fits")
            table_started = time.perf_counter()
            new_row = {a.id: i for i, a in enumerate(articles)}
            mapping = np.array([new_row.get(aid, -1) for aid in previous.ids], dtype=np.int64) \
                if previous is not None else np.zeros(0, dtype=np.int64)
            rows, scores, floor, _, report.neighbours_mode, partition = _neighbour_table(
                previous if reusable else None, mapping, vectors, columns.published,
                np.array(sorted(to_embed), dtype=np.int64), neighbours, engine, tmp)
            lap("candidate table")
            write_table(tmp, rows, scores, lexical_table(lexical, rows[:, :neighbours]),
                        lexical_table(names, rows[:, :neighbours]), floor)
            if partition is not None:
                partition.save(tmp)
            crash_point("table-written")
            report.neighbours_seconds = round(time.perf_counter() - table_started, 3)
            lap("table TF-IDF scores")
            recall, sample = table_recall(vectors, columns.published, rows[:, :neighbours],
                                          sample=RECALL_SAMPLE if report.neighbours_mode
                                          != "incremental" else RECALL_SAMPLE // 10)
            report.neighbours_recall = round(recall, 4)
            lap("recall check")
            report.total = len(articles)
            report.published = sum(1 for a in articles if a.is_published)
            write_manifest(tmp, Manifest(
                model=embedder.name, dimension=dim, count=len(articles), built_at=now_iso(),
                version=name, published_count=report.published,
                extra={"neighbours": neighbours,
                       "neighbours_method": report.neighbours_mode,
                       "neighbours_recall": report.neighbours_recall,
                       "neighbours_recall_sample": sample,
                       **_partition_extra(partition),
                       "lexical_fitted_on": weights.fitted,
                       "lexical_changed_since_fit": 0}))
            crash_point("manifest-written")
            _write_pages(directory, tmp, previous, pages, report, lap)
            directory.publish(name, tmp)
            report.version = name
            lap("publish")
        finally:
            if previous is not None:
                previous.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _stopwatch(stages: dict[str, float]) -> Callable[[str], None]:
    """lap(name): add the seconds since the previous lap to stages[name]."""
    last = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = round(stages.get(name, 0.0) + now - last[0], 3)
        last[0] = now

    return lap


def _open_previous(directory: IndexDirectory, report: BuildReport, incremental: bool
                   ) -> IndexVersion | None:
    """The live version, to reuse its vectors. A corrupt or outdated one does not stop a full
    build (everything is embedded again), but it does stop an update, which would otherwise
    publish an index without the articles it could not read."""
    try:
        return IndexVersion(directory.current_path())
    except IndexNotFound:
        return None
    except IndexCorrupt as exc:
        if incremental:
            raise IndexCorrupt(f"{exc}; run `recommender build` with all articles") from exc
        report.problems.append(Problem("<index>", None, f"live version not reusable ({exc}); "
                                       "embedding everything", None, "warning"))
        return None


def _plan(loaded: LoadReport, previous_articles: list[Article], has_previous: bool,
          incremental: bool, delete: set[str], report: BuildReport, max_removed_share: float
          ) -> list[Article]:
    """Decide the article list of the new version."""
    incoming = {a.id: a for a in loaded.articles}
    previous_ids = {a.id for a in previous_articles}
    # An article whose new record is invalid keeps its previous version: bad input never
    # costs the index an article it had.
    invalid_ids = {p.article_id for p in loaded.errors if p.article_id}
    unidentified = any(p.article_id is None for p in loaded.errors)

    if incremental:
        merged = {a.id: a for a in previous_articles}
        merged.update(incoming)
    else:
        merged = dict(incoming)
        for old in previous_articles:
            if old.id in invalid_ids and old.id not in merged:
                merged[old.id] = old
            elif old.id not in merged and unidentified:
                # Some lines could not even be identified (broken JSON): one of them may be
                # this article, so it is not removed on this run.
                merged[old.id] = old
        if unidentified and previous_ids - set(incoming) - invalid_ids:
            report.problems.append(Problem(
                "<build>", None, "some invalid records have no readable id: articles missing "
                "from the input were kept, not removed", None, "warning"))
    for article_id in delete:
        if merged.pop(article_id, None) is not None:
            report.removed += 1
    if not incremental:
        gone = len(previous_ids - set(merged))
        if gone and gone > max_removed_share * len(previous_ids):
            raise RemovalRefused(
                f"build would remove {gone} of the {len(previous_ids)} articles of "
                f"{report.index} ({gone / len(previous_ids):.0%}, more than the "
                f"{max_removed_share:.0%} allowed) because the input does not list them: is it "
                "complete? Nothing was published; pass --allow-removals (or --max-removals "
                "SHARE) if they are really gone")
        report.removed += gone
    was_published = {a.id for a in previous_articles if a.is_published}
    report.withdrawn = sum(1 for a in merged.values()
                           if a.id in was_published and not a.is_published)
    if incremental and not has_previous and not incoming:
        raise IndexNotFound(f"no index at {report.index} and nothing to add")
    return list(merged.values())


# Past this share of changed rows a full pass is as cheap as merging, and keeps lists exact.
INCREMENTAL_LIMIT = 0.2


class _EarlyCopies:
    """The previous version's files an update carries into the new one, copied by the kernel
    in a thread of their own from the moment the update knows which rows it carries, while it
    hashes, embeds and weighs the incoming articles: at a million articles they are about a
    gigabyte, seconds of copying that the other core does instead. articles.sqlite is copied
    whole, then each table file in runs of carried rows (`carry_rows`). `take` waits for one
    file; `close` for all of them (the update's files are never left half-copied behind it).
    table: whether to copy the table files (the update merges into the carried lists)."""

    def __init__(self, previous: Path, tmp: Path, carried: np.ndarray, table: bool) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="carry")
        self._articles = self._pool.submit(shutil.copyfile, previous / "articles.sqlite",
                                           tmp / "articles.sqlite")
        self._table: dict[str, Future[np.memmap]] = {} if not table else {
            name: self._pool.submit(carry_rows, previous / name, tmp / name, carried, dtype)
            for name, dtype in ((ROWS_FILE, np.int32), (SCORES_FILE, np.float32),
                                (LEXICAL_FILE, np.float32), (NAMES_FILE, np.float32))}

    def articles(self) -> None:
        self._articles.result()

    def take(self, name: str) -> np.memmap | None:
        """The carried table file `name`, memory-mapped for writing (None: not copied)."""
        future = self._table.get(name)
        return future.result() if future is not None else None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _neighbour_table(previous: IndexVersion | None, mapping: np.ndarray, vectors: np.ndarray,
                     published: np.ndarray, embedded: np.ndarray, n: int, engine: BuildEngine,
                     tmp: Path, payloads: bool = False, early: _EarlyCopies | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray] | None, str,
                                Partition | None]:
    """The candidate table of the new version, n + RESERVE wide: (rows, scores, floors,
    lexical, how, partition). Merged into the previous one's lists when few rows changed,
    else computed in full by the engine. mapping: each previous row's new row (-1: gone);
    embedded: the rows with a new vector. A merge works in the new version's table files
    (`tmp`): the kernel copies the previous lists into them, rows renumbered by mapping, and
    the merge changes them in place through memory maps, which `write_table` then flushes.
    payloads: the previous table's lexical scores of words and of names are carried with
    their entries too (NaN where an entry is new or came from the reserve, which holds
    none); else, and for a full computation, lexical is None. partition: the IVF lists of an
    approximate table, carried into the new version's rows (the update searches with them),
    else None. early: the table files already being carried (`_EarlyCopies`)."""
    width = n + RESERVE
    count = len(vectors)
    reserve = read_reserve(previous.path) if previous is not None else None
    old = previous.neighbour_table() if previous is not None and reserve is not None else None
    if old is not None and reserve is not None and old[0].shape[1] == n \
            and reserve[0].shape[1] == RESERVE and previous is not None:
        # Changed: re-embedded, or newly a candidate (published now, not before).
        was_published = np.zeros(count, dtype=bool)
        kept = np.flatnonzero(mapping >= 0)
        was_published[mapping[kept]] = previous.columns.published[kept]
        changed = np.union1d(embedded, np.flatnonzero(published & ~was_published))
    else:
        old = reserve = None  # nothing to merge into: a full computation
    if old is None or reserve is None or len(changed) > INCREMENTAL_LIMIT * max(count, 1):
        if early is not None:  # its copies are not needed: let none write past this point
            early.close()
        rows, scores, method, partition = engine.table(vectors, published, width)
        return rows, scores, list_floor(scores, rows), None, f"full, {method}", partition
    assert previous is not None  # (old is None without one)
    # new row i holds previous row carried[i] (-1: an article new to the index)
    carried = np.full(count, -1, dtype=np.int64)
    carried[mapping[kept]] = kept
    new = carried < 0

    def carry(name: str, dtype: Any) -> np.memmap:
        taken = early.take(name) if early is not None else None
        return taken if taken is not None else \
            carry_rows(previous.path / name, tmp / name, carried, dtype)

    rows = carry(ROWS_FILE, np.int32)
    rows[new] = -1
    if len(kept) < len(mapping):  # rows removed: the entries are renumbered
        _renumber(rows, mapping)
    scores = carry(SCORES_FILE, np.float32)
    lexical: list[np.ndarray] = []
    if payloads:
        for name in (LEXICAL_FILE, NAMES_FILE):
            part = carry(name, np.float32)
            part[new] = np.nan
            lexical.append(part)
    floor = np.full(count, -np.inf, dtype=np.float32)
    floor[mapping[kept]] = reserve[2][kept]
    partition = Partition.load(previous.path, int(previous.manifest.extra.get(
        "partition_nprobe", 1)))
    if partition is not None:
        partition = partition.carried(mapping, count, vectors, embedded)
    rows, scores, floor, lexical = update_lists(
        vectors, published, rows, scores, floor, changed, n=n, width=width,
        reembedded=embedded, in_place=True, partition=partition, payloads=lexical)
    return rows, scores, floor, lexical if payloads else None, "incremental", partition


def _renumber(rows: np.ndarray, mapping: np.ndarray, block: int = 1 << 16) -> None:
    """The entries of a carried table (in place, a block of lists at a time) pointed at the
    previous version's rows: now at the new rows, GONE where the article was removed."""
    for start in range(0, len(rows), block):
        part = rows[start:start + block]
        stored = part >= 0
        part[stored] = np.where(mapping[part[stored]] >= 0, mapping[part[stored]], GONE)


def _partition_extra(partition: Partition | None) -> dict[str, Any]:
    """What the manifest records of a table's IVF partition (its nprobe; none for exact)."""
    return {} if partition is None else {"partition_nprobe": partition.nprobe}


def _update_in_place(directory: IndexDirectory, previous: IndexVersion, loaded: LoadReport,
                     delete: set[str], embedder: Embedder, engine: BuildEngine,
                     report: BuildReport, lap: Callable[[str], None],
                     progress: ProgressCallback | None, n: int, pages: bool | None) -> bool:
    """An update written as the previous version plus what changed: only the incoming
    articles are read, hashed, weighed and written; the vectors are shared (a base file and
    a patch) or copied by the kernel, SQLite is updated by rows, the columns are spliced,
    the TF-IDF rows and the table's lists are copied into the new files by the kernel and
    changed there, and only the table entries whose scores are new get lexical scores. False
    (and nothing done) where it does not apply: a version from before format 7, or an
    update that brings the words' IDF due for a refit (then the whole version is written)."""
    model = LexicalModel.load(previous.path)
    if model is None or read_reserve(previous.path) is None \
            or not has_lexical_files(previous.path):
        return False
    incoming = {a.id: a for a in loaded.articles if a.id not in delete}
    removed_ids = sorted({d for d in delete if d in previous.position},
                         key=previous.position.__getitem__)
    stored = previous.articles_by_id(incoming)
    changed_articles = [a for a in incoming.values() if a.id not in stored
                        or article_row(stored[a.id][0], 0, "") != article_row(a, 0, "")]
    since = int(previous.manifest.extra.get("lexical_changed_since_fit", 0)) \
        + len(changed_articles) + len(removed_ids)
    if since > LEXICAL_REFIT_SHARE * max(model.fitted, 1):
        return False
    old_count = len(previous.ids)
    removed_rows = np.array([previous.position[d] for d in removed_ids], dtype=np.int64)
    keep_old = np.ones(old_count, dtype=bool)
    keep_old[removed_rows] = False
    carried_old = np.flatnonzero(keep_old)
    mapping = np.full(old_count, -1, dtype=np.int64)
    mapping[carried_old] = np.arange(len(carried_old))
    added = [a.id for a in changed_articles if a.id not in previous.position]
    ids = (list(previous.ids) if not len(removed_rows) else
           [previous.ids[i] for i in carried_old.tolist()]) + added
    count = len(ids)
    new_row = {aid: len(carried_old) + i for i, aid in enumerate(added)}
    fresh_rows = np.array([new_row[a.id] if a.id in new_row
                           else mapping[previous.position[a.id]] for a in changed_articles],
                          dtype=np.int64)
    carried = np.concatenate([carried_old, np.full(len(added), -1, dtype=np.int64)])
    report.removed = len(removed_ids)
    report.added = len(added)
    report.changed = len(changed_articles) - len(added)
    report.unchanged = count - report.added - report.changed
    report.withdrawn = sum(1 for a in changed_articles
                           if a.id in stored and stored[a.id][0].is_published
                           and not a.is_published)
    # The files to carry start copying now, beside the work below (see _EarlyCopies); an
    # update this small merges into the previous lists (_neighbour_table), whose files
    # are copied too.
    table = previous.neighbour_table()
    reserve = read_reserve(previous.path)
    merges = table is not None and reserve is not None and table[0].shape[1] == n \
        and reserve[0].shape[1] == RESERVE \
        and len(changed_articles) <= INCREMENTAL_LIMIT * max(count, 1)
    name, tmp = directory.new_version_dir()
    early = _EarlyCopies(previous.path, tmp, carried, table=merges)
    try:
        lap("previous version and plan")
        texts = [embed_text_for(a) for a in changed_articles]
        hashes = [content_hash(t) for t in texts]
        to_embed = [i for i, (a, digest) in enumerate(zip(changed_articles, hashes, strict=True))
                    if a.id not in stored or stored[a.id][1] != digest]
        lap("content hashes")
        embed_started = time.perf_counter()
        dim = previous.manifest.dimension
        fresh = None
        if to_embed:
            fresh = engine.embed(embedder, [changed_articles[i].id for i in to_embed],
                                 [texts[i] for i in to_embed], progress=progress)
            if fresh.shape[1] != dim:
                raise ModelMismatch(f"index has dimension {dim}, model {embedder.name!r} gives "
                                    f"{fresh.shape[1]}")
        report.embed_seconds = round(time.perf_counter() - embed_started, 3)
        report.embedded = len(to_embed)
        lap("embed")

        embedded_rows = fresh_rows[to_embed] if to_embed else np.zeros(0, dtype=np.int64)
        update_vectors(tmp, previous.path, carried, count, embedded_rows, fresh)
        vectors = read_vectors(tmp, count, dim)
        crash_point("vectors-written")
        translations = {}
        if added:  # an older article may translate one that only arrives now
            translations = {int(mapping[row]): target
                            for row, target in previous.translations().items()
                            if mapping[row] >= 0 and target in new_row}
        columns = update_columns(previous.columns, carried, changed_articles, fresh_rows, ids,
                                 translations)
        write_columns(tmp, columns)
        lap("vectors and columns")
        lexical_rows = carried.copy()
        lexical_rows[fresh_rows] = -1
        fresh_words, fresh_names = model.transform(changed_articles)
        lexical, names = (splice_lexical(tmp, previous.path, name, lexical_rows, fresh, fresh_rows,
                                         count)
                          for name, fresh in ((WORDS, fresh_words), (NAMES, fresh_names)))
        model.save(tmp)
        crash_point("columns-written")
        lap("TF-IDF fits")
        # (articles.sqlite last of these: its copy, first of _EarlyCopies, had their time)
        upserts = [(int(row), a, h) for row, a, h in zip(fresh_rows, changed_articles, hashes,
                                                           strict=True)]
        early.articles()
        update_articles(tmp / "articles.sqlite", previous.path / "articles.sqlite",
                        removed_rows.tolist(), upserts, copied=True)
        crash_point("articles-written")
        lap("articles.sqlite")
        table_started = time.perf_counter()
        rows, scores, floor, carried_lexical, report.neighbours_mode, partition = _neighbour_table(
            previous, mapping, vectors, columns.published, embedded_rows, n, engine, tmp,
            payloads=True, early=early)
        lap("candidate table")
        served_rows = rows[:, :n]
        valid = served_rows >= 0
        touched = np.zeros(count, dtype=bool)
        touched[fresh_rows] = True
        # A carried entry keeps its lexical scores unless its article or its candidate changed
        # (its text may have); new entries (NaN) and those are computed.
        stale = valid & (touched[:, None] | touched[np.where(valid, served_rows, 0)])
        payloads = []
        for index, matrix in enumerate((lexical, names)):
            # (in place: the carried scores are the memory map of the new version's file)
            values = np.full(served_rows.shape, np.nan, dtype=np.float32) \
                if carried_lexical is None else carried_lexical[index]
            need = stale | (valid & np.isnan(values))
            sources = np.broadcast_to(np.arange(count)[:, None], served_rows.shape)[need]
            values[need] = pair_scores(matrix, sources, served_rows[need].astype(np.int64))
            values[~valid] = 0.0
            payloads.append(values)
        write_table(tmp, rows, scores, payloads[0], payloads[1], floor)
        if partition is not None:
            partition.save(tmp)
        crash_point("table-written")
        report.neighbours_seconds = round(time.perf_counter() - table_started, 3)
        lap("table TF-IDF scores")
        recall, sample = table_recall(vectors, columns.published, served_rows,
                                      sample=RECALL_SAMPLE // 10)
        report.neighbours_recall = round(recall, 4)
        lap("recall check")
        report.total = count
        report.published = int(columns.published.sum())
        write_manifest(tmp, Manifest(
            model=embedder.name, dimension=dim, count=count, built_at=now_iso(),
            version=name, published_count=report.published,
            extra={"neighbours": n, "neighbours_method": report.neighbours_mode,
                   "neighbours_recall": report.neighbours_recall,
                   "neighbours_recall_sample": sample, **_partition_extra(partition),
                   "lexical_fitted_on": model.fitted, "lexical_changed_since_fit": since}))
        crash_point("manifest-written")
        _write_pages(directory, tmp, previous, pages, report, lap)
        directory.publish(name, tmp)
        report.version = name
        lap("publish")
        return True
    finally:
        early.close()


def _write_pages(directory: IndexDirectory, tmp: Path, previous: IndexVersion | None,
                 wanted: bool | None, report: BuildReport, lap: Callable[[str], None]) -> None:
    """The version's pages computed ahead, when asked for or (None) when the live version
    has them; those whose inputs did not change are copied from it."""
    had = previous is not None and (previous.path / PAGES_FILE).is_file()
    if not (had if wanted is None else wanted):
        return
    report.pages = write_pages(directory.root, tmp, previous if had else None)
    crash_point("pages-written")
    lap("pages")


def rollback(index: str | Path, to: str | None = None) -> tuple[str, str]:
    """Make the previous version of the index live again (or version `to`): readers switch
    to it as they do after a build. Returns (the version that was live, the one now live)."""
    directory = IndexDirectory(index)
    with storage_errors(f"the index at {directory.root}"), directory.lock():
        return directory.rollback(to)
