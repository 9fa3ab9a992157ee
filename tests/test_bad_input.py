"""Every kind of bad record: reported with file, line and reason; valid records still land;
nothing already in the index is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recommender import HashingEmbedder, Recommender, build_index, read_articles
from recommender.cli import main

from .conftest import NOW


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


def test_status_is_read_in_any_case_and_withdraws_the_article(tiny_index: Path,
                                                              tmp_path: Path) -> None:
    rec = Recommender.open(tiny_index, reload_interval=0, now=NOW)
    shown_on = [aid for aid in rec.ids()
                if "t02" in [r.id for v in rec.page(aid).values() for r in v]]
    assert shown_on  # t02 is on other articles' pages before
    source = tmp_path / "status.jsonl"
    source.write_text(json.dumps({"id": "t02", "title": "Portmere bridge collapse",
                                  "status": "DELETED"}) + "\n" +
                      json.dumps({"id": "t03", "title": "Rebuild", "status": " Draft "}) + "\n")
    report = build_index(tiny_index, [source], embedder=HashingEmbedder(64), incremental=True)
    assert report.invalid == 0 and report.withdrawn == 2
    assert rec.article("t02").status == "deleted" and rec.article("t03").status == "draft"
    for aid in rec.ids():
        assert not {"t02", "t03"} & {r.id for v in rec.page(aid).values() for r in v}


def test_a_deeply_nested_line_or_an_out_of_range_date_costs_only_its_record(
        tiny_index: Path, tmp_path: Path) -> None:
    source = tmp_path / "hostile.jsonl"
    source.write_text(
        json.dumps({"id": "ok1", "title": "Fine"}) + "\n" +
        '{"id": "deep", "title": "x", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}\n" +
        json.dumps({"id": "old", "title": "Old", "published_at": "0001-01-01T00:00:00+05:00"})
        + "\n")
    result = CliRunner().invoke(main, ["update", str(source), "--index", str(tiny_index)])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert any(line.startswith(f"{source}:2") and "nested too deeply" in line
               for line in errors)
    assert any(line.startswith(f"{source}:3 (id 'old')") and "out of range" in line
               for line in errors)
    assert "ok1" in Recommender.open(tiny_index)


def test_an_unterminated_csv_quote_is_an_error_on_its_line_and_later_rows_land(
        tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("id,title,body\n"
                      "c1,First,Body one\n"
                      'c2,"Broken title,Body two\n'
                      "c3,Third,Body three\n"
                      'c4,"Quoted, fine",Body four\n'
                      "c5,Fifth,Body five\n")
    report = read_articles(source)
    assert [(p.line, p.reason.split(":")[0]) for p in report.errors] == [(3, "invalid CSV")]
    assert [a.id for a in report.articles] == ["c1", "c3", "c4", "c5"]
    assert report.articles[2].title == "Quoted, fine"


def test_a_multi_line_quoted_csv_body_is_one_record(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text('id,title,body\nc1,First,"Line one\n\nLine two"\nc2,Second,Body\n')
    report = read_articles(source)
    assert report.errors == [] and [a.id for a in report.articles] == ["c1", "c2"]
    assert report.articles[0].body == "Line one\n\nLine two"


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JavaScript:alert(1)", "  javascript:alert(1)",
    "java\tscript:alert(1)", "\x01javascript:alert(1)", "data:text/html,<script>x</script>",
    "DATA:text/html;base64,PHNjcmlwdD4=", "vbscript:msgbox", "file:///etc/passwd",
])
def test_a_url_that_is_not_http_or_relative_is_never_kept_as_a_link(url: str) -> None:
    report = read_articles([{"id": "x", "title": "T", "body": "b", "url": url}])
    [article] = report.articles
    assert article.url is None
    assert any("is not http(s) or relative" in p.reason for p in report.warnings)


@pytest.mark.parametrize("url", ["https://news.example.org/a1", "HTTP://news.example.org/a1",
                                 "/news/a1", "a1.html", "//cdn.example.org/a1", "?id=a1"])
def test_http_and_relative_urls_are_kept(url: str) -> None:
    [article] = read_articles([{"id": "x", "title": "T", "body": "b", "url": url}]).articles
    assert article.url == url


def test_many_records_with_one_problem_print_a_few_lines_and_a_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recommender.articles import Problem
    from recommender.build import BuildReport
    from recommender.cli.index_commands import print_report

    report = BuildReport(index="i", problems=[
        Problem("big.jsonl", n, "empty body: only the title is embedded", f"x{n}", "warning")
        for n in range(1, 200_001)])
    print_report(report, as_json=False, quiet=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"big.jsonl:{n} (id 'x{n}'): warning: empty body: only the title is "
                     "embedded" for n in (1, 2, 3)] + \
        ["warning: 199,997 more like this: empty body: only the title is embedded"]


def test_a_build_of_many_tiny_records_reports_each_kind_of_problem_briefly(
        tmp_path: Path) -> None:
    source = tmp_path / "tiny.jsonl"
    source.write_text("".join(json.dumps({"id": f"x{i}", "title": f"Title {i}"}) + "\n"
                              for i in range(2_000)) + '{"id": "bad"}\n')
    result = CliRunner().invoke(main, ["build", str(source), "--index", str(tmp_path / "i"),
                                       "--model", "hashing:64", "--neighbours", "5"])
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 5 and "1,997 more like this: empty body" in lines[3]
    assert lines[4].endswith("error: missing or empty title")
