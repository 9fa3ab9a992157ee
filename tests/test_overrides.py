"""Editorial overrides under hostile use: rules checked when written and when read, a bad
file never blanks the site, and `block` works whatever else is broken (fake embedder)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from jinja2 import Environment

from recommender import Recommender
from recommender.cli import main
from recommender.integrations import jinja
from recommender.overrides import STAMP_SECONDS, OverridesFile, Pin

from .conftest import NOW


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def shown(rec: Recommender, article_id: str) -> list[str]:
    return [r.id for results in rec.page(article_id).values() for r in results]


def test_never_pairing_an_article_with_itself_is_refused(tiny_index: Path) -> None:
    code, _, err = cli("never-pair", "t01", "t01", "--index", str(tiny_index))
    assert code == 2 and err.strip() == "Error: cannot never-pair t01 with itself"
    assert not (tiny_index / "overrides.json").exists()


def test_a_self_pair_written_by_hand_is_ignored_alone(tiny_index: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tiny_index / "overrides.json").write_text(json.dumps(
        {"never_pair": [["t01", "t01"], ["t01", "t03"]], "blocks": [{"id": "t02"}]}))
    rec = Recommender.open(tiny_index, now=NOW)
    page = shown(rec, "t01")
    assert page and "t02" not in page and "t03" not in page  # the good entries apply
    assert any("paired with itself" in r.getMessage() for r in caplog.records)
    env = Environment(autoescape=True)
    jinja.install(env, rec)
    assert env.from_string("{{ page('t06').you_may_also_like|length }}").render() != "0"
    code, _, err = cli("block", "t09", "--index", str(tiny_index))
    assert code == 0 and "paired with itself" in err  # editing still works, and says so
    assert "t09" not in shown(rec, "t10")


def test_a_pin_obeys_never_pairs_and_blocks(tiny_index: Path) -> None:
    rec = Recommender.open(tiny_index, now=NOW)
    edits = OverridesFile(tiny_index)
    edits.pin(Pin("t01", "t06", "see_also"), now=NOW)
    assert rec.related("t01", "see_also")[0].id == "t06"
    code, _, err = cli("never-pair", "t01", "t06", "--index", str(tiny_index))
    assert code == 0
    assert "t06" not in shown(rec, "t01")
    edits.pin(Pin("t01", "t07", "you_may_also_like"), now=NOW)
    edits.block("t07")
    assert "t07" not in shown(rec, "t01")
    code, _, err = cli("pin", "t01", "t07", "--index", str(tiny_index), "--slot",
                       "you_may_also_like")
    assert code == 0 and "'t07' is blocked: the pin shows nothing" in err


def test_an_article_pinned_in_two_slots_shows_once_on_the_page(tiny_index: Path) -> None:
    rec = Recommender.open(tiny_index, now=NOW)
    edits = OverridesFile(tiny_index)
    edits.pin(Pin("t01", "t11", "see_also"), now=NOW)
    edits.pin(Pin("t01", "t11", "you_may_also_like"), now=NOW)
    page = rec.page("t01")
    assert [r.id for r in page["see_also"]][:1] == ["t11"]
    assert "t11" not in [r.id for r in page["you_may_also_like"]]


def test_a_truncated_overrides_file_keeps_the_last_good_overrides(
        tiny_index: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="recommender")
    rec = Recommender.open(tiny_index, now=NOW)
    OverridesFile(tiny_index).block("t02", "legal")
    assert "t02" not in shown(rec, "t01")
    path = tiny_index / "overrides.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a crash mid-save by another tool
    time.sleep(STAMP_SECONDS)  # what another process writes is seen within STAMP_SECONDS
    for _ in range(3):
        page = rec.page("t01")
        assert page["you_may_also_like"] and "t02" not in [r.id for v in page.values() for r in v]
    errors = [r for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(errors) == 1  # once per change of the file, not per request
    fresh = Recommender.open(tiny_index, now=NOW)  # a process started after the damage
    assert fresh.page("t01")["you_may_also_like"] and "t02" not in shown(fresh, "t01")
    # and an emergency takedown still works: the broken file is kept aside, not lost
    code, _, err = cli("block", "t03", "--index", str(tiny_index))
    assert code == 0 and "moved it to" in err
    assert json.loads(path.read_text())["blocks"] == [{"id": "t02", "reason": "legal"},
                                                       {"id": "t03"}]
    assert [p.read_text() for p in tiny_index.glob("overrides.json.broken-*")] == \
        [text[: len(text) // 2]]
    assert not {"t02", "t03"} & set(shown(rec, "t01"))


def test_block_works_with_a_broken_recommender_toml(tiny_index: Path) -> None:
    (tiny_index / "recommender.toml").write_text("[slots.see_also\nk = 2\n")
    code, out, _ = cli("block", "t02", "--index", str(tiny_index))
    assert code == 0 and out.strip() == "blocked t02"
    code, _, err = cli("pin", "t01", "t03", "--index", str(tiny_index))
    assert code == 0 and "the slot is not checked" in err


def test_until_a_date_includes_that_day_in_utc(tiny_index: Path) -> None:
    code, out, _ = cli("pin", "t01", "t11", "--index", str(tiny_index), "--until", "2099-12-31")
    assert code == 0 and "lapses at 2100-01-01T00:00:00Z" in out
    last_minute = datetime(2099, 12, 31, 23, 59, tzinfo=UTC)
    assert Recommender.open(tiny_index, now=last_minute).related("t01", "see_also")[0].id \
        == "t11"
    after = Recommender.open(tiny_index, now=last_minute + timedelta(minutes=1))
    assert "t11" not in [r.id for r in after.related("t01", "see_also")]


@pytest.mark.parametrize(("args", "message"), [
    (["t01", "t01"], "Error: cannot pin t01 on its own page"),
    (["t01", "t02", "--until", "2020-01-01"],
     "Error: the pin would lapse at 2020-01-02T00:00:00Z, which is already past"),
])
def test_a_pin_to_itself_or_already_lapsed_is_refused(tiny_index: Path, args: list[str],
                                                     message: str) -> None:
    code, _, err = cli("pin", *args, "--index", str(tiny_index))
    assert code == 2 and err.strip() == message
    assert not (tiny_index / "overrides.json").exists()


@pytest.mark.parametrize(("target", "warning"), [
    ("t04", "'t04' is draft: it is shown nowhere until it is published"),
    ("t05", "'t05' is deleted"),
    ("zz9", "'zz9' is not in the index (yet)"),
])
def test_a_pin_to_a_withdrawn_or_unknown_article_warns(tiny_index: Path, target: str,
                                                       warning: str) -> None:
    code, _, err = cli("pin", "t01", target, "--index", str(tiny_index))
    assert code == 0 and f"warning: {warning}" in err


def test_an_editor_gives_up_waiting_for_the_lock(tiny_index: Path) -> None:
    with open(tiny_index / ".overrides.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another editor, stuck
        started = time.monotonic()
        code, _, err = cli("block", "t02", "--index", str(tiny_index),
                           env={"RECOMMENDER_LOCK_TIMEOUT": "0.3"})
        assert time.monotonic() - started < 5
    assert code == 1 and "is being edited by" in err and "gave up after 0.3 s" in err
    assert len(err.strip().splitlines()) == 1
    assert cli("block", "t02", "--index", str(tiny_index))[0] == 0  # free again


def test_a_save_killed_midway_leaves_the_file_whole_and_its_temp_file_is_removed(
        tiny_index: Path) -> None:
    OverridesFile(tiny_index).block("t02")
    before = (tiny_index / "overrides.json").read_text()
    script = ("import sys; from recommender.overrides import OverridesFile; "
              "OverridesFile(sys.argv[1]).block('t03')")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent),
               RECOMMENDER_CRASH_AT="overrides-temp-written")
    proc = subprocess.run([sys.executable, "-c", script, str(tiny_index)], env=env)
    assert proc.returncode == -signal.SIGKILL
    assert (tiny_index / "overrides.json").read_text() == before
    assert list(tiny_index.glob(".overrides-*"))  # the kill left its temp file
    OverridesFile(tiny_index).block("t04")
    assert not list(tiny_index.glob(".overrides-*"))
    assert set(OverridesFile(tiny_index).load().blocks) == {"t02", "t04"}
