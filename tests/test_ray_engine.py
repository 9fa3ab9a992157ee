"""`--engine ray`: embedding and the candidate search as Ray Data jobs publish the index a
local build publishes. One local Ray (`ray.init(num_cpus=2)`) serves the module; the builds of
the sample corpus use the real model, as the other builds of it do (test_model_end_to_end).
Without ray installed those tests skip (the `test` extra installs it, so CI runs them)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from recommender import (
    EngineError,
    HashingEmbedder,
    LocalEngine,
    RayEngine,
    Recommender,
    RecommenderError,
    build_index,
    load_articles,
    sample_corpus_path,
)
from recommender.cli import main
from recommender.engines import resolve_engine
from recommender.store import IndexDirectory, IndexVersion

try:
    import ray
except ImportError:  # pragma: no cover - the test extra installs it
    ray = None

needs_ray = pytest.mark.skipif(
    ray is None, reason="ray is not installed: pip install -c constraints.txt -e '.[test]' "
                        "(or '.[ray]') to run the --engine ray tests")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    assert ray is not None
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def opened(index: Path) -> IndexVersion:
    return IndexVersion(IndexDirectory(index).current_path())


def vectors_by_id(version: IndexVersion) -> dict[str, np.ndarray]:
    return {aid: np.asarray(version.vectors[i]) for i, aid in enumerate(version.ids)}


def candidate_lists(version: IndexVersion) -> dict[str, list[str]]:
    table = version.neighbour_table()
    assert table is not None
    rows = np.asarray(table[0])
    return {aid: [version.ids[j] for j in rows[i] if j >= 0] for i, aid in enumerate(version.ids)}


def assert_same_index(local: Path, distributed: Path) -> None:
    """What a reader of the two indexes would notice: the same articles, vectors within
    cosine 0.9999 article by article, the same candidate lists and the same pages."""
    a, b = opened(local), opened(distributed)
    ids = list(a.ids)
    try:
        assert (a.manifest.model, a.manifest.dimension, a.manifest.count) == \
            (b.manifest.model, b.manifest.dimension, b.manifest.count)
        va, vb = vectors_by_id(a), vectors_by_id(b)
        assert va.keys() == vb.keys()
        worst = min(float(va[k] @ vb[k]) for k in va)
        assert worst >= 0.9999, worst
        assert candidate_lists(a) == candidate_lists(b)
    finally:
        a.close()
        b.close()
    first, second = Recommender.open(local), Recommender.open(distributed)
    for article_id in ids:
        assert _page(first, article_id) == _page(second, article_id), article_id


def _page(recommender: Recommender, article_id: str) -> dict[str, list[str]]:
    return {slot: [r.id for r in links] for slot, links in recommender.page(article_id).items()}


@pytest.fixture(scope="module")
def built(local_ray: None, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("ray-engine")
    build_index(root / "local", [sample_corpus_path()])
    code, out, err = cli("build", str(sample_corpus_path()), "--index", str(root / "ray"),
                         "--engine", "ray", "--json")
    assert code == 0, err
    return root / "local", root / "ray", json.loads(out)


@needs_ray
@pytest.mark.model
def test_a_ray_build_of_the_sample_corpus_equals_a_local_build(
        built: tuple[Path, Path, dict[str, Any]]) -> None:
    local, distributed, report = built
    assert report["embedded"] == report["total"] == 156
    assert report["neighbours_mode"].startswith("full, ray: ")  # the search ran on Ray too
    assert_same_index(local, distributed)


@needs_ray
@pytest.mark.model
def test_an_update_with_the_ray_engine_embeds_only_the_changed_articles(
        built: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    local, distributed = tmp_path / "local", tmp_path / "ray"
    shutil.copytree(built[0], local)
    shutil.copytree(built[1], distributed)
    before = vectors_by_id(opened(distributed))
    records = [a.to_dict() for a in load_articles(sample_corpus_path())]
    changed = [dict(r, body=r["body"] + " An update: the council answered on Friday.")
               for r in records[:3]]
    changes = tmp_path / "changes.jsonl"
    changes.write_text("".join(json.dumps(r) + "\n" for r in changed))

    code, out, err = cli("update", str(changes), "--index", str(distributed), "--engine", "ray",
                         "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["embedded"], report["changed"], report["unchanged"]) == (3, 3, 153)
    build_index(local, [changes], incremental=True)
    assert_same_index(local, distributed)
    after = vectors_by_id(opened(distributed))
    edited = {r["id"] for r in changed}
    assert all(np.array_equal(after[k], before[k]) for k in before if k not in edited)
    assert all(float(after[k] @ before[k]) < 0.9999 for k in edited)  # they were re-embedded


def test_the_engine_is_the_flag_then_the_environment_then_local(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECOMMENDER_ENGINE", raising=False)
    assert isinstance(resolve_engine(), LocalEngine)
    monkeypatch.setenv("RECOMMENDER_ENGINE", "ray")
    assert isinstance(resolve_engine(), RayEngine)
    assert isinstance(resolve_engine("local"), LocalEngine)
    remote = resolve_engine(None, "ray://head:10001")
    assert isinstance(remote, RayEngine) and remote.address == "ray://head:10001"
    monkeypatch.setenv("RECOMMENDER_ENGINE", "spark")
    with pytest.raises(EngineError, match="unknown engine 'spark'"):
        resolve_engine()


def test_an_address_without_the_ray_engine_is_a_one_line_error(
        tmp_path: Path, tiny_jsonl: Path) -> None:
    code, _, err = cli("build", str(tiny_jsonl), "--index", str(tmp_path / "i"),
                       "--model", "hashing:64", "--address", "auto")
    assert code == 1 and "needs --engine ray" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "i" / "CURRENT").exists()


def test_the_ray_engine_without_ray_installed_is_a_one_line_error(
        tmp_path: Path, tiny_jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, _, err = cli("build", str(tiny_jsonl), "--index", str(tmp_path / "i"),
                       "--model", "hashing:64", "--quiet", env={"RECOMMENDER_ENGINE": "ray"})
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "pip install 'recommender[ray]'" in err


class BrokenEmbedder(HashingEmbedder):
    """Fails inside the Ray worker, as a model that cannot load would."""

    def embed(self, texts: Sequence[str], progress: Any = None) -> np.ndarray:
        raise RecommenderError("cannot load model 'broken': no such file")


@needs_ray
def test_a_failure_in_a_ray_worker_is_a_one_line_error_and_publishes_nothing(
        local_ray: None, tmp_path: Path, tiny_jsonl: Path) -> None:
    with pytest.raises(EngineError, match=r"^a Ray worker failed: cannot load model 'broken'"):
        build_index(tmp_path / "i", [tiny_jsonl], embedder=BrokenEmbedder(64),
                    engine=RayEngine())
    assert not (tmp_path / "i" / "CURRENT").exists()
