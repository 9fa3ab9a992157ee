"""Incremental updates, atomic publishing, locking and crash safety (fake embedder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recommender import (
    HashingEmbedder,
    IndexCorrupt,
    IndexLocked,
    InvalidInput,
    Recommender,
    build_index,
)
from recommender.cli import main
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
    assert (report.changed, report.unchanged, report.embedded) == (1, 11, 0)
    assert Recommender.open(tiny_index).article("t01").section == "national"


def test_changed_counts_a_change_in_any_field_and_embedded_the_new_vectors(
        tmp_path: Path) -> None:
    long_body = " ".join(f"word{i}" for i in range(600))  # well past the 2,000 embedded chars
    records = [{"id": f"L{i}", "title": f"Long article {i}", "body": long_body,
                "published_at": "2026-11-01T09:00:00Z", "tags": ["a"]} for i in range(8)]
    index = tmp_path / "long"
    build_index(index, records, embedder=EMBEDDER)
    edited = [dict(r) for r in records]
    for r in edited[:3]:
        r["body"] = long_body + " A correction at the very end."   # not embedded text
    edited[3]["published_at"] = "2026-11-02T09:00:00Z"
    edited[4]["tags"] = ["a", "b"]
    edited[5]["title"] = "Long article 5, retitled"                  # embedded text
    report = build_index(index, edited, embedder=EMBEDDER)
    assert (report.added, report.changed, report.unchanged, report.embedded) == (0, 6, 2, 1)
    cli = CliRunner().invoke(main, ["build", "--index", str(index), "--model", "hashing:64",
                                    "--json", str(write_jsonl(tmp_path / "e.jsonl", edited))])
    assert json.loads(cli.stdout)["changed"] == 0  # the same input again: nothing changed


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
    (live / "neighbours.npy").write_bytes(b"garbage")
    with pytest.raises(IndexCorrupt, match=r"cannot read the neighbour table of "):
        Recommender.open(tiny_index)
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


BUILD_SCRIPT = textwrap.dedent("""
    import sys
    from recommender import HashingEmbedder, build_index

    records = [{"id": f"s{i}", "title": f"Story {i} about topic {i % 7}",
                "body": f"Body words topic{i % 7} number {i}"} for i in range(int(sys.argv[2]))]
    build_index(sys.argv[1], records, embedder=HashingEmbedder(64), max_removed_share=1.0,
                pages=True)
""")
# Every named point of the write path (store.crash_point), in the order a build passes them.
BEFORE_PUBLISH = ["version-dir-created", "articles-written", "vectors-written",
                  "columns-written", "table-written", "manifest-written", "pages-written",
                  "version-renamed", "pointer-written"]


@pytest.mark.parametrize("point", [*BEFORE_PUBLISH, "pointer-replaced"])
def test_kill_9_at_each_point_of_the_write_path_leaves_a_complete_version_serving(
        tiny_index: Path, tiny_jsonl: Path, tmp_path: Path, point: str) -> None:
    before = Recommender.open(tiny_index, reload_interval=-1, now=NOW)
    expected = {aid: before.page(aid) for aid in before.ids()}
    script = tmp_path / "build.py"
    script.write_text(BUILD_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent),
               RECOMMENDER_CRASH_AT=point)
    proc = subprocess.run([sys.executable, str(script), str(tiny_index), "400"], env=env,
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()  # killed right there
    leftovers = {p.name for p in (tiny_index / "versions").iterdir()} - {before.version}
    after = Recommender.open(tiny_index, now=NOW)
    if point in BEFORE_PUBLISH:
        assert after.version == before.version
        assert {aid: after.page(aid) for aid in after.ids()} == expected
        assert leftovers  # the kill landed mid-write: something half done is on disk
        if point == "pointer-written":
            assert (tiny_index / "CURRENT.tmp").exists()
    else:  # killed after the switch: the new version is complete
        assert len(after) == 400 and after.version in leftovers
    report = build_index(tiny_index, [tiny_jsonl], embedder=EMBEDDER, max_removed_share=1.0)
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


@pytest.mark.parametrize("content", [
    "",                                                    # an empty export
    None,                                                  # a header-only CSV
    "cut",                                                 # an export cut at a line boundary
])
def test_a_build_that_would_remove_most_of_the_index_is_refused(
        tiny_index: Path, tmp_path: Path, tiny_records: list[dict[str, Any]],
        content: str | None) -> None:
    if content is None:
        source = tmp_path / "export.csv"
        source.write_text("id,title,body,url,published_at\n")
    else:
        source = tmp_path / "export.jsonl"
        source.write_text("" if content == "" else
                          "".join(json.dumps(r) + "\n" for r in tiny_records[:4]))
    before = (tiny_index / "CURRENT").read_text()
    result = CliRunner().invoke(main, ["build", str(source), "--index", str(tiny_index),
                                       "--model", "hashing:64"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: build would remove ") and "--allow-removals" in line
    assert (tiny_index / "CURRENT").read_text() == before
    assert len(Recommender.open(tiny_index)) == 12
    forced = CliRunner().invoke(main, ["build", str(source), "--index", str(tiny_index),
                                       "--model", "hashing:64", "--allow-removals"])
    assert forced.exit_code == 0, forced.output
    assert len(Recommender.open(tiny_index)) == (4 if content == "cut" else 0)


def test_the_share_of_removals_allowed_can_be_configured(
        tiny_index: Path, tmp_path: Path, tiny_records: list[dict[str, Any]]) -> None:
    source = write_jsonl(tmp_path / "most.jsonl", tiny_records[:8])  # removes 4 of 12
    args = ["build", str(source), "--index", str(tiny_index), "--model", "hashing:64"]
    assert CliRunner().invoke(main, args).exit_code == 1
    assert CliRunner().invoke(main, args, env={"RECOMMENDER_MAX_REMOVALS": "0.4"}
                              ).exit_code == 0
    assert len(Recommender.open(tiny_index)) == 8


def test_rollback_makes_the_previous_version_live_again(
        tiny_index: Path, tmp_path: Path, tiny_records: list[dict[str, Any]]) -> None:
    rec = Recommender.open(tiny_index, reload_interval=0, now=NOW)
    good = rec.version
    expected = rec.page("t01")
    bad = [dict(r, title=f"Oops {r['id']}", body="lorem ipsum") for r in tiny_records]
    build_index(tiny_index, bad, embedder=EMBEDDER)
    assert rec.version != good and rec.article("t01").title == "Oops t01"
    result = CliRunner().invoke(main, ["rollback", "--index", str(tiny_index)])
    assert result.exit_code == 0 and result.stdout.strip().startswith(
        f"{tiny_index}: {good} is live again")
    assert rec.version == good and rec.page("t01") == expected  # the open reader follows
    # the next update starts from the rolled-back version
    report = build_index(tiny_index, [tiny_records[0]], embedder=EMBEDDER, incremental=True)
    assert report.changed == 0 and rec.article("t02").title == tiny_records[1]["title"]
    nowhere = CliRunner().invoke(main, ["rollback", "--index", str(tiny_index),
                                        "--to", "v-nothing"])
    assert nowhere.exit_code == 1 and "no version 'v-nothing'" in nowhere.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB file system (tmpfs), to fill up or make read-only. Needs root."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    # unbuffered: a write the disk takes only in part leaves nothing for close to flush
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_a_full_disk_is_a_one_line_error_and_leaves_nothing_behind(
        small_disk: Path, tiny_jsonl: Path, tiny_records: list[dict[str, Any]]) -> None:
    index = small_disk / "index"
    build_index(index, [tiny_jsonl], embedder=EMBEDDER)
    rec = Recommender.open(index, reload_interval=0, now=NOW)
    before, expected = rec.version, rec.page("t01")
    filler = fill(small_disk)
    new = write_jsonl(small_disk.parent / "new.jsonl",
                      [dict(r, body=r["body"] + " more") for r in tiny_records])
    result = CliRunner().invoke(main, ["update", str(new), "--index", str(index)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot write the index at {index}: disk full"), line
    assert [p.name for p in (index / "versions").iterdir()] == [before]  # no .tmp-* left
    assert rec.version == before and rec.page("t01") == expected
    filler.unlink()
    assert CliRunner().invoke(main, ["update", str(new), "--index", str(index)]).exit_code == 0


def test_a_read_only_index_is_a_one_line_error(small_disk: Path, tiny_jsonl: Path) -> None:
    index = small_disk / "index"
    build_index(index, [tiny_jsonl], embedder=EMBEDDER)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = CliRunner().invoke(main, ["build", str(tiny_jsonl), "--index", str(index),
                                       "--model", "hashing:64"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == \
        f"Error: cannot write the index at {index}: read-only file system ({index}/.lock)"
    assert len(Recommender.open(index)) == 12  # still readable
    result = CliRunner().invoke(main, ["block", "t02", "--index", str(index)])
    assert result.exit_code == 1 and result.stderr.strip() == \
        f"Error: cannot write {index}/overrides.json: read-only file system " \
        f"({index}/.overrides.lock)"


def test_a_truncated_vectors_file_is_a_clear_error_and_readers_keep_their_version(
        tiny_index: Path, tiny_jsonl: Path, tiny_records: list[dict[str, Any]]) -> None:
    rec = Recommender.open(tiny_index, reload_interval=0, now=NOW)
    before, expected = rec.version, rec.page("t01")
    build_index(tiny_index, [dict(r, body=r["body"] + " x") for r in tiny_records],
                embedder=EMBEDDER)
    (IndexDirectory(tiny_index).current_path() / "vectors.npy").write_bytes(b"")
    assert rec.page("t01") == expected and rec.version == before
    result = CliRunner().invoke(main, ["info", "--index", str(tiny_index)])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot read ") and "vectors.npy" in result.stderr
