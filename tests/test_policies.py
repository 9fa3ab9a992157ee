"""Slot policy mechanics, one rule at a time, with the fake (bag-of-words) embedder."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recommender import (
    ConfigError,
    Filters,
    HashingEmbedder,
    Recommender,
    SlotPolicy,
    build_index,
    load_config,
)
from recommender.cli import main
from recommender.config import Config, RankingConfig, parse_config
from recommender.overrides import OverridesFile, Pin

from .conftest import NOW

BRIDGE = "harbour bridge collapse portmere divers cables inquiry engineers steel"
BANK = "central bank interest rates inflation markets mortgage lenders borrowers"


def v(base: str, tag: str) -> str:
    """A text sharing `base`'s words plus five of its own: related, not a duplicate."""
    return base + " " + " ".join(f"{tag}w{j}" for j in range(5))


def art(aid: str, words: str, days_ago: float | None = 1, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": aid, "title": f"{aid} {words.split()[0]}",
                              "body": words, "section": "news", "language": "en"}
    if days_ago is not None:
        record["published_at"] = (NOW - timedelta(days=days_ago)).isoformat()
    record.update(extra)
    return record


def index_of(tmp_path: Path, records: list[dict[str, Any]], ranking: dict[str, Any] | None = None,
             **slot_changes: Any) -> Recommender:
    index = tmp_path / "idx"
    build_index(index, records, embedder=HashingEmbedder(256))
    config = Config(ranking=RankingConfig(**(ranking or {})))
    if slot_changes:
        config = dataclasses.replace(config, slots={
            name: dataclasses.replace(p, **slot_changes) for name, p in config.slots.items()})
    return Recommender.open(index, config=config, now=NOW)


def ids(results: list[Any]) -> list[str]:
    return [r.id for r in results]


# ------------------------------------------------------------------ 1. hybrid relevance

def test_relevance_is_the_configured_fusion_of_its_parts(tmp_path: Path) -> None:
    records = [art("s", BRIDGE, tags=["bridge", "port"]),
               art("a", v(BRIDGE, "update"), 2, tags=["bridge"]),
               art("b", v(BRIDGE, "rebuild_plan"), 9, tags=["port", "money"])]
    rec = index_of(tmp_path, records)
    index = rec.path
    w = RankingConfig(bias=-2.0, semantic_weight=2.0, lexical_weight=1.0, names_weight=0.5,
                      proximity_weight=0.25, semantic_proximity_weight=1.5,
                      lexical_proximity_weight=0.0, names_proximity_weight=0.0,
                      proximity_days=4.0, tag_weight=3.0)
    rec = Recommender.open(index, config=Config(ranking=w), now=NOW)
    for r in rec.similar("s"):
        parts = r.reason
        assert set(parts) >= {"semantic", "lexical", "names", "proximity", "tags", "relevance"}
        logit = (-2.0 + 2.0 * parts["semantic"] + 1.0 * parts["lexical"]
                 + 0.5 * parts["names"] + 3.0 * parts["tags"]
                 + parts["proximity"] * (0.25 + 1.5 * parts["semantic"]))
        assert parts["relevance"] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-3)
    found = {r.id: r.reason for r in rec.similar("s")}
    assert found["a"]["tags"] == pytest.approx(1 / 2)  # Jaccard
    assert found["b"]["tags"] == pytest.approx(1 / 3, abs=1e-4)
    # time proximity: exp(-days apart / proximity_days)
    assert found["a"]["proximity"] == pytest.approx(math.exp(-1 / 4), abs=1e-3)
    assert found["b"]["proximity"] == pytest.approx(math.exp(-8 / 4), abs=1e-3)


def test_names_shared_by_two_reports_raise_their_relevance(tmp_path: Path) -> None:
    body = "officials said the talks ended late on the second day without a statement"
    records = [art("s", body, title="Talks in Vellmar end", body=f"In Vellmar, Anton Brisk "
                   f"and Odile Marchetti met. {body}"),
               art("names", body, title="Talks end", body=f"Later, Anton Brisk and Odile "
                   f"Marchetti left Vellmar. {body}"),
               art("plain", body, title="Talks end", body=f"Later, the two leaders left "
                   f"the city. {body}")]
    rec = index_of(tmp_path, records)
    found = {r.id: r.reason for r in rec.similar("s")}
    assert found["names"]["names"] > 0.5 and found["plain"]["names"] == 0.0
    assert found["names"]["relevance"] > found["plain"]["relevance"]


# ------------------------------------------------------------------ 2. freshness

def test_time_is_measured_around_the_source_date(tmp_path: Path) -> None:
    """A fresh page measures from now; an archive page from its own date, so it still gets
    the links of its time (and nothing dated after now is ever shown)."""
    records = [art("s", BRIDGE, 0), art("new", v(BRIDGE, "one"), 2),
               art("old", v(BRIDGE, "two"), 400), art("archive", v(BRIDGE, "three"), 402),
               art("future", v(BRIDGE, "four"), -3)]
    rec = index_of(tmp_path, records, one_per_event=False, half_life_days=10.0,
                   max_age_days=365.0, min_score=0.0, fallback=False)
    results = {r.id: r for r in rec.related("s", k=5)}
    assert set(results) == {"new"}  # old ones beyond max_age_days, the future one not yet
    assert results["new"].reason["freshness"] == pytest.approx(0.5 ** (2 / 10), abs=1e-3)
    archive = {r.id: r for r in rec.related("old", k=5)}
    assert set(archive) == {"archive"}  # two days before it; "s" is 400 days after
    assert archive["archive"].reason["freshness"] == pytest.approx(0.5 ** (2 / 10), abs=1e-3)
    later = Recommender.open(rec.path, config=rec.config, now=NOW + timedelta(days=10))
    assert later.related("old", k=5)[0].reason["freshness"] == pytest.approx(
        0.5 ** (2 / 10), abs=1e-3)  # the same links as the page ages
    assert "future" in ids(later.related("s", k=5))  # its date has come


def test_window_relative_to_the_source_date(tmp_path: Path) -> None:
    records = [art("s", BRIDGE, 30), art("before", v(BRIDGE, "a"), 40),
               art("long_before", v(BRIDGE, "b"), 300), art("after", v(BRIDGE, "c"), 1)]
    rec = index_of(tmp_path, records, one_per_event=False, min_score=0.0,
                   window_before_days=60.0, window_after_days=5.0, max_age_days=None)
    assert set(ids(rec.related("s", k=5))) == {"before"}


def test_undated_articles_are_handled_explicitly(tmp_path: Path) -> None:
    records = [art("s", BRIDGE), art("undated", v(BRIDGE, "x"), None), art("dated", v(BRIDGE, "y"))]
    keep = index_of(tmp_path, records, one_per_event=False, min_score=0.0, undated_factor=0.5,
                    fallback=False)
    result = {r.id: r for r in keep.related("s", k=5)}
    assert result["undated"].reason["freshness"] == 0.5
    assert result["undated"].reason["proximity"] == 0.0  # no date, no closeness in time
    slot = keep.policy("you_may_also_like")
    drop = Recommender.open(keep.path, now=NOW, config=dataclasses.replace(
        keep.config, slots={slot.name: dataclasses.replace(slot, undated_factor=0.0)}))
    assert "undated" not in ids(drop.related("s", k=5))


# ------------------------------------------------------------------ 3. duplicates and stories

def test_never_a_copy_of_the_source(tmp_path: Path) -> None:
    records = [art("s", BRIDGE, title="Bridge falls in Portmere"),
               art("copy", BRIDGE, title="Bridge falls in Portmere | Wire report"),
               art("same_text", BRIDGE, title="Completely different headline"),
               art("other", v(BRIDGE, "new_findings"), title="Divers report")]
    rec = index_of(tmp_path, records, ranking={"story_relevance": 0.0}, one_per_event=False,
                   min_score=0.0)
    for slot in ("see_also", "you_may_also_like"):
        shown = ids(rec.related("s", slot=slot, k=5))
        assert "copy" not in shown and "same_text" not in shown
    assert "other" in ids(rec.related("s", slot="see_also"))


def test_one_link_per_event_by_story_id_and_by_meaning(tmp_path: Path) -> None:
    records = [art("s", BRIDGE, 5),
               art("f1", v(BRIDGE, "follow_up"), 4, story_id="st-b"),
               art("f2", v(BRIDGE, "second_follow"), 3, story_id="st-b"),
               art("g1", BANK, 2), art("g2", v(BANK, "again"), 1)]
    rec = index_of(tmp_path, records, ranking={"event_similarity": 0.6}, min_score=0.0,
                   fallback=False)
    shown = rec.related("s", k=6)
    assert len({"f1", "f2"} & set(ids(shown))) == 1      # story_id
    assert len({"g1", "g2"} & set(ids(shown))) == 1      # close in meaning and date
    kept = next(r for r in shown if r.id in ("f1", "f2"))
    assert set(kept.reason["event_collapsed_from"]) == {"f1", "f2"} - {kept.id}
    # the same articles weeks apart are separate events
    apart = [art("s", BRIDGE, 5), art("g1", BANK, 2), art("g2", v(BANK, "again"), 40)]
    assert {"g1", "g2"} <= set(ids(index_of(
        tmp_path / "apart", apart, ranking={"event_similarity": 0.6}, min_score=0.0,
        fallback=False).related("s", k=6)))


def test_a_saga_is_not_one_story(tmp_path: Path) -> None:
    """Stories are never chained: each article is compared with the source itself, so a
    follow-up of a follow-up that no longer resembles the source is not its story."""
    chain = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    words = chain.split()
    records = [art("s", " ".join(words[0:6]), 3),
               art("near", " ".join(words[1:7]), 3),
               art("far", " ".join(words[5:11]), 3)]
    rec = index_of(tmp_path, records, ranking={"story_relevance": 0.5, "bias": -2.0,
                                               "semantic_weight": 4.0, "lexical_weight": 0.0,
                                               "names_weight": 0.0, "proximity_weight": 0.0,
                                               "semantic_proximity_weight": 0.0,
                                               "lexical_proximity_weight": 0.0,
                                               "names_proximity_weight": 0.0})
    story = ids(rec.related("s", slot="see_also", k=5))
    assert story == ["near"]  # "far" is close to "near", not to the source


def test_never_a_translation_of_the_source(tmp_path: Path) -> None:
    records = [art("s", BRIDGE), art("es", v(BRIDGE, "puente"), language="es", translation_of="s"),
               art("de", v(BRIDGE, "brucke"), language="de"),        # detected: same story,
               art("en2", v(BRIDGE, "new_facts"), 0.5)]              # other language, same day
    rec = index_of(tmp_path, records, languages="any", min_score=0.0,
                   min_score_other_language=0.0, one_per_event=False)
    for slot in ("see_also", "you_may_also_like"):
        shown = ids(rec.related("s", slot=slot, k=5))
        assert "es" not in shown and "de" not in shown and "en2" in shown


# ------------------------------------------------------------------ 4. diversity

def test_mmr_trades_relevance_for_variety(tmp_path: Path) -> None:
    records = [art("s", v(BRIDGE, "") + BANK),
               art("a", v(BRIDGE, "extra")), art("a2", v(BRIDGE, "extra_words")),
               art("b", v(BANK, "note"))]
    plain = index_of(tmp_path, records, one_per_event=False, min_score=0.0, mmr_lambda=1.0,
                     fallback=False)
    assert ids(plain.related("s", k=2)) == ["a", "a2"]
    varied = Recommender.open(plain.path, now=NOW, config=dataclasses.replace(
        plain.config, slots={"you_may_also_like": dataclasses.replace(
            plain.policy("you_may_also_like"), mmr_lambda=0.3)}))
    assert ids(varied.related("s", k=2)) == ["a", "b"]


# ------------------------------------------------------------------ 5. filters

def test_section_tag_paywall_and_language_filters(tmp_path: Path) -> None:
    records = [art("s", BRIDGE),
               art("sport", v(BRIDGE, "a"), section="sport"),
               art("tagged", v(BRIDGE, "b"), tags=["sponsored"]),
               art("paid", v(BRIDGE, "c"), paywalled=True),
               art("spanish", v(BRIDGE, "d"), 10, language="es"),  # not a translation
               art("plain", v(BRIDGE, "e"))]
    base = dict(one_per_event=False, min_score=0.0, min_score_other_language=0.0,
                fallback=False, k=10)
    rec = index_of(tmp_path, records, **base, languages="any", paywalled="allow")
    assert set(ids(rec.related("s"))) == {"sport", "tagged", "paid", "spanish", "plain"}
    strict = index_of(tmp_path, records, **base, sections_exclude=("sport",),
                      tags_exclude=("sponsored",), paywalled="exclude", languages="same")
    assert ids(strict.related("s")) == ["plain"]
    only_sport = index_of(tmp_path, records, **base, sections_include=("sport",))
    assert ids(only_sport.related("s")) == ["sport"]
    same_first = index_of(tmp_path, records, **base, languages="same_first")
    assert ids(same_first.related("s"))[-1] == "spanish"


def test_request_filters_narrow_the_slot_and_never_widen_it(tmp_path: Path) -> None:
    records = [art("s", BRIDGE),
               art("sport", v(BRIDGE, "a"), section="sport"),
               art("local", v(BRIDGE, "b"), 20, section="Local"),
               art("spanish", v(BRIDGE, "d"), 10, language="es"),
               art("plain", v(BRIDGE, "e")),
               art("old", v(BRIDGE, "f"), 200)]
    base = dict(one_per_event=False, min_score=0.0, min_score_other_language=0.0,
                fallback=False, k=10, languages="any")
    rec = index_of(tmp_path, records, **base)
    assert set(ids(rec.related("s"))) == {"sport", "local", "spanish", "plain", "old"}
    assert ids(rec.related("s", filters=Filters(sections=("sport",)))) == ["sport"]
    # case-insensitive, several values
    assert set(ids(rec.related("s", filters=Filters(sections=("local", "SPORT"))))) == \
        {"sport", "local"}
    assert ids(rec.related("s", filters=Filters(languages=("ES",)))) == ["spanish"]
    assert set(ids(rec.related("s", filters=Filters(max_age_days=15)))) == \
        {"sport", "spanish", "plain"}
    page = rec.page("s", filters=Filters(sections=("news",), max_age_days=15))
    shown = [r for links in page.values() for r in links]
    assert shown and {(r.section, r.id) for r in shown} <= {("news", "spanish"),
                                                           ("news", "plain")}
    # a slot that shows only sport, asked for news: nothing, not news
    sport_slot = index_of(tmp_path, records, **base, sections_include=("sport",),
                          max_age_days=15)
    assert ids(sport_slot.related("s", filters=Filters(sections=("news",)))) == []
    assert sport_slot.page("s", filters=Filters(sections=("news",))) == \
        {"see_also": [], "you_may_also_like": []}
    # a longer age than the slot's own keeps the slot's
    assert "local" not in ids(sport_slot.related("s", filters=Filters(sections=("local", "sport"),
                                                                      max_age_days=90)))
    same = index_of(tmp_path, records, **{**base, "languages": "same"})
    assert ids(same.related("s", filters=Filters(languages=("es",)))) == []


def test_a_request_filter_holds_for_pins_too(tmp_path: Path) -> None:
    records = [art("s", BRIDGE), art("sport", v(BRIDGE, "a"), section="sport"),
               art("far", BANK, section="business")]
    rec = index_of(tmp_path, records, one_per_event=False, min_score=0.0, fallback=False)
    OverridesFile(rec.path).pin(Pin("s", "far", "you_may_also_like", position=1))
    assert ids(rec.related("s"))[0] == "far"
    assert ids(rec.related("s", filters=Filters(sections=("sport",)))) == ["sport"]
    assert ids(rec.related("s", filters=Filters(sections=("business",)))) == ["far"]


@pytest.mark.parametrize("bad", [dict(sections="sport"), dict(sections=("",)),
                                 dict(languages=("",)), dict(max_age_days=-1),
                                 dict(max_age_days=math.nan), dict(max_age_days=math.inf)])
def test_bad_filters_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Filters(**bad)


def test_only_published_articles_at_query_time(tmp_path: Path) -> None:
    records = [art("s", BRIDGE), art("draft", v(BRIDGE, "a"), status="draft"),
               art("gone", v(BRIDGE, "b"), status="deleted"), art("ok", v(BRIDGE, "c"))]
    rec = index_of(tmp_path, records, one_per_event=False, min_score=0.0)
    for slot in ("see_also", "you_may_also_like"):
        assert not {"draft", "gone"} & set(ids(rec.related("s", slot=slot, k=10)))


# ------------------------------------------------------------------ 6. editorial overrides

def test_pins_blocks_and_never_pairs(tmp_path: Path) -> None:
    records = [art("s", BRIDGE), art("a", v(BRIDGE, "a")), art("b", v(BRIDGE, "b")),
               art("far", BANK), art("c", v(BRIDGE, "c"))]
    rec = index_of(tmp_path, records, one_per_event=False, min_score=0.0, fallback=False)
    edits = OverridesFile(rec.path)
    edits.pin(Pin("s", "far", "see_also", position=1))
    [first, second] = rec.related("s", slot="see_also")
    assert first.id == "far" and first.reason["pinned"] is True
    assert "pinned" not in second.reason
    edits.block("a")
    edits.never_pair("s", "b")
    shown = [r.id for v in rec.page("s").values() for r in v]
    assert "a" not in shown and "b" not in shown and shown.count("far") == 1
    edits.pin(Pin("s", "c", "see_also", position=1, until=NOW - timedelta(days=1)),
              now=NOW - timedelta(days=2))  # pinned while it still had a day to go
    assert "c" not in ids(rec.related("s", slot="see_also")[:1])  # expired pin
    # overrides survive a rebuild
    build_index(rec.path, records, embedder=HashingEmbedder(256))
    assert Recommender.open(rec.path, config=rec.config, now=NOW).related(
        "s", slot="see_also")[0].id == "far"


def test_a_pin_never_resurrects_a_withdrawn_or_blocked_article(tmp_path: Path) -> None:
    records = [art("s", BRIDGE), art("draft", v(BRIDGE, "a"), status="draft"),
               art("x", v(BRIDGE, "x"))]
    rec = index_of(tmp_path, records, one_per_event=False, min_score=0.0)
    edits = OverridesFile(rec.path)
    edits.pin(Pin("s", "draft", "see_also"))
    edits.pin(Pin("s", "x", "see_also"))
    edits.block("x")
    assert not {"draft", "x"} & set(ids(rec.related("s", slot="see_also")))


def test_cli_edits_overrides(tmp_path: Path) -> None:
    rec = index_of(tmp_path, [art("s", BRIDGE), art("a", v(BRIDGE, "a")), art("b", BANK)])
    index = str(rec.path)
    runner = CliRunner()
    assert runner.invoke(main, ["pin", "s", "b", "--index", index, "--slot", "see_also",
                                "--until", "2030-01-01"]).exit_code == 0
    assert runner.invoke(main, ["block", "a", "--index", index, "--reason", "legal"]
                         ).exit_code == 0
    shown = runner.invoke(main, ["overrides", "--index", index]).stdout
    assert '"target": "b"' in shown and '"reason": "legal"' in shown
    out = runner.invoke(main, ["related", "s", "--index", index, "--slot", "see_also",
                               "--explain"]).stdout
    assert "[pinned]" in out and "pinned until 2030-01-02T00:00:00Z" in out  # day included
    assert runner.invoke(main, ["unpin", "s", "b", "--index", index]).stdout.strip() == \
        "removed 1 pin(s)"
    assert runner.invoke(main, ["unblock", "a", "--index", index]).stdout.strip() == \
        "unblocked a"
    bad = runner.invoke(main, ["pin", "s", "b", "--index", index, "--slot", "sidebar"])
    assert bad.exit_code == 2 and "unknown slot 'sidebar'" in bad.stderr


# ------------------------------------------------------------------ 7. threshold and fallback

def test_see_also_may_be_empty_but_you_may_also_like_is_filled(tmp_path: Path) -> None:
    records = [art("s", BRIDGE, section="local"),
               art("l1", "museum sculpture painting harbour", 3, section="local"),
               art("l2", "library books readers", 1, section="local"),
               art("w1", "football cup final goal", 2, section="sport"),
               art("w2", "recipe sourdough bread", 4, section="food")]
    rec = index_of(tmp_path, [*records], fallback_links=None)
    assert rec.related("s", slot="see_also") == []
    filled = rec.related("s", slot="you_may_also_like", k=4)
    assert len(filled) == 4 and all(r.reason["fallback"] == "below the bar" for r in filled)
    # chosen by the same score as related links: the one sharing a word comes first
    assert filled[0].id == "l1"
    assert [r.score for r in filled] == sorted((r.score for r in filled), reverse=True)
    # fallback_links: fill only up to that many
    few = index_of(tmp_path / "few", [*records], fallback_links=2)
    assert len(few.related("s", slot="you_may_also_like", k=4)) == 2


def test_fallback_reaches_past_the_candidates_to_articles_of_the_same_time(
        tmp_path: Path) -> None:
    # The two nearest candidates are copies of the source (never shown), so the slot looks
    # at the articles published around the source's date, and not at the distant one.
    records = [art("s", BRIDGE, 30, title="Bridge"), art("c1", BRIDGE, 30, title="One"),
               art("c2", BRIDGE, 30, title="Two"), art("near", "library books readers", 31),
               art("near2", "museum sculpture painting", 28),
               *[art(f"far{i}", f"recipe sourdough bread number{i}", 300) for i in range(70)]]
    rec = index_of(tmp_path, records, candidates=1, fallback_links=None, half_life_days=10.0)
    filled = rec.related("s", slot="you_may_also_like", k=2)
    assert {r.id for r in filled} == {"near", "near2"}
    assert [r.reason["fallback"] for r in filled] == ["nearby", "nearby"]


# ------------------------------------------------------------------ 8. explanations

def test_explain_prints_the_parts_of_each_link(tmp_path: Path) -> None:
    rec = index_of(tmp_path, [art("s", BRIDGE), art("a", v(BRIDGE, "a"), 3)])
    out = CliRunner().invoke(main, ["related", "s", "--index", str(rec.path), "--slot",
                                    "see_also", "--explain"]).stdout
    assert "why: same story; relevance" in out and "semantic" in out and "lexical" in out
    assert "names" in out and "proximity" in out and "freshness" in out


# ------------------------------------------------------------------ configuration

def test_toml_next_to_the_index_configures_slots(tmp_path: Path) -> None:
    rec = index_of(tmp_path, [art("s", BRIDGE), art("a", v(BRIDGE, "a"))])
    (rec.path / "recommender.toml").write_text(
        "[ranking]\nlexical_weight = 0.0\nsemantic_weight = 1.0\n"
        "[slots.see_also]\nk = 1\nmin_score = 0.3\n"
        "[slots.sidebar]\nnew = true\nk = 3\nfallback = true\n")
    config = load_config(rec.path)
    assert config.slots["see_also"].k == 1 and config.slots["see_also"].min_score == 0.3
    assert config.slots["sidebar"] == SlotPolicy(name="sidebar", k=3, fallback=True)
    assert config.ranking.lexical_weight == 0.0
    assert Recommender.open(rec.path).related("s", slot="sidebar")


def test_config_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match=r"\[slots.see_also\]: unknown key 'kk'"):
        parse_config({"slots": {"see_also": {"kk": 1}}})
    with pytest.raises(ConfigError, match="languages must be one of"):
        parse_config({"slots": {"see_also": {"languages": "martian"}}})
    with pytest.raises(ConfigError, match="unknown section"):
        parse_config({"slot": {}})


def test_now_defaults_to_the_real_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.delenv("RECOMMENDER_NOW")
    rec = index_of(tmp_path, [art("s", BRIDGE)])
    assert abs(Recommender.open(rec.path).now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_published_article_dated_in_the_future_is_held_back_until_its_date(
        tmp_path: Path) -> None:
    records = [art("s", BRIDGE), art("soon", v(BRIDGE, "soon"), -3), art("b", v(BRIDGE, "b"))]
    rec = index_of(tmp_path, records, one_per_event=False, min_score=0.0)
    OverridesFile(rec.path).pin(Pin("s", "soon", "see_also"), now=NOW)
    for slot in ("see_also", "you_may_also_like"):
        assert "soon" not in ids(rec.related("s", slot=slot, k=5))
    assert "soon" not in [r.id for v in rec.page("s").values() for r in v]
    later = Recommender.open(rec.path, config=rec.config, now=NOW + timedelta(days=3, hours=1))
    [first, *_] = later.related("s", slot="see_also")
    assert first.id == "soon" and first.reason["pinned"]
    assert "soon" in ids(later.related("s", slot="you_may_also_like", k=5))
