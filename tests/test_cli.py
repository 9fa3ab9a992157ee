"""The CLI end to end with CliRunner and the fake embedder (--model hashing:64)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recommender.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def built(tmp_path: Path, tiny_jsonl: Path) -> str:
    index = str(tmp_path / "cli-index")
    code, out, _ = run("build", str(tiny_jsonl), "--index", index, "--model", "hashing:64")
    assert code == 0, out
    assert "12 articles (9 published)" in out and "added 12" in out
    return index


def test_build_then_related_and_similar_json(tmp_path: Path, tiny_jsonl: Path) -> None:
    index = built(tmp_path, tiny_jsonl)
    code, out, _ = run("related", "t01", "--index", index, "--slot", "see_also", "--json")
    assert code == 0
    results = json.loads(out)
    assert isinstance(results, list) and results
    assert set(results[0]) == {"id", "title", "url", "score", "reason", "published_at",
                               "section", "status"}
    reason = results[0]["reason"]
    assert set(reason) >= {"semantic", "lexical", "relevance", "freshness"}
    assert reason["relevance"] * reason["freshness"] == pytest.approx(results[0]["score"],
                                                                      abs=1e-3)

    code, out, _ = run("similar", "t01", "--index", index, "-k", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 3
    assert "t01" not in [r["id"] for r in json.loads(out)]


def test_info_json_reports_count_model_dimension(tmp_path: Path, tiny_jsonl: Path) -> None:
    index = built(tmp_path, tiny_jsonl)
    code, out, _ = run("info", "--json", env={"RECOMMENDER_INDEX": index})
    data = json.loads(out)
    assert code == 0 and data["count"] == 12 and data["model"] == "hashing:64"
    assert data["dimension"] == 64 and data["published_count"] == 9


def test_table_output_is_readable(tmp_path: Path, tiny_jsonl: Path) -> None:
    index = built(tmp_path, tiny_jsonl)
    code, out, _ = run("related", "t01", "--index", index, "--slot", "see_also")
    assert code == 0 and "1. " in out and "[t0" in out


def test_unknown_id_is_exit_2_with_one_line(tmp_path: Path, tiny_jsonl: Path) -> None:
    index = built(tmp_path, tiny_jsonl)
    code, out, err = run("related", "zzz", "--index", index)
    assert code == 2
    assert err.strip() == "Error: unknown article id: 'zzz'"
    assert "Traceback" not in out + err


def test_wrong_model_update_is_a_clear_error(tmp_path: Path, tiny_jsonl: Path) -> None:
    index = built(tmp_path, tiny_jsonl)
    code, _, err = run("update", str(tiny_jsonl), "--index", index, "--model", "hashing:32")
    assert code == 1
    assert err.strip().startswith("Error: index was built with model 'hashing:64', not "
                                  "'hashing:32'")
    assert len(err.strip().splitlines()) == 1


def test_unreadable_input_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run("build", str(tmp_path / "missing.jsonl"), "--index",
                       str(tmp_path / "i"), "--model", "hashing:64")
    assert code == 1
    assert err.strip() == f"Error: cannot read input '{tmp_path / 'missing.jsonl'}': no such file"


def test_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run("info", "--index", str(tmp_path / "nothing"))
    assert code == 1 and "no index at" in err and len(err.strip().splitlines()) == 1


def test_piped_build_shows_no_progress_bar(tmp_path: Path, tiny_jsonl: Path) -> None:
    code, out, err = run("build", str(tiny_jsonl), "--index", str(tmp_path / "q"),
                         "--model", "hashing:64", "--quiet")
    assert code == 0 and out == "" and err == ""


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name, command in main.commands.items():
        assert command.help, f"{name} has no help text"
        assert f"recommender {name}" in readme, f"{name} is not documented in README.md"


def test_every_configuration_key_is_documented_in_the_readme() -> None:
    import dataclasses

    from recommender.config import RankingConfig, SlotPolicy

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for cls in (RankingConfig, SlotPolicy):
        for f in dataclasses.fields(cls):
            if f.name != "name":
                assert f"`{f.name}`" in readme, f"{cls.__name__}.{f.name} is not in README.md"


def test_the_readme_states_the_ranking_defaults_of_the_code() -> None:
    import dataclasses

    from recommender.config import DEFAULT_SLOTS, RankingConfig

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for f in dataclasses.fields(RankingConfig):
        assert f"| `{f.name}` | {f.default:g} |" in readme, f.name
    see_also, more = DEFAULT_SLOTS["see_also"], DEFAULT_SLOTS["you_may_also_like"]
    assert f"| `min_score` | 0.25 | {see_also.min_score:g} | {more.min_score:g} |" in readme
    assert (f"| `min_score_other_language` | 0.35 | {see_also.min_score_other_language:g} | "
            f"{more.min_score_other_language:g} |") in readme


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):readme.index("## Articles in")]
    commands = [line for line in quick_start.splitlines() if line.startswith("pip install")]
    assert len(commands) == 2, commands  # one to run the demo, one to run the tests
    assert commands[0].endswith("recommender demo")
    ci_lines = (root / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci_lines
    assert "constraints.txt" in commands[0] and "constraints.txt" in commands[1]


def test_ci_installs_the_browser_and_requires_the_browser_test() -> None:
    root = Path(__file__).parent.parent
    ci = (root / ".ci" / "run").read_text()
    tests_at = ci.index("python -m pytest")
    assert -1 < ci.find("apt-get install -y -q chromium chromium-driver") < tests_at
    assert -1 < ci.find("export RECOMMENDER_BROWSER_TESTS=require") < tests_at
