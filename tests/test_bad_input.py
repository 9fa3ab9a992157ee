"""Every kind of bad record: reported with file, line and reason; valid records still land;
nothing already in the index is lost."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from recommender import HashingEmbedder, Recommender, build_index, read_articles
from recommender.cli import main


def bad_file(path: Path) -> Path:
    good = {"title": "Fine article", "body": "Some words about nothing in particular."}
    lines: list[bytes] = [
        json.dumps({"id": "ok1", **good}).encode(),                                   # 1
        b'{"id": "broken", "title": "no closing brace"',                               # 2
        json.dumps({"title": "No id"}).encode(),                                       # 3
        json.dumps({"id": "  ", "title": "Blank id"}).encode(),                        # 4
        json.dumps({"id": "t01", "body": "no title"}).encode(),                        # 5
        json.dumps({"id": "dup", **good}).encode(),                                    # 6
        json.dumps({"id": "dup", "title": "Second dup wins", "body": "x"}).encode(),   # 7
        json.dumps({"id": "d1", **good, "published_at": "last Tuesday"}).encode(),     # 8
        json.dumps({"id": "s1", **good, "status": "archived"}).encode(),               # 9
        json.dumps({"id": "w1", "title": 42}).encode(),                                # 10
        json.dumps({"id": "w2", **good, "tags": "a,b"}).encode(),                      # 11
        json.dumps({"id": "w3", **good, "paywalled": "maybe"}).encode(),               # 12
        b'{"id": "u1", "title": "Caf\xe9 latin-1"}',                                   # 13
        json.dumps({"id": "e1", "title": "Empty body", "body": ""}).encode(),          # 14
        json.dumps({"id": "big", "title": "Huge", "body": "word " * 1_000_000}).encode(),  # 15
        json.dumps(["not", "an", "object"]).encode(),                                  # 16
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


EXPECTED_ERRORS = {
    2: "invalid JSON",
    3: "missing or empty id",
    4: "missing or empty id",
    5: "missing or empty title",
    8: "published_at is not an ISO 8601 date or datetime: 'last Tuesday'",
    9: "unknown status 'archived'",
    10: "title must be a string, got int",
    11: "tags must be a list of strings",
    12: "paywalled must be a boolean, got 'maybe'",
    13: "not valid UTF-8",
    16: "record must be a JSON object, got list",
}
EXPECTED_WARNINGS = {
    7: "duplicate id: replaces the record at",
    14: "empty body",
    15: "cut to 200,000",
}


def test_each_bad_record_kind_is_reported_with_line_and_reason(tmp_path: Path) -> None:
    path = bad_file(tmp_path / "bad.jsonl")
    report = read_articles(path)
    errors = {p.line: p for p in report.errors}
    assert set(errors) == set(EXPECTED_ERRORS)
    for line, reason in EXPECTED_ERRORS.items():
        assert reason in errors[line].reason, (line, errors[line].reason)
        assert errors[line].source == str(path)
    warnings = {p.line: p.reason for p in report.warnings}
    for line, reason in EXPECTED_WARNINGS.items():
        assert reason in warnings[line]
    assert f"{path}:6" in warnings[7]
    assert {a.id for a in report.articles} == {"ok1", "dup", "e1", "big"}
    assert next(a for a in report.articles if a.id == "dup").title == "Second dup wins"


def test_valid_records_land_and_bad_ones_do_not_cost_existing_articles(
        tiny_index: Path, tmp_path: Path) -> None:
    # t01 is in the index; its new record (line 5) is invalid: the old t01 must stay.
    report = build_index(tiny_index, [bad_file(tmp_path / "bad.jsonl")],
                         embedder=HashingEmbedder(64))
    assert report.invalid == len(EXPECTED_ERRORS)
    rec = Recommender.open(tiny_index)
    assert {"ok1", "dup", "e1", "big", "t01"} <= set(rec.ids())
    assert rec.article("t01").title == "Harbour bridge collapses in Portmere"
    # one line had no readable id, so nothing else was removed either
    assert len(rec) == 12 + 4


def test_cli_reports_each_problem_and_exits_3(tiny_index: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["update", str(bad_file(tmp_path / "bad.jsonl")),
                                       "--index", str(tiny_index)])
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert sum(": error: " in line for line in lines) == len(EXPECTED_ERRORS)
    assert any(line.startswith(f"{tmp_path / 'bad.jsonl'}:9 (id 's1'): error: unknown status")
               for line in lines)
    assert "invalid 11" in result.stdout


def test_cli_json_report_lists_problems(tiny_index: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["update", str(bad_file(tmp_path / "bad.jsonl")),
                                       "--index", str(tiny_index), "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 3 and data["invalid"] == 11 and data["added"] == 4
    assert {"source", "line", "id", "severity", "reason"} == set(data["problems"][0])


def test_strict_cli_aborts_before_publishing(tiny_index: Path, tmp_path: Path) -> None:
    before = (tiny_index / "CURRENT").read_text()
    result = CliRunner().invoke(main, ["update", str(bad_file(tmp_path / "bad.jsonl")),
                                       "--index", str(tiny_index), "--strict"])
    assert result.exit_code == 3 and "nothing was published" in result.stderr
    assert (tiny_index / "CURRENT").read_text() == before


def test_stale_leftovers_of_a_crash_are_cleaned_by_the_next_build(tiny_index: Path,
                                                                 tiny_jsonl: Path) -> None:
    stale = tiny_index / "versions" / ".tmp-v20260101T000000-dead00"
    stale.mkdir()
    (stale / "vectors.npy").write_bytes(b"half written")
    (tiny_index / "CURRENT.tmp").write_text("v-half\n")
    build_index(tiny_index, [tiny_jsonl], embedder=HashingEmbedder(64))
    assert not stale.exists() and not (tiny_index / "CURRENT.tmp").exists()
