"""recommender.toml under hostile use: every value is checked against the dataclasses when it
is read, a mistyped name is an error, a running reader follows edits and a bad edit never
blanks the site (fake embedder)."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jinja2 import Environment

from recommender import ConfigError, Recommender
from recommender.cli import main
from recommender.config import RankingConfig, SlotPolicy, load_config, parse_config
from recommender.integrations import jinja
from recommender.integrations.safe import SafeRecommender
from recommender.ranking import Ranker

from .conftest import NOW


def ids(results: list[Any]) -> list[str]:
    return [r.id for r in results]


def write_toml(index: Path, text: str) -> Path:
    path = index / "recommender.toml"
    path.write_text(text)
    # a later edit must look like one even within the file system's timestamp resolution
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    return path


@pytest.mark.parametrize(("line", "message"), [
    ('sections_exclude = "local"', 'sections_exclude = "local": must be a list of strings'),
    ('tags_include = "politics"', 'tags_include = "politics": must be a list of strings'),
    ('one_per_event = "false"', 'one_per_event = "false": must be true or false'),
    ("k = 2.5", "k = 2.5: must be a whole number"),
    ("k = true", "k = true: must be a whole number"),
    ("min_score = nan", "min_score = nan: must be a finite number"),
    ("min_score = inf", "min_score = inf: must be a finite number"),
    ("half_life_days = -30", "half_life_days = -30: must not be negative"),
    ('min_score = "0.4"', 'min_score = "0.4": must be a number'),
    ("k = -1", "k = -1: must not be negative"),
    ('sections_exclude = ["local", 3]', 'sections_exclude = ["local", 3]: must be a string'),
    ("kk = 1", "unknown key 'kk' (kk = 1; did you mean 'k'?)"),
])
def test_a_wrong_value_is_an_error_naming_file_key_and_value(
        tiny_index: Path, line: str, message: str) -> None:
    path = write_toml(tiny_index, f"[slots.you_may_also_like]\n{line}\n")
    expected = f"{path} [slots.you_may_also_like]: {message}"
    with pytest.raises(ConfigError) as raised:
        Recommender.open(tiny_index)
    assert str(raised.value).startswith(expected), str(raised.value)
    result = CliRunner().invoke(main, ["config", "check", "--index", str(tiny_index)])
    assert result.exit_code == 1
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"Error: {expected}")


def test_ranking_values_are_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[ranking]\nlexical_weight = -0.5\nsemantic_weight = true\n")
    with pytest.raises(ConfigError, match=r"r\.toml \[ranking\]: semantic_weight = true: "
                                          "must be a number"):
        load_config(path=path)


@pytest.mark.parametrize("cls", [SlotPolicy, RankingConfig])
def test_every_field_is_checked_from_its_type_whatever_its_name(cls: type[Any]) -> None:
    # Derived from the dataclass: a field added tomorrow is checked the same way.
    table = "slots.see_also" if cls is SlotPolicy else "ranking"
    for f in dataclasses.fields(cls):
        if f.name == "name":
            continue
        wrap = ({"slots": {"see_also": {}}} if cls is SlotPolicy else {"ranking": {}})
        target = wrap["slots"]["see_also"] if cls is SlotPolicy else wrap["ranking"]
        target[f.name] = {"a": "table"}  # never a valid value of any field
        with pytest.raises(ConfigError, match=rf"\[{table}\]: {f.name} = "):
            parse_config(wrap, "f.toml")
        if f.default is not None and f.default is not dataclasses.MISSING:
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            target[f.name] = default  # its own default is always accepted
            parse_config(wrap, "f.toml")


def test_a_list_of_strings_is_what_filters_take(tmp_path: Path, tiny_index: Path) -> None:
    write_toml(tiny_index, '[slots.you_may_also_like]\nsections_exclude = ["world"]\n'
                           "fallback = false\n")
    rec = Recommender.open(tiny_index, now=NOW)
    assert rec.policy("you_may_also_like").sections_exclude == ("world",)
    assert rec.related("t01") == []  # every tiny article is in "world"


def test_a_mistyped_slot_name_is_an_error_and_a_new_slot_is_declared(tiny_index: Path) -> None:
    path = write_toml(tiny_index, "[slots.you_may_also_lik]\nk = 3\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "unknown slot 'you_may_also_lik'" in result.stderr
    assert "did you mean 'you_may_also_like'?" in result.stderr
    write_toml(tiny_index, '[slots.sidebar]\nbased_on = "see_also"\nk = 1\n'
                           "[slots.more]\nnew = true\nk = 3\n")
    rec = Recommender.open(tiny_index, now=NOW)
    assert rec.policy("sidebar") == dataclasses.replace(rec.policy("see_also"), name="sidebar",
                                                         k=1)
    assert rec.policy("more") == SlotPolicy(name="more", k=3)
    result = CliRunner().invoke(main, ["config", "check", "--index", str(tiny_index)])
    assert result.exit_code == 0
    assert "ok; slots see_also (k=2), you_may_also_like (k=6), sidebar (k=1), more (k=3)" in \
        result.stdout


def test_a_running_reader_follows_edits_and_keeps_the_last_good_config(
        tiny_index: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="recommender")
    rec = Recommender.open(tiny_index, reload_interval=0, now=NOW)
    default = len(rec.related("t06"))  # two related, filled up to fallback_links (3)
    assert default == 3
    write_toml(tiny_index, "[slots.you_may_also_like]\nk = 2\n[ranking]\ntag_weight = 0.5\n")
    assert len(rec.related("t06")) == 2 and rec.config.ranking.tag_weight == 0.5
    assert rec.related("t06")[0].reason["tags"] == 1.0  # the ranking follows as well
    write_toml(tiny_index, '[slots.you_may_also_like]\nk = "3"\n')  # a bad edit
    for _ in range(3):
        assert len(rec.related("t06")) == 2 and len(rec.page("t06")["you_may_also_like"]) == 2
    [logged] = [r for r in caplog.records if "keeping the configuration" in r.getMessage()]
    assert 'k = "3"' in logged.getMessage()
    write_toml(tiny_index, "[slots.you_may_also_like]\nk = 5\nfallback_links = 5\n")
    assert len(rec.related("t06")) == 5
    (tiny_index / "recommender.toml").unlink()  # gone: the built-in defaults
    assert len(rec.related("t06")) == default


def test_a_page_starting_with_a_broken_config_is_not_blank(
        tiny_index: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_toml(tiny_index, "[slots.see_also\nk = 1\n")  # broken TOML
    env = Environment(autoescape=True)
    jinja.install(env, SafeRecommender(tiny_index))
    rendered = env.from_string(
        "{% set s = page(article.id) %}{{ s.see_also|length }}/{{ s.you_may_also_like|length }}"
    ).render(article={"id": "t01"})
    assert rendered.split("/")[0] != "0" and rendered.split("/")[1] != "0"
    assert any("serving the built-in defaults" in r.getMessage() for r in caplog.records)


def test_a_slot_that_fails_renders_empty_alone(tiny_index: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    write_toml(tiny_index, '[slots.sidebar]\nbased_on = "you_may_also_like"\nk = 2\n')
    rec = Recommender.open(tiny_index, now=NOW)
    select = Ranker.select

    def broken_sidebar(self: Ranker, policy: SlotPolicy, *args: Any, **kwargs: Any) -> Any:
        if policy.name == "sidebar":
            raise TypeError("a bug in one slot")
        return select(self, policy, *args, **kwargs)

    monkeypatch.setattr(Ranker, "select", broken_sidebar)
    page = rec.page("t01")
    assert page["sidebar"] == [] and page["see_also"] and page["you_may_also_like"]
    [logged] = [r for r in caplog.records if "slot 'sidebar' left empty" in r.getMessage()]
    assert logged.exc_info is not None


def test_config_check_also_checks_the_overrides(tiny_index: Path) -> None:
    (tiny_index / "overrides.json").write_text('{"never_pair": [["t01", "t01"]]}')
    result = CliRunner().invoke(main, ["config", "check", "--index", str(tiny_index)])
    assert result.exit_code == 1
    assert "paired with itself" in result.stderr
    assert "no such file; the built-in defaults apply" in result.stdout
