"""The OpenVINO embedding runtime: same vectors as plain fp32 encode, a cache that is reused,
never stale and rebuilt when broken, no telemetry, and torch when openvino cannot run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recommender import RuntimeUnavailable, load_articles, sample_corpus_path
from recommender.embedding import SentenceTransformerEmbedder, cpu_supports_bf16
from recommender.embedding.openvino_runtime import (
    CACHE_FOLDER,
    cache_entry,
    check_entry,
    model_content_hash,
    publish_entry,
)
from recommender.text import embed_text_for


def fake_model(root: Path, weights: bytes = b"weights") -> Path:
    model = root / "model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(weights)
    (model / "1_Pooling" / "config.json").write_text("{}")
    return model


def stage(root: Path, meta: dict[str, Any], name: str, payload: bytes = b"ir") -> Path:
    """A complete entry as the converter leaves it before publishing."""
    import hashlib

    staged = root / name
    staged.mkdir()
    (staged / "model.xml").write_bytes(b"<net/>")
    (staged / "model.bin").write_bytes(payload)
    files = {n: hashlib.sha256((staged / n).read_bytes()).hexdigest()
             for n in ("model.xml", "model.bin")}
    (staged / "meta.json").write_text(json.dumps({**meta, "files": files}))
    return staged


def test_the_cache_entry_changes_with_the_weights_and_the_openvino_version(
        tmp_path: Path) -> None:
    model = fake_model(tmp_path)
    first, _ = cache_entry(tmp_path / "cache", model, model_content_hash(model), "2026.4")
    other_version, _ = cache_entry(tmp_path / "cache", model, model_content_hash(model), "2026.5")
    # our own cache folder inside the model folder is not part of the model
    (model / CACHE_FOLDER).mkdir()
    (model / CACHE_FOLDER / "x").write_text("cached")
    assert cache_entry(tmp_path / "cache", model, model_content_hash(model), "2026.4")[0] == first
    (model / "model.safetensors").write_bytes(b"retrained")
    retrained, _ = cache_entry(tmp_path / "cache", model, model_content_hash(model), "2026.4")
    assert len({first, other_version, retrained}) == 3


def test_a_truncated_or_foreign_entry_is_not_used(tmp_path: Path) -> None:
    model = fake_model(tmp_path)
    entry, meta = cache_entry(tmp_path, model, model_content_hash(model), "2026.4")
    assert check_entry(entry, meta) == "no cached model"
    publish_entry(stage(tmp_path, meta, "staged"), entry, meta)
    assert check_entry(entry, meta) is None
    assert check_entry(entry, {**meta, "openvino": "2026.5"}) is not None
    with (entry / "model.bin").open("r+b") as stream:
        stream.truncate(1)
    assert "model.bin" in (check_entry(entry, meta) or "")
    (entry / "meta.json").write_text("{not json")
    assert "meta.json" in (check_entry(entry, meta) or "")


def test_two_converters_publishing_at_once_leave_one_complete_entry(tmp_path: Path) -> None:
    model = fake_model(tmp_path)
    entry, meta = cache_entry(tmp_path, model, model_content_hash(model), "2026.4")
    first, second = stage(tmp_path, meta, "a", b"one"), stage(tmp_path, meta, "b", b"two")
    publish_entry(first, entry, meta)
    publish_entry(second, entry, meta)  # the loser finds a valid entry and drops its copy
    assert check_entry(entry, meta) is None and (entry / "model.bin").read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", entry.name]
    # a broken entry in the way is replaced, not kept
    (entry / "model.bin").write_bytes(b"garbage")
    publish_entry(stage(tmp_path, meta, "c", b"three"), entry, meta)
    assert check_entry(entry, meta) is None and (entry / "model.bin").read_bytes() == b"three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", entry.name]


def test_importing_and_converting_write_nothing_to_home(tmp_path: Path) -> None:
    """OpenVINO's converter sends telemetry and writes ~/intel unless opted out."""
    pytest.importorskip("openvino")
    home = tmp_path / "home"
    home.mkdir()
    script = textwrap.dedent("""
        import torch
        from recommender.embedding.openvino_runtime import import_openvino
        ov = import_openvino()
        ov.convert_model(torch.nn.Linear(2, 2), example_input=torch.zeros(1, 2))
    """)
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    env.pop("CI", None)  # the telemetry is off in CI anyway: test the user's case
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    assert list(home.iterdir()) == []


# With the real model (marked `model`, like tests/test_model_end_to_end.py).

@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [embed_text_for(a) for a in load_articles(sample_corpus_path())]


@pytest.fixture(scope="module")
def plain_fp32(texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    from recommender.embedding import default_model_path

    model = SentenceTransformer(str(default_model_path()), device="cpu")
    return np.asarray(model.encode(texts, normalize_embeddings=True), dtype=np.float32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("openvino")
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def openvino_vectors(cache: Path, texts: list[str]) -> np.ndarray:
    embedder = SentenceTransformerEmbedder(runtime="openvino", cache_dir=cache)
    assert embedder.runtime == "openvino"
    return embedder.embed(texts)


def agreement(vectors: np.ndarray, reference: np.ndarray) -> float:
    """The lowest cosine between rows (both are unit length)."""
    return float((vectors * reference).sum(axis=1).min())


def conversions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of openvino.convert_model from now on."""
    import openvino

    calls: list[int] = []
    convert = openvino.convert_model

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return convert(*args, **kwargs)

    monkeypatch.setattr(openvino, "convert_model", counted)
    return calls


@pytest.mark.model
def test_openvino_vectors_agree_with_plain_fp32_encode(openvino_vectors: np.ndarray,
                                                       plain_fp32: np.ndarray) -> None:
    assert openvino_vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(openvino_vectors, axis=1), 1.0, atol=1e-5)
    assert agreement(openvino_vectors, plain_fp32) >= 0.998  # every text of the corpus
    # interchangeable vectors, one name: an index built with torch is updated with openvino
    assert SentenceTransformerEmbedder(runtime="openvino").name == \
        SentenceTransformerEmbedder(runtime="torch").name
    assert SentenceTransformerEmbedder(runtime="openvino").precision == \
        ("bf16" if cpu_supports_bf16() else "fp32")


@pytest.mark.model
def test_a_second_load_uses_the_cache_without_converting(
        cache: Path, openvino_vectors: np.ndarray, texts: list[str], plain_fp32: np.ndarray,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = conversions(monkeypatch)
    embedder = SentenceTransformerEmbedder(runtime="openvino", cache_dir=cache)
    assert embedder.runtime == "openvino" and calls == []
    assert agreement(embedder.embed(texts[:20]), plain_fp32[:20]) >= 0.998


@pytest.mark.model
def test_a_corrupted_or_stale_cache_is_rebuilt(
        cache: Path, openvino_vectors: np.ndarray, texts: list[str], plain_fp32: np.ndarray,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openvino

    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    (entry,) = copy.iterdir()
    with (entry / "model.bin").open("r+b") as stream:  # a flipped byte in the weights
        stream.seek(stream.seek(0, os.SEEK_END) // 2)
        stream.write(b"\xff\xff\xff\xff")
    calls = conversions(monkeypatch)
    rebuilt = SentenceTransformerEmbedder(runtime="openvino", cache_dir=copy)
    assert rebuilt.runtime == "openvino" and len(calls) == 1
    assert check_entry(entry, json.loads((entry / "meta.json").read_text())) is None
    assert agreement(rebuilt.embed(texts[:20]), plain_fp32[:20]) >= 0.998
    # another OpenVINO version never reads the entry of this one
    monkeypatch.setattr(openvino, "get_version", lambda: "2099.1-other")
    upgraded = SentenceTransformerEmbedder(runtime="openvino", cache_dir=copy)
    assert upgraded.runtime == "openvino" and len(calls) == 2
    assert len(list(copy.iterdir())) == 2


@pytest.mark.model
def test_without_openvino_auto_embeds_with_torch_and_says_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        texts: list[str], plain_fp32: np.ndarray) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails
    with caplog.at_level(logging.WARNING, logger="recommender"):
        embedder = SentenceTransformerEmbedder(runtime="auto")
        assert embedder.runtime == "torch"
        vectors = embedder.embed(texts[:20])
    assert agreement(vectors, plain_fp32[:20]) >= 0.998
    (line,) = [r.getMessage() for r in caplog.records if r.name == "recommender"]
    assert "torch" in line and "recommender[openvino]" in line
    with pytest.raises(RuntimeUnavailable, match=r"recommender\[openvino\]"):
        SentenceTransformerEmbedder(runtime="openvino").embed(["x"])


@pytest.mark.model
def test_a_failed_conversion_falls_back_to_torch_and_leaves_no_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import openvino

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unsupported operation aten::frobnicate")

    monkeypatch.setattr(openvino, "convert_model", broken)
    with caplog.at_level(logging.WARNING, logger="recommender"):
        embedder = SentenceTransformerEmbedder(runtime="auto", cache_dir=tmp_path / "cache")
        assert embedder.runtime == "torch"
    (line,) = [r.getMessage() for r in caplog.records if r.name == "recommender"]
    assert "frobnicate" in line
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(RuntimeUnavailable, match="frobnicate"):
        SentenceTransformerEmbedder(runtime="openvino", cache_dir=tmp_path / "cache").embed(["x"])
