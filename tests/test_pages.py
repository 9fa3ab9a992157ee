"""Pages computed ahead (`build --pages`): a stored page is used only where `page()` would
compute the same page now, updates recompute only the pages whose inputs changed, and the
HTTP API sends a stored page exactly as it would send the computed one."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recommender import Recommender, build_index
from recommender.overrides import OverridesFile, Pin
from recommender.pages import PAGES_FILE, slots_json, write_pages
from recommender.samples import sample_corpus_path
from recommender.server import create_app

from .conftest import NOW
from .test_page_memo import EMBEDDER, Clock, records


@pytest.fixture
def index(tmp_path: Path) -> Path:
    index = tmp_path / "index"
    report = build_index(index, [sample_corpus_path()], embedder=EMBEDDER, pages=True)
    assert report.pages is not None and report.pages.computed > 0
    return index


def update(index: Path, tmp_path: Path, changed: list[dict[str, Any]],
           delete: tuple[str, ...] = ()) -> Any:
    path = tmp_path / "update.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in changed))
    return build_index(index, [path], embedder=EMBEDDER, incremental=True, delete=delete)


def stored_pages_hold(index: Path, clock: Clock) -> int:
    """Every page stored and still holding equals the page computed now, with the same
    page_key; returns how many pages were stored and held."""
    rec = Recommender.open(index, reload_interval=-1, now=clock, page_memo=0)
    held = 0
    for article_id in rec.ids():
        stored = rec.stored_page(article_id)
        if stored is None:
            continue
        assert stored.slots == slots_json(rec.page(article_id)), article_id
        assert stored.digest.hex() == rec.page_key(article_id), article_id
        held += 1
    return held


def stored(path: Path) -> dict[int, tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return {row[0]: row[1:] for row in
                conn.execute("SELECT pos, id, digest, since, until, slots FROM pages")}


def same_as_written_afresh(index: Path, tmp_path: Path, now: datetime) -> None:
    """The live version's pages, as updates left them, are those a write from nothing
    gives (as of the moment they were written)."""
    live = Recommender.open(index).snapshot().path
    scratch = tmp_path / "afresh" / live.name
    shutil.rmtree(scratch.parent, ignore_errors=True)
    shutil.copytree(live, scratch)
    (scratch / PAGES_FILE).unlink()
    write_pages(index, scratch, now=now)
    assert stored(live / PAGES_FILE) == stored(scratch / PAGES_FILE)


def test_a_stored_page_is_used_only_while_it_is_the_page_computed_now(
        index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(NOW)
    data = {r["id"]: r for r in records()}
    count = len(data)
    assert stored_pages_hold(index, clock) > count * 0.9  # undated articles are left out

    # Later, with nothing dated in between: the same pages hold; long after (an archive),
    # dated pages still hold, measured around their own dates.
    clock.now += timedelta(minutes=5)
    assert stored_pages_hold(index, clock) > count * 0.9
    clock.now += timedelta(days=400)
    assert stored_pages_hold(index, clock) > count * 0.9

    # A clock set before an article's date hides it: pages that show it no longer hold.
    clock.now = datetime.fromisoformat(data["a150"]["published_at"]) - timedelta(days=1)
    assert stored_pages_hold(index, clock) < count * 0.9

    # An update that edits one headline recomputes the pages that show it, copies the rest.
    clock.now = NOW
    edited = dict(data["a002"], title=data["a002"]["title"] + " (updated)")
    report = update(index, tmp_path, [edited])
    assert report.pages is not None
    assert 0 < report.pages.computed < count // 2 < report.pages.reused
    assert stored_pages_hold(index, clock) > count * 0.9
    same_as_written_afresh(index, tmp_path, NOW)
    rec = Recommender.open(index, now=clock)
    pages = [rec.stored_page(i) for i in rec.ids()]
    assert any(b"(updated)" in page.slots for page in pages if page is not None)

    # Withdrawn, deleted, and a new article dated an hour ahead: hidden until then.
    update(index, tmp_path, [dict(data["a003"], status="draft")], delete=("a004",))
    assert stored_pages_hold(index, clock) > count * 0.9
    same_as_written_afresh(index, tmp_path, NOW)
    scheduled = dict(data["a001"], id="a001-next", title=data["a001"]["title"] + ", day two",
                     published_at=(clock.now + timedelta(hours=1)).isoformat())
    update(index, tmp_path, [scheduled])
    same_as_written_afresh(index, tmp_path, NOW)
    before = stored_pages_hold(index, clock)
    clock.now += timedelta(hours=2)  # ... now it may be shown: the pages it joins are computed
    after = stored_pages_hold(index, clock)
    assert after < before
    # ... and the next publish, then, computes those pages again
    monkeypatch.setenv("RECOMMENDER_NOW", clock.now.isoformat())
    update(index, tmp_path, [dict(data["a010"], title=data["a010"]["title"] + "!")])
    same_as_written_afresh(index, tmp_path, clock.now)
    assert stored_pages_hold(index, clock) >= before
    rec = Recommender.open(index, now=clock, page_memo=0)
    assert any("a001-next" in [r.id for links in rec.page(i).values() for r in links]
               for i in rec.ids())


def test_an_edit_of_the_overrides_sets_the_stored_pages_aside_until_the_next_update(
        index: Path, tmp_path: Path) -> None:
    clock = Clock(NOW)
    rec = Recommender.open(index, reload_interval=0, now=clock)
    assert rec.stored_page("a001") is not None
    OverridesFile(index).pin(Pin("a001", "a150", "you_may_also_like", 1,
                                 until=NOW + timedelta(hours=1)), now=NOW)
    assert rec.stored_page("a001") is None and rec.stored_page("a010") is None
    assert rec.page("a001")["you_may_also_like"][0].id == "a150"
    update(index, tmp_path, [], delete=("a149",))  # the next publish computes them again
    assert stored_pages_hold(index, clock) > len(rec) * 0.9
    stored = Recommender.open(index, now=clock).stored_page("a001")
    assert stored is not None and json.loads(stored.slots)["you_may_also_like"][0]["id"] == "a150"
    clock.now += timedelta(hours=2)  # the pin lapsed: that page no longer holds
    assert Recommender.open(index, now=clock).stored_page("a001") is None
    assert stored_pages_hold(index, clock) > len(rec) * 0.9


def test_pages_stay_with_the_index_until_a_build_says_otherwise(index: Path,
                                                                tmp_path: Path) -> None:
    def has_pages() -> bool:
        return (Recommender.open(index).snapshot().path / PAGES_FILE).is_file()

    update(index, tmp_path, [], delete=("a149",))
    assert has_pages()
    build_index(index, [sample_corpus_path()], embedder=EMBEDDER, pages=False)
    assert not has_pages()
    update(index, tmp_path, [], delete=("a148",))
    assert not has_pages()


def test_another_config_sets_the_stored_pages_aside(index: Path) -> None:
    (index / "recommender.toml").write_text("[slots.you_may_also_like]\nk = 3\n")
    rec = Recommender.open(index, now=NOW)
    assert rec.stored_page("a001") is None and len(rec.page("a001")["you_may_also_like"]) <= 3


def test_the_api_sends_a_stored_page_as_it_sends_a_computed_one(index: Path,
                                                                tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(index, plain)
    for path in plain.glob(f"versions/*/{PAGES_FILE}"):
        path.unlink()
    stored = TestClient(create_app(Recommender.open(index, now=NOW), max_age=30))
    computed = TestClient(create_app(Recommender.open(plain, now=NOW), max_age=30))
    ids = Recommender.open(index).ids()
    assert Recommender.open(index, now=NOW).stored_page(ids[0]) is not None
    for article_id in ids:
        a = stored.get(f"/v1/articles/{article_id}/page")
        b = computed.get(f"/v1/articles/{article_id}/page")
        assert a.status_code == b.status_code == 200
        assert a.content == b.content, article_id
        assert a.headers.items() == b.headers.items()
        assert stored.get(f"/v1/articles/{article_id}/page",
                          headers={"If-None-Match": a.headers["ETag"]}).status_code == 304
    # with query parameters, an unknown id: the route answers
    assert stored.get(f"/v1/articles/{ids[0]}/page?explain=true").json()["explanations"]
    assert stored.get("/v1/articles/nope/page").status_code == 404
