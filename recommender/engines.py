"""Build engines: where a build embeds its articles and computes its candidate table.

`LocalEngine` does both in this process. `RayEngine` runs them as Ray Data jobs on a Ray
cluster (one actor per CPU, each loading the model once), while this process still plans the
build, reuses the vectors of unchanged articles and writes the version, so both engines
publish the same index.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from .embedding import Embedder, ProgressCallback
from .errors import EngineError, RecommenderError
from .neighbours import compute_table, full_table
from .vector_index import BLOCK, Partition

ENGINES = ("local", "ray")
ENGINE_ENV = "RECOMMENDER_ENGINE"
RAY_MISSING = "--engine ray needs Ray: pip install 'recommender[ray]'"

# Texts per embedding call, as the local path cuts them (SentenceTransformerEmbedder: 4 batches
# of 16). Each row of the Ray dataset is one such chunk, cut here after the same sort by
# length, so a worker embeds exactly the chunks a local build embeds (the vectors are the same
# bit for bit, not just close) whatever blocks and batches Ray makes of the rows.
EMBED_BATCH = 64
# Queries per search task: whole blocks of the local search, so each list is computed by
# the same products; up to this many of them, so copying the candidate vectors is amortised,
# and fewer when that leaves a worker idle.
SEARCH_BLOCKS = 8

# a full table and the IVF partition it was searched with (None: exact, or not kept)
FullTable = tuple[np.ndarray, np.ndarray, str, Partition | None]


class BuildEngine(Protocol):
    """What `build_index` asks of an engine. `embed` returns the vectors in the order of
    `ids`; `table` is `neighbours.full_table` over all rows."""

    @property
    def name(self) -> str: ...

    def embed(self, embedder: Embedder, ids: Sequence[str], texts: Sequence[str],
              progress: ProgressCallback | None = None) -> np.ndarray: ...

    def table(self, vectors: np.ndarray, candidates: np.ndarray, n: int) -> FullTable: ...


class LocalEngine:
    """Everything in this process (the default)."""

    name = "local"

    def embed(self, embedder: Embedder, ids: Sequence[str], texts: Sequence[str],
              progress: ProgressCallback | None = None) -> np.ndarray:
        return embedder.embed(texts, progress=progress)

    def table(self, vectors: np.ndarray, candidates: np.ndarray, n: int) -> FullTable:
        return full_table(vectors, candidates, n)

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _EmbedChunks:
    """A Ray Data actor: the embedder is unpickled (its model loaded on first use) once per
    worker, then embeds every chunk of texts it is given, one `embed` call per chunk."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [str(i) for chunk in batch["ids"] for i in chunk]
        vectors = [self.embedder.embed([str(t) for t in chunk]) for chunk in batch["texts"]]
        return {"id": np.array(ids), "vector": np.concatenate(vectors)}


class _SearchBlocks:
    """A Ray Data actor holding the whole vector set (read from the object store, shared by
    the workers of a node): each batch names runs of query rows, [start, stop)."""

    def __init__(self, shared: list[Any], n: int) -> None:
        import ray

        self.vectors, self.candidates = ray.get(shared)
        self.n = n

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        queries = np.concatenate([np.arange(start, stop) for start, stop
                                  in zip(batch["start"].tolist(), batch["stop"].tolist(),
                                         strict=True)])
        rows, scores, method = compute_table(self.vectors, self.candidates, self.n,
                                             queries=queries)
        return {"query": queries, "rows": rows, "scores": scores,
                "method": np.array([method] * len(queries))}


class RayEngine:
    """Embedding and the full candidate search as Ray Data jobs.

    address: a running cluster ("auto", "HOST:6379", "ray://HOST:10001"); None starts a local
    Ray with every CPU of this machine (or joins $RAY_ADDRESS, as `ray.init` does). A Ray
    already initialised by the caller is used as it is and left running. Use it as a context
    manager to shut down a Ray it started.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers
        self._started = False

    def _ray(self) -> Any:
        try:
            import ray
            import ray.data
        except ImportError as exc:
            raise EngineError(RAY_MISSING) from exc
        if not ray.is_initialized():
            try:
                # Ray's own warnings (token authentication of a local cluster, ...) are not
                # the build's: its errors still surface as exceptions.
                ray.init(address=self.address, logging_level=logging.ERROR,
                         include_dashboard=False, configure_logging=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or os.environ.get("RAY_ADDRESS") or "a local Ray"
                raise EngineError(f"cannot start or reach Ray at {where}: "
                                  f"{_first_line(exc)}") from exc
            self._started = True
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the build reports its own progress
        context.enable_auto_log_stats = False
        return ray

    def _workers(self, ray: Any) -> int:
        return self.workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)

    def _pool(self, ray: Any, blocks: int) -> Any:
        return ray.data.ActorPoolStrategy(size=max(1, min(self._workers(ray), blocks)))

    def embed(self, embedder: Embedder, ids: Sequence[str], texts: Sequence[str],
              progress: ProgressCallback | None = None) -> np.ndarray:
        ray = self._ray()
        if len(ids) != len(texts):
            raise ValueError("one id per text")
        position = {article_id: i for i, article_id in enumerate(ids)}
        if len(position) != len(ids):
            raise ValueError("article ids must be unique")
        # The local path's order: longest first across the whole run, so batches pad little.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunks = [{"ids": [ids[i] for i in rows], "texts": [texts[i] for i in rows]}
                  for rows in (order[s:s + EMBED_BATCH] for s in range(0, len(order),
                                                                         EMBED_BATCH))]
        vectors = ray.data.from_items(chunks).map_batches(
            _EmbedChunks, fn_constructor_kwargs={"embedder": embedder},
            batch_size=1, batch_format="numpy", num_cpus=1,
            compute=self._pool(ray, len(chunks)))
        out: np.ndarray | None = None
        seen = np.zeros(len(ids), dtype=bool)
        if progress is not None:
            progress(0, len(ids))
        with _worker_errors():
            for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
                rows = np.array([position[str(i)] for i in batch["id"]], dtype=np.int64)
                if out is None:
                    out = np.empty((len(ids), batch["vector"].shape[1]), dtype=np.float32)
                out[rows] = batch["vector"]
                seen[rows] = True
                if progress is not None:
                    progress(int(seen.sum()), len(ids))
        if out is None or not seen.all():
            raise EngineError(f"the Ray job returned {int(seen.sum())} of {len(ids)} vectors")
        return out

    def table(self, vectors: np.ndarray, candidates: np.ndarray, n: int) -> FullTable:
        ray = self._ray()
        shared = [ray.put(np.ascontiguousarray(vectors, dtype=np.float32)),
                  ray.put(np.asarray(candidates, dtype=bool))]
        total = len(vectors)
        per_task = BLOCK * max(1, min(SEARCH_BLOCKS,
                                      -(-total // (BLOCK * 2 * self._workers(ray)))))
        runs = [{"start": s, "stop": min(s + per_task, total)} for s in range(0, total, per_task)]
        blocks = ray.data.from_items(runs).map_batches(
            _SearchBlocks, fn_constructor_kwargs={"shared": shared, "n": n},
            batch_size=1, batch_format="numpy", num_cpus=1,
            compute=self._pool(ray, len(runs)))
        rows = np.full((len(vectors), n), -1, dtype=np.int32)
        scores = np.zeros((len(vectors), n), dtype=np.float32)
        methods: set[str] = set()
        with _worker_errors():
            for batch in blocks.iter_batches(batch_size=None, batch_format="numpy"):
                rows[batch["query"]], scores[batch["query"]] = batch["rows"], batch["scores"]
                methods.update(str(m) for m in batch["method"])
        # each task searched its own index: no one partition to keep (updates scan exactly)
        return rows, scores, "ray: " + "+".join(sorted(methods - {"none"}) or ["none"]), None

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


# How a worker's own error reads in the traceback Ray sends back: Ray Data wraps it in a
# UserCodeException, and only the text of the chain crosses the process boundary.
_WORKER_ERROR = re.compile(r"^recommender\.errors\.\w+: (.+)$", re.MULTILINE)


@contextmanager
def _worker_errors() -> Iterator[None]:
    """A failure inside a Ray worker as one line: the library's own error when a worker raised
    one (a model that cannot load), else the innermost cause Ray kept."""
    try:
        yield
    except RecommenderError:
        raise
    except Exception as exc:
        own = _WORKER_ERROR.search(str(exc))
        if own:
            raise EngineError(f"a Ray worker failed: {own.group(1)}") from exc
        cause: BaseException = exc
        for _ in range(20):  # RayTaskError keeps the worker's exception in `.cause`
            inner = cause.__cause__ or getattr(cause, "cause", None)
            if not isinstance(inner, BaseException):
                break
            cause = inner
        raise EngineError(f"the Ray job failed: {type(cause).__name__}: "
                          f"{_first_line(cause)}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def resolve_engine(name: str | None = None, address: str | None = None
                   ) -> LocalEngine | RayEngine:
    """The engine of a build: `name` (the --engine flag) > $RECOMMENDER_ENGINE > local.
    `address` (--address) is the Ray cluster, and only means something for ray."""
    chosen = (name or os.environ.get(ENGINE_ENV) or "local").strip().lower()
    if chosen not in ENGINES:
        raise EngineError(f"unknown engine {chosen!r} (from {'--engine' if name else ENGINE_ENV}"
                          f"; known: {', '.join(ENGINES)})")
    if chosen == "local":
        if address:
            raise EngineError("--address is the Ray cluster to run on: it needs --engine ray")
        return LocalEngine()
    return RayEngine(address)
