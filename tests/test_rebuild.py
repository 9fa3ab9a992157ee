"""Incremental updates, atomic publishing, locking and crash safety (fake embedder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from recommender import (
    HashingEmbedder,
    IndexCorrupt,
    IndexLocked,
    InvalidInput,
    Recommender,
    build_index,
)
from recommender.store import IndexDirectory

from .conftest import NOW

EMBEDDER = HashingEmbedder(64)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_update_embeds_exactly_the_changed_articles(tiny_index: Path, tmp_path: Path,
                                                    tiny_records: list[dict[str, Any]]) -> None:
    changed = [dict(r, body=r["body"] + " Updated.") for r in tiny_records[:3]]
    report = build_index(tiny_index, [write_jsonl(tmp_path / "c.jsonl", changed)],
                         embedder=EMBEDDER, incremental=True)
    assert (report.added, report.changed, report.unchanged, report.removed) == (0, 3, 9, 0)
    assert report.embedded == 3 and report.total == 12 and report.invalid == 0


def test_rebuild_reuses_vectors_of_unchanged_articles(tiny_index: Path, tiny_jsonl: Path) -> None:
    report = build_index(tiny_index, [tiny_jsonl], embedder=EMBEDDER)
    assert report.embedded == 0 and report.unchanged == 12


def test_metadata_only_changes_do_not_re_embed(tiny_index: Path, tmp_path: Path,
                                               tiny_records: list[dict[str, Any]]) -> None:
    record = dict(tiny_records[0], section="national", tags=["new"])
    report = build_index(tiny_index, [write_jsonl(tmp_path / "m.jsonl", [record])],
                         embedder=EMBEDDER, incremental=True)
    assert report.embedded == 0 and report.unchanged == 12
    assert Recommender.open(tiny_index).article("t01").section == "national"


def test_build_removes_what_is_gone_and_update_deletes_on_request(
        tiny_index: Path, tmp_path: Path, tiny_records: list[dict[str, Any]]) -> None:
    report = build_index(tiny_index, [write_jsonl(tmp_path / "a.jsonl", tiny_records[:10])],
                         embedder=EMBEDDER)
    assert report.removed == 2 and report.total == 10
    report = build_index(tiny_index, [], embedder=EMBEDDER, incremental=True,
                         delete=["t09", "missing"])
    assert report.removed == 1 and report.total == 9
    assert "t09" not in Recommender.open(tiny_index)


def test_new_article_enters_older_articles_lists(tiny_index: Path, tmp_path: Path) -> None:
    follow_up = {"id": "t20", "title": "Portmere harbour bridge collapse: divers and cables",
                 "body": "Portmere harbour bridge collapse divers cables collapsed harbour.",
                 "published_at": "2026-11-20T10:00:00Z"}
    rec = Recommender.open(tiny_index, reload_interval=0, now=NOW)

    def related_links() -> list[str]:  # shown for relevance, not as fallback
        return [r.id for r in rec.related("t01", slot="you_may_also_like")
                if "fallback" not in r.reason]

    assert "t20" not in related_links()
    build_index(tiny_index, [write_jsonl(tmp_path / "n.jsonl", [follow_up])],
                embedder=EMBEDDER, incremental=True)
    # the already-open reader notices the new version
    assert "t20" in related_links()


def test_status_change_withdraws_an_article_from_every_slot(
        tiny_index: Path, tmp_path: Path, tiny_records: list[dict[str, Any]]) -> None:
    rec = Recommender.open(tiny_index, reload_interval=0)
    assert "t02" in [r.id for r in rec.related("t01", slot="see_also")]
    deleted = dict(tiny_records[1], status="deleted")
    report = build_index(tiny_index, [write_jsonl(tmp_path / "d.jsonl", [deleted])],
                         embedder=EMBEDDER, incremental=True)
    assert report.withdrawn == 1 and report.embedded == 0
    assert report.neighbours_mode == "incremental"  # no rebuild of the candidate table
    for article_id in rec.ids():
        for results in rec.page(article_id).values():
            assert "t02" not in [r.id for r in results]


def test_a_second_concurrent_build_is_refused(tiny_index: Path, tiny_jsonl: Path) -> None:
    with IndexDirectory(tiny_index).lock(), \
            pytest.raises(IndexLocked, match=r"is being built by pid \d+"):
        build_index(tiny_index, [tiny_jsonl], embedder=EMBEDDER)
    build_index(tiny_index, [tiny_jsonl], embedder=EMBEDDER)  # free again


def test_strict_publishes_nothing_when_a_record_is_invalid(tiny_index: Path,
                                                           tmp_path: Path) -> None:
    before = (tiny_index / "CURRENT").read_text()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "n1", "title": "Fine"}, {"id": "n2"}])
    with pytest.raises(InvalidInput, match="1 invalid record"):
        build_index(tiny_index, [bad], embedder=EMBEDDER, incremental=True, strict=True)
    assert (tiny_index / "CURRENT").read_text() == before


def test_corrupt_or_missing_index_files_give_clear_errors(tiny_index: Path) -> None:
    live = IndexDirectory(tiny_index).current_path()
    (live / "index.faiss").write_bytes(b"garbage")
    rec = Recommender.open(tiny_index)
    with pytest.raises(IndexCorrupt, match=r"cannot read .*index\.faiss"):
        rec.similar("t01")
    (live / "vectors.npy").unlink()
    with pytest.raises(IndexCorrupt, match=r"cannot read .*vectors\.npy"):
        Recommender.open(tiny_index)
    (tiny_index / "CURRENT").write_text("v-nothing\n")
    with pytest.raises(IndexCorrupt, match="names version 'v-nothing', which is missing"):
        Recommender.open(tiny_index)


def test_old_versions_are_pruned_but_open_readers_keep_working(tiny_index: Path,
                                                               tiny_jsonl: Path) -> None:
    rec = Recommender.open(tiny_index, reload_interval=-1, now=NOW)  # never reloads
    expected = rec.similar("t01")
    for _ in range(4):
        build_index(tiny_index, [tiny_jsonl], embedder=EMBEDDER)
    assert len(list((tiny_index / "versions").iterdir())) == 3
    assert not (tiny_index / "versions" / rec.version).exists()
    assert rec.similar("t01") == expected


SLOW_BUILD = textwrap.dedent("""
    import sys, time
    from recommender import HashingEmbedder, build_index

    class Slow(HashingEmbedder):
        def embed(self, texts, progress=None):
            out = []
            for text in texts:
                time.sleep(0.002)
                out.append(super().embed([text])[0])
            import numpy as np
            return np.array(out).reshape(len(texts), self.dimension)

    records = [{"id": f"s{i}", "title": f"Story {i} about topic {i % 7}",
                "body": f"Body words topic{i % 7} number {i}"} for i in range(int(sys.argv[2]))]
    build_index(sys.argv[1], records, embedder=Slow(64))
""")


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.6, 0.9, 1.2])
def test_sigkill_mid_build_leaves_the_previous_version_serving(
        tiny_index: Path, tiny_jsonl: Path, tmp_path: Path, delay: float) -> None:
    before = Recommender.open(tiny_index, reload_interval=-1, now=NOW)
    expected = {aid: before.page(aid) for aid in before.ids()}
    script = tmp_path / "slow_build.py"
    script.write_text(SLOW_BUILD)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_index), "400"], env=env)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    after = Recommender.open(tiny_index, now=NOW)
    if after.version == before.version:  # killed before it could publish
        assert {aid: after.page(aid) for aid in after.ids()} == expected
    else:  # it finished first: then the new version is complete
        assert len(after) == 400
    report = build_index(tiny_index, [tiny_jsonl], embedder=EMBEDDER)
    assert report.total == 12
    assert not [p for p in (tiny_index / "versions").iterdir() if p.name.startswith(".tmp-")]
    assert not (tiny_index / "CURRENT.tmp").exists()


def test_readers_in_threads_during_repeated_publishes_see_no_errors(
        tiny_index: Path, tiny_records: list[dict[str, Any]]) -> None:
    rec = Recommender.open(tiny_index, reload_interval=0)
    errors: list[BaseException] = []
    stop = threading.Event()
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                for article_id in ("t01", "t06", "t09"):
                    page = rec.page(article_id)
                    assert article_id not in [r.id for v in page.values() for r in v]
                    rec.similar(article_id, k=5)
                reads[0] += 1
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for round_number in range(15):
            records = [dict(r, body=f"{r['body']} round {round_number}") for r in tiny_records]
            build_index(tiny_index, records, embedder=EMBEDDER)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == [] and reads[0] > 0


def test_build_over_a_corrupt_index_starts_afresh_but_update_refuses(
        tiny_index: Path, tiny_jsonl: Path) -> None:
    live = IndexDirectory(tiny_index).current_path()
    (live / "manifest.json").write_text('{"format_version": 1}')
    with pytest.raises(IndexCorrupt, match=r"unsupported index format 1.*run `recommender build`"):
        build_index(tiny_index, [tiny_jsonl], embedder=EMBEDDER, incremental=True)
    report = build_index(tiny_index, [tiny_jsonl], embedder=EMBEDDER)
    assert report.embedded == 12 and "not reusable" in report.problems[-1].reason
    assert len(Recommender.open(tiny_index)) == 12
