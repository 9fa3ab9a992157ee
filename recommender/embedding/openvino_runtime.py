"""OpenVINO runtime for a sentence-transformers model: its whole torch pipeline (transformer,
pooling, normalisation) converted once, locally, to OpenVINO IR, cached, and run in bf16 where
the CPU has native bf16: several times faster than torch here (README, Embedding speed), with
vectors at cosine ≥ 0.998 to plain fp32 encode (checked on probe texts at every conversion).

Cache: $RECOMMENDER_OPENVINO_CACHE, else `.recommender-openvino/` inside the model folder when
it is writable, else $XDG_CACHE_HOME/recommender/openvino (~/.cache/...). One entry per model
path + model content hash + OpenVINO version + FORMAT, so a stale entry is never read; an entry
whose files do not match its recorded hashes is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RuntimeUnavailable

logger = logging.getLogger("recommender")

CACHE_ENV = "RECOMMENDER_OPENVINO_CACHE"
CACHE_FOLDER = ".recommender-openvino"
# Bump when the conversion changes what the saved IR computes: old entries are then ignored.
FORMAT = 1
MIN_PROBE_COSINE = 0.998
# Embedded by torch and by the new IR after each conversion: an IR that disagrees is refused.
PROBE_TEXTS = (
    "Bridge collapse: rescuers search the river as the inquiry into the inspection opens.",
    "The central bank holds interest rates and warns that inflation will stay high.",
    "Ein Sturm zieht über die Küste, Fähren bleiben im Hafen.",
    "Match report: a late penalty decides the derby in front of a full stadium.",
    "?",
    "Scientists publish the first images from the probe orbiting the icy moon " * 30,
)


def import_openvino() -> Any:
    """Import `openvino` without its usage telemetry: importing it also imports the model
    converter, which otherwise sends an event to Google Analytics and writes a client id under
    ~/intel unless the user ran `opt_in_out --opt_out`. With its telemetry package blocked
    during that import the converter binds its own no-op stub, for the life of the process.
    Raises ImportError when openvino is not installed."""
    loaded = sys.modules.get("openvino")
    if loaded is not None:
        return loaded
    blocked = "openvino_telemetry"
    saved = sys.modules.get(blocked)
    sys.modules[blocked] = None  # type: ignore[assignment]  # `import` of it raises ImportError
    try:
        import openvino
    finally:
        if saved is None:
            del sys.modules[blocked]
        else:
            sys.modules[blocked] = saved
    return openvino


def _file_hash(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def model_content_hash(model_dir: Path) -> str:
    """sha256 over the relative path and content of every file of the model (our cache
    folder excluded): retraining, a new tokenizer or a changed config make another entry."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        relative = path.relative_to(model_dir)
        if relative.parts[0] == CACHE_FOLDER or not path.is_file():
            continue
        digest.update(f"{relative.as_posix()}\0{_file_hash(path)}\n".encode())
    return digest.hexdigest()


def default_cache_root(model_dir: Path) -> Path:
    """$RECOMMENDER_OPENVINO_CACHE > beside the weights (writable) > the user cache dir."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen)
    beside = model_dir / CACHE_FOLDER
    if os.access(beside if beside.is_dir() else model_dir, os.W_OK):
        return beside
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return user_cache / "recommender" / "openvino"


def cache_entry(cache_root: Path, model_dir: Path, content_hash: str, ov_version: str
                ) -> tuple[Path, dict[str, Any]]:
    """The entry folder for this model and runtime, and the metadata it must carry."""
    meta = {"format": FORMAT, "model": str(model_dir.resolve()), "content": content_hash,
            "openvino": ov_version}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root / f"{model_dir.name}-{key}", meta


def check_entry(entry: Path, meta: dict[str, Any]) -> str | None:
    """None if `entry` holds a complete IR for `meta`, else why it cannot be used."""
    try:
        recorded = json.loads((entry / "meta.json").read_text())
    except FileNotFoundError:
        return "no cached model"
    except (OSError, ValueError) as exc:
        return f"unreadable meta.json ({exc})"
    if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in meta.items()):
        return "cached for another model, model content or OpenVINO version"
    files = recorded.get("files")
    if not isinstance(files, dict) or set(files) != {"model.xml", "model.bin"}:
        return "meta.json lists no model files"
    for name, expected in files.items():
        try:
            if _file_hash(entry / name) != expected:
                return f"{name} does not match its recorded hash"
        except OSError as exc:
            return f"{name} unreadable ({exc})"
    return None


def publish_entry(staged: Path, entry: Path, meta: dict[str, Any]) -> None:
    """Move the complete folder `staged` to `entry` with one rename. Another process may have
    published the same entry meanwhile: then whichever valid one is there stays, and a broken
    one is moved aside first (readers only ever see a missing or a complete entry)."""
    for _attempt in range(3):
        try:
            staged.rename(entry)
            return
        except OSError:
            if check_entry(entry, meta) is None:
                shutil.rmtree(staged, ignore_errors=True)
                return
            aside = Path(tempfile.mkdtemp(prefix=".stale-", dir=entry.parent))
            with contextlib.suppress(OSError):
                entry.rename(aside / entry.name)
            shutil.rmtree(aside, ignore_errors=True)
    raise RuntimeUnavailable(f"cannot publish the converted model at {entry}")


class _Pipeline(torch.nn.Module):
    """The SentenceTransformer with named tensor inputs and the pooled, normalised embedding
    as its output, for the converter to trace: pooling stays the library's own code."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        features = {"input_ids": input_ids, "attention_mask": attention_mask,
                    "token_type_ids": token_type_ids}
        return self.model(features)["sentence_embedding"]


INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def tokenize(model: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's own tokenisation (truncation at max_seq_length, padding to the batch)."""
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    features = preprocess(list(texts))
    missing = [name for name in INPUTS if name not in features]
    if missing:
        raise RuntimeUnavailable(f"the model's tokenizer gives no {', '.join(missing)}")
    return {name: features[name].numpy() for name in INPUTS}


def convert(model: Any, entry: Path, meta: dict[str, Any], check: Any) -> None:
    """Convert the fp32 torch pipeline of `model` to IR in a temporary folder beside `entry`,
    let `check(path_of_xml)` refuse it, then publish it."""
    ov = import_openvino()
    entry.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        example = {k: torch.from_numpy(v) for k, v in tokenize(model, PROBE_TEXTS[:2]).items()}
        with torch.no_grad(), warnings.catch_warnings():
            # the shape checks it warns about hold for every batch of this tokenizer
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            converted = ov.convert_model(_Pipeline(model).eval(), example_input=example)
        # fp32 weights: the fp16 compression default would cost accuracy in f32 inference
        ov.save_model(converted, staged / "model.xml", compress_to_fp16=False)
        check(staged / "model.xml")
        files = {name: _file_hash(staged / name) for name in ("model.xml", "model.bin")}
        (staged / "meta.json").write_text(json.dumps({**meta, "files": files}, indent=2))
        staged.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        publish_entry(staged, entry, meta)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


class OpenVINOEncoder:
    """Encodes texts with the cached IR of a SentenceTransformer loaded in fp32 (its tokenizer
    is used as is). `converted` tells whether this load had to convert."""

    def __init__(self, model: Any, model_dir: Path, *, bf16: bool, batch_size: int,
                 cache_root: Path | None = None, hint: str = "THROUGHPUT") -> None:
        try:
            self._ov = import_openvino()
        except ImportError as exc:
            raise RuntimeUnavailable(
                "the openvino runtime needs the package openvino: pip install "
                "'recommender[openvino]'") from exc
        self._model = model
        self._batch_size = batch_size
        # THROUGHPUT: batches run in parallel streams, measured faster than LATENCY (one
        # batch at a time over all cores) by scripts/bench_embed.py --explore
        self._config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
                        "PERFORMANCE_HINT": hint,
                        # torch's count, so OMP_NUM_THREADS / torch.set_num_threads limit both
                        "INFERENCE_NUM_THREADS": str(torch.get_num_threads())}
        self._core = self._ov.Core()
        root = cache_root or default_cache_root(model_dir)
        entry, meta = cache_entry(root, model_dir, model_content_hash(model_dir),
                                  self._ov.get_version())
        self.entry = entry
        problem = check_entry(entry, meta)
        self.converted = problem is not None
        if problem is not None:
            if problem != "no cached model":
                logger.info("rebuilding the OpenVINO model at %s: %s", entry, problem)
            try:
                convert(model, entry, meta, self._check)
            except RuntimeUnavailable:
                raise
            except Exception as exc:  # the converter raises many kinds
                raise RuntimeUnavailable(f"cannot convert the model to OpenVINO: {exc}") from exc
        try:
            self._compiled = self._compile(entry / "model.xml")
        except Exception as exc:  # e.g. a CPU or OpenVINO build without this precision
            raise RuntimeUnavailable(f"OpenVINO cannot compile the model: {exc}") from exc

    def _compile(self, xml: Path) -> tuple[Any, list[Any]]:
        compiled = self._core.compile_model(str(xml), "CPU", self._config)
        # one request per stream the hint chose, kept for the life of the encoder
        count = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        return compiled, [compiled.create_infer_request() for _ in range(max(1, count))]

    def _check(self, xml: Path) -> None:
        with torch.no_grad():
            reference = self._model.encode(list(PROBE_TEXTS), convert_to_numpy=True,
                                           normalize_embeddings=True, show_progress_bar=False)
        got = self._run(self._compile(xml), list(PROBE_TEXTS))
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        cosine = float((got * reference).sum(axis=1).min())
        if not cosine >= MIN_PROBE_COSINE:
            raise RuntimeUnavailable(
                f"the converted model disagrees with torch (cosine {cosine:.4f} < "
                f"{MIN_PROBE_COSINE})")

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
               ) -> np.ndarray:
        """Embeddings of `texts` in their order, batched as given (sort them beforehand);
        `progress(texts done)` is called as batches finish."""
        return self._run(self._compiled, texts, progress)

    def _run(self, compiled: tuple[Any, list[Any]], texts: Sequence[str],
             progress: Callable[[int], None] | None = None) -> np.ndarray:
        model, requests = compiled
        dimension = model.outputs[0].get_partial_shape()[1].get_length()
        out = np.empty((len(texts), dimension), dtype=np.float32)
        # Requests take batches in turn: while they run, this thread tokenises the next one.
        # No completion callbacks: a Python callback on OpenVINO's threads can deadlock with
        # a request being freed under the GIL.
        running: list[slice | None] = [None] * len(requests)
        done = 0

        def collect(slot: int) -> None:
            nonlocal done
            rows = running[slot]
            if rows is not None:
                requests[slot].wait()
                out[rows] = requests[slot].get_output_tensor(0).data
                running[slot] = None
                done += rows.stop - rows.start
                if progress is not None:
                    progress(done)

        for number, start in enumerate(range(0, len(texts), self._batch_size)):
            slot = number % len(requests)
            collect(slot)
            rows = slice(start, min(start + self._batch_size, len(texts)))
            requests[slot].start_async(tokenize(self._model, texts[rows]))
            running[slot] = rows
        for slot in range(len(requests)):
            collect(slot)
        return out
