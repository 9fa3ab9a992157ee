"""Pages kept by what they depend on (`PageMemo`): a kept page is served again in a later
version or minute only where a fresh computation gives the same page."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from recommender import HashingEmbedder, Recommender, build_index
from recommender.overrides import OverridesFile, Pin
from recommender.samples import sample_corpus_path

from .conftest import NOW

EMBEDDER = HashingEmbedder(64)


def records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in sample_corpus_path().read_text().splitlines()]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sample_index(tmp_path: Path) -> Path:
    index = tmp_path / "index"
    build_index(index, [sample_corpus_path()], embedder=EMBEDDER)
    return index


def update(index: Path, tmp_path: Path, changed: list[dict[str, Any]],
           delete: tuple[str, ...] = ()) -> None:
    path = tmp_path / "update.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in changed))
    build_index(index, [path], embedder=EMBEDDER, incremental=True, delete=delete)


def pages_match_a_fresh_reader(rec: Recommender, index: Path, clock: Clock) -> int:
    """Every page of `rec` (memo on) equals the page a reader with no memo computes now;
    returns how many of them came from the memo."""
    fresh = Recommender.open(index, reload_interval=-1, now=clock, page_memo=0)
    assert fresh.version == rec.version
    hits = rec.memo.hits
    for article_id in fresh.ids():
        assert rec.page(article_id) == fresh.page(article_id), article_id
    return rec.memo.hits - hits


def test_a_kept_page_is_served_only_while_nothing_it_depends_on_changed(
        sample_index: Path, tmp_path: Path) -> None:
    clock = Clock(NOW)
    rec = Recommender.open(sample_index, reload_interval=0, now=clock)
    data = {r["id"]: r for r in records()}
    count = len(data)
    assert pages_match_a_fresh_reader(rec, sample_index, clock) == 0  # the memo fills
    assert pages_match_a_fresh_reader(rec, sample_index, clock) == count

    # The clock moves on, nothing scheduled in between: dated pages stay as they were.
    clock.now += timedelta(minutes=5)
    assert pages_match_a_fresh_reader(rec, sample_index, clock) > count // 2

    # A year later: the pages of undated articles are measured around "now" (and their age
    # limit with it); dated pages are measured around their own date.
    clock.now += timedelta(days=400)
    pages_match_a_fresh_reader(rec, sample_index, clock)

    # A new address and date, the same text: its page is measured around the new date, and
    # the pages that link it show the new address.
    moved = datetime.fromisoformat(data["a002"]["published_at"]) + timedelta(days=1)
    update(sample_index, tmp_path, [dict(data["a002"], url="https://example.org/moved",
                                         published_at=moved.isoformat())])
    pages_match_a_fresh_reader(rec, sample_index, clock)
    assert any(r.url == "https://example.org/moved"
               for i in rec.ids() for links in rec.page(i).values() for r in links)

    # A publish that edits one headline: most pages do not show that article.
    edited = dict(data["a002"], title=data["a002"]["title"] + " (updated)")
    update(sample_index, tmp_path, [edited])
    carried = pages_match_a_fresh_reader(rec, sample_index, clock)
    assert count // 2 < carried < count

    # Withdrawn, deleted, and a new article in a story, dated an hour ahead (hidden until then)
    update(sample_index, tmp_path, [dict(data["a003"], status="draft")], delete=("a004",))
    pages_match_a_fresh_reader(rec, sample_index, clock)
    scheduled = dict(data["a001"], id="a001-next", title=data["a001"]["title"] + ", day two",
                     published_at=(clock.now + timedelta(hours=1)).isoformat())
    update(sample_index, tmp_path, [scheduled])
    pages_match_a_fresh_reader(rec, sample_index, clock)
    clock.now += timedelta(hours=2)  # ... and now it may be shown
    pages_match_a_fresh_reader(rec, sample_index, clock)
    assert any("a001-next" in [r.id for links in rec.page(i).values() for r in links]
               for i in rec.ids())

    # An editor's pin for an hour, then after it lapsed.
    OverridesFile(sample_index).pin(Pin("a001", "a150", "you_may_also_like", 1,
                                        until=clock.now + timedelta(hours=1)), now=clock.now)
    pages_match_a_fresh_reader(rec, sample_index, clock)
    assert rec.page("a001")["you_may_also_like"][0].id == "a150"
    clock.now += timedelta(hours=2)
    pages_match_a_fresh_reader(rec, sample_index, clock)
    assert "a150" not in [r.id for r in rec.page("a001")["you_may_also_like"]][:1]


def test_the_next_version_s_reader_takes_over_the_memo(sample_index: Path,
                                                        tmp_path: Path) -> None:
    clock = Clock(NOW)
    first = Recommender.open(sample_index, reload_interval=-1, now=clock)
    for article_id in first.ids():
        first.page(article_id)
    data = {r["id"]: r for r in records()}
    update(sample_index, tmp_path, [dict(data["a010"], body=data["a010"]["body"] + " More.")])
    second = Recommender.open(sample_index, reload_interval=-1, now=clock,
                              page_memo=first.memo)
    assert pages_match_a_fresh_reader(second, sample_index, clock) > len(data) // 2


def test_a_page_filled_from_nearby_articles_is_not_kept_past_its_version(
        sample_index: Path, tmp_path: Path) -> None:
    """Links "nearby" in time come from the whole index by date, not from the page's
    candidates: a new article of that date may take their place."""
    (sample_index / "recommender.toml").write_text(
        "[slots.you_may_also_like]\ncandidates = 1\nfallback_links = 6\n"
        "[slots.see_also]\ncandidates = 1\n")
    clock = Clock(NOW)
    rec = Recommender.open(sample_index, reload_interval=0, now=clock)
    nearby = [i for i in rec.ids() if any(r.reason.get("fallback") == "nearby"
                                          for r in rec.page(i)["you_may_also_like"])]
    assert nearby
    nearby = nearby[:8]
    before = {i: rec.page(i) for i in nearby}
    # unrelated articles of the same days (not candidates of those pages: no word in common)
    update(sample_index, tmp_path, [{
        "id": f"z{i}-{n}", "title": f"Quilting guild shows winter pattern {n}",
        "body": "The quilting guild showed its winter patterns in the village hall.",
        "published_at": (rec.article(i).published_at or clock.now).isoformat()}
        for i in nearby for n in range(3)])
    pages_match_a_fresh_reader(rec, sample_index, clock)
    assert any(rec.page(i) != before[i] for i in nearby)
