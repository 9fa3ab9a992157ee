from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recommender import InputError, InvalidArticle, load_articles, read_articles


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_jsonl_fields_are_parsed_and_unknown_fields_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", json.dumps({
        "id": "x1", "title": "A title", "body": "Body.", "url": "https://e.org/x1",
        "published_at": "2026-11-03T08:15:00Z", "updated_at": "2026-11-04",
        "section": "world", "tags": ["a", "b"], "language": "en", "status": "draft",
        "paywalled": True, "story_id": "s1", "author": "Ana", "word_count": 3}) + "\n")
    [article] = load_articles(path)
    assert article.id == "x1" and article.status == "draft" and article.paywalled
    assert article.published_at == datetime(2026, 11, 3, 8, 15, tzinfo=UTC)
    assert article.updated_at == datetime(2026, 11, 4, tzinfo=UTC)
    assert article.tags == ("a", "b") and article.story_id == "s1"
    assert article.metadata == {"author": "Ana", "word_count": 3}


def test_defaults_for_optional_fields() -> None:
    [article] = load_articles([{"id": "1", "title": "T"}])
    assert article.status == "published" and not article.paywalled
    assert article.body == "" and article.tags == () and article.published_at is None


def test_csv_uses_the_same_columns_with_pipe_separated_tags(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv",
                 "id,title,body,tags,paywalled,published_at,extra\n"
                 'c1,"Hello, world",Body text,politics|local,true,2026-10-02,kept\n'
                 "c2,Second,,,,,\n")
    articles = load_articles(path)
    assert [a.id for a in articles] == ["c1", "c2"]
    assert articles[0].title == "Hello, world"
    assert articles[0].tags == ("politics", "local") and articles[0].paywalled
    assert articles[0].metadata == {"extra": "kept"}


def test_invalid_records_name_file_line_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl",
                 '{"id": "ok", "title": "Fine"}\n'
                 '{"id": "", "title": "No id"}\n'
                 "\n"
                 '{"id": "t", "title": "T", "status": "gone"}\n'
                 "{not json\n")
    report = read_articles(path)
    assert [a.id for a in report.articles] == ["ok"]
    errors = [(p.line, p.reason) for p in report.errors]
    assert errors[0] == (2, "missing or empty id")
    assert errors[1][0] == 4 and "unknown status 'gone'" in errors[1][1]
    assert errors[2][0] == 5 and errors[2][1].startswith("invalid JSON")
    with pytest.raises(InvalidArticle, match=r"bad.jsonl:2: missing or empty id"):
        load_articles(path)


def test_missing_or_unknown_input_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_articles(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match=r"expected \.jsonl, \.csv or \.html"):
        read_articles(write(tmp_path / "a.xml", "<a/>"))
