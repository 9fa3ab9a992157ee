"""The HTTP API (`recommender serve`) on the tiny index: the same answers as the library, cache
validators, error bodies, following rebuilds, awkward ids (fake embedder, FastAPI TestClient)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from recommender import HashingEmbedder, Recommender, build_index, server
from recommender.overrides import OverridesFile
from recommender.server import create_app

from .conftest import NOW, story


@pytest.fixture
def rec(tiny_index: Path) -> Recommender:
    return Recommender.open(tiny_index, reload_interval=0)


@pytest.fixture
def client(rec: Recommender) -> TestClient:
    return TestClient(create_app(rec, max_age=30), raise_server_exceptions=False)


def dicts(results: list[Any]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in results]


def test_related_is_the_library_answer_with_reasons(client: TestClient, rec: Recommender
                                                    ) -> None:
    response = client.get("/v1/articles/t01/related", params={"slot": "see_also"})
    assert response.status_code == 200
    body = response.json()
    assert body["results"] == dicts(rec.related("t01", "see_also"))
    assert body["results"] and all("reason" in link for link in body["results"])
    assert body["slot"] == "see_also" and body["id"] == "t01"
    assert response.headers["X-Index-Version"] == rec.version == body["version"]
    # k and the default slot, as the CLI's --json prints them
    body = client.get("/v1/articles/t06/related", params={"k": 2}).json()
    assert body["results"] == dicts(rec.related("t06", "you_may_also_like", k=2))
    assert "explanations" not in body


def test_explain_adds_one_line_per_link(client: TestClient) -> None:
    body = client.get("/v1/articles/t01/related?slot=see_also&explain=true").json()
    assert len(body["explanations"]) == len(body["results"]) > 0
    assert all("relevance" in line for line in body["explanations"])


def test_page_fills_every_slot_with_no_article_twice(client: TestClient, rec: Recommender
                                                     ) -> None:
    body = client.get("/v1/articles/t01/page").json()
    expected = rec.page("t01")
    assert body["slots"] == {name: dicts(results) for name, results in expected.items()}
    shown = [link["id"] for links in body["slots"].values() for link in links]
    assert shown and len(shown) == len(set(shown))


def test_similar_and_info_and_health(client: TestClient, rec: Recommender) -> None:
    body = client.get("/v1/articles/t02/similar?k=3").json()
    assert body["results"] == dicts(rec.similar("t02", k=3)) and len(body["results"]) == 3
    info = client.get("/v1/info").json()
    assert info["version"] == rec.version and set(info["slots"]) == set(rec.slots)
    health = client.get("/healthz")
    assert health.json() == {"status": "ok", "version": rec.version, "articles": len(rec)}
    assert health.headers["Cache-Control"] == "no-store"


def test_batch_answers_many_ids_in_one_call(client: TestClient, rec: Recommender) -> None:
    response = client.post("/v1/related:batch",
                           json={"ids": ["t01", "t06", "t09"], "slot": "see_also", "k": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["results"] == {i: dicts(rec.related(i, "see_also", k=2))
                               for i in ("t01", "t06", "t09")}
    assert response.headers["X-Index-Version"] == rec.version
    missing = client.post("/v1/related:batch", json={"ids": ["t01", "nope"]})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "article_not_found"
    empty = client.post("/v1/related:batch", json={"ids": ["t01", "nope"], "unknown": "empty"})
    assert empty.status_code == 200 and empty.json()["results"]["nope"] == []
    too_many = client.post("/v1/related:batch", json={"ids": [f"t{i}" for i in range(101)]})
    assert too_many.status_code == 422
    assert client.post("/v1/related:batch", json={"ids": []}).status_code == 422
    assert client.post("/v1/related:batch", content=b"{not json").status_code == 422


@pytest.fixture
def mixed(tmp_path: Path, tiny_records: list[dict[str, Any]]) -> TestClient:
    """The tiny corpus with a few sections and a Spanish article."""
    for record, section in zip(tiny_records, ["local", "local", "sport", "local", "local",
                                              "business", "business", "money"], strict=False):
        record["section"] = section
    tiny_records[7]["language"] = "es"
    build_index(tmp_path / "mixed", tiny_records, embedder=HashingEmbedder(64))
    rec = Recommender.open(tmp_path / "mixed", reload_interval=0)
    return TestClient(create_app(rec), raise_server_exceptions=False)


def sections_of(links: list[dict[str, Any]]) -> set[str]:
    return {link["section"] for link in links}


def test_query_filters_show_only_matching_articles(mixed: TestClient) -> None:
    everything = mixed.get("/v1/articles/t01/related?slot=see_also").json()["results"]
    assert sections_of(everything) == {"local", "sport"}
    local = mixed.get("/v1/articles/t01/related?slot=see_also&section=Local").json()
    assert local["results"] and sections_of(local["results"]) == {"local"}
    page = mixed.get("/v1/articles/t06/page?section=business&section=money").json()["slots"]
    shown = [link for links in page.values() for link in links]
    assert shown and sections_of(shown) <= {"business", "money"}
    spanish = mixed.get("/v1/articles/t06/page?language=es").json()["slots"]
    assert [link["id"] for links in spanish.values() for link in links] == ["t08"]
    # max_age_days: only articles published that close to the article (t06: 7 November)
    near = mixed.get("/v1/articles/t06/related?k=10&max_age_days=1").json()["results"]
    assert near and {link["published_at"][:10] for link in near} <= {"2026-11-06",
                                                                      "2026-11-08"}
    batch = mixed.post("/v1/related:batch", json={"ids": ["t01", "t06"], "slot": "see_also",
                                                  "section": ["local"]}).json()["results"]
    assert batch["t01"] == local["results"] and batch["t06"] == []


def test_filters_are_part_of_the_etag_and_bad_ones_are_422(mixed: TestClient) -> None:
    plain = mixed.get("/v1/articles/t01/page")
    filtered = mixed.get("/v1/articles/t01/page?section=local",
                         headers={"If-None-Match": plain.headers["ETag"]})
    assert filtered.status_code == 200 and filtered.headers["ETag"] != plain.headers["ETag"]
    for query in ("section=", "language=", "max_age_days=-1",
                  "max_age_days=soon", "max_age_days=nan", "max_age_days=inf",
                  "&".join(["section=x"] * 21)):
        for path in ("/v1/articles/t01/page", "/v1/articles/t01/related"):
            response = mixed.get(f"{path}?{query}")
            assert response.status_code == 422, (path, query)
            assert response.json()["error"]["code"] == "invalid_request"
    for body in ({"section": [""]}, {"section": "local"}, {"max_age_days": -2},
                 {"language": [""]}):
        response = mixed.post("/v1/related:batch", json={"ids": ["t01"], **body})
        assert response.status_code == 422, body


def test_head_answers_like_get_without_a_body(client: TestClient) -> None:
    for path in ("/v1/articles/t01/page", "/articles/t01", "/healthz", "/v1/info"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == 200 and head.content == b"", path
        for name in ("ETag", "Content-Type", "Content-Length", "X-Index-Version"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)
    assert client.head("/v1/articles/nope/page").status_code == 404
    assert client.delete("/articles/t01").headers["Allow"] == "GET, HEAD"


def test_the_article_page_links_to_the_other_article_pages(client: TestClient,
                                                           rec: Recommender) -> None:
    import re

    response = client.get("/articles/t01")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["X-Index-Version"] == rec.version
    html = response.text
    assert "<h1>Harbour bridge collapses in Portmere</h1>" in html
    page = rec.page("t01")
    expected = [f"/articles/{r.id}" for links in page.values() for r in links]
    hrefs = re.findall(r'<a href="([^"]+)"', html)
    assert hrefs == expected and len(hrefs) >= 3
    for href in hrefs:  # every link opens another article's page
        assert client.get(href).status_code == 200, href
    again = client.get("/articles/t01", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    missing = client.get("/articles/nope")
    assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text


def test_unknown_ids_and_slots_are_404_with_a_stable_code(client: TestClient,
                                                          rec: Recommender) -> None:
    for path in ("/v1/articles/nope/related", "/v1/articles/nope/page",
                 "/v1/articles/nope/similar"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": {"code": "article_not_found",
                                             "message": "unknown article id: 'nope'"}}
        assert response.headers["X-Index-Version"] == rec.version  # which index said so
    response = client.get("/v1/articles/t01/related?slot=sidebar")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_slot"
    assert "see_also" in response.json()["error"]["message"]
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"


def test_an_id_published_seconds_ago_can_get_empty_slots(client: TestClient,
                                                         rec: Recommender) -> None:
    body = client.get("/v1/articles/new-one/page?unknown=empty").json()
    assert body["slots"] == {name: [] for name in rec.slots}
    body = client.get("/v1/articles/new-one/related?unknown=empty").json()
    assert body["results"] == []
    # an unknown slot stays an error, even then
    assert client.get("/v1/articles/new-one/related?unknown=empty&slot=x").status_code == 404


@pytest.mark.parametrize("query", ["k=-1", "k=0", "k=101", "k=99999999999999999999999",
                                   "k=two", "explain=maybe", "unknown=sometimes", "slot="])
def test_bad_parameters_are_422_in_the_error_shape(client: TestClient, query: str) -> None:
    response = client.get(f"/v1/articles/t01/related?{query}")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["message"]
    assert "Traceback" not in response.text


def test_etag_and_304_and_cache_control(client: TestClient, tiny_index: Path) -> None:
    first = client.get("/v1/articles/t01/page")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "public, max-age=30"
    again = client.get("/v1/articles/t01/page", headers={"If-None-Match": f"W/\"x\", {etag}"})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag
    # another request, another tag
    other = client.get("/v1/articles/t01/page?explain=true").headers["ETag"]
    assert other != etag
    assert client.get("/v1/articles/t02/page").headers["ETag"] != etag
    # an editor's block changes the answer: the old tag no longer matches
    OverridesFile(tiny_index).block("t02")
    changed = client.get("/v1/articles/t01/page", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert "t02" not in json.dumps(changed.json()["slots"])


def test_a_rebuild_is_followed_without_restart(client: TestClient, tiny_index: Path,
                                               tmp_path: Path) -> None:
    before = client.get("/v1/articles/t01/page")
    assert client.get("/v1/articles/t13/related").status_code == 404
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps(story(13, "Portmere harbour bridge reopens",
                                    "The Portmere harbour bridge reopened after the collapse."))
                   + "\n")
    build_index(tiny_index, [new], embedder=HashingEmbedder(64), incremental=True)
    after = client.get("/v1/articles/t01/page", headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200
    assert after.headers["X-Index-Version"] != before.headers["X-Index-Version"]
    assert after.json()["version"] == after.headers["X-Index-Version"]
    assert client.get("/v1/articles/t13/related").status_code == 200


@pytest.mark.parametrize("article_id", ["news/2026/11/bridge", "../../etc/passwd",
                                        "Ünïcødé-新聞-😀", "a b?c#d&e=f"])
def test_awkward_ids_are_served(tmp_path: Path, article_id: str) -> None:
    records = [story(1, "Harbour bridge collapses", "The harbour bridge collapsed."),
               story(2, "Harbour bridge collapse cause", "The harbour bridge collapse cause.")]
    records[0]["id"] = article_id
    build_index(tmp_path / "odd", records, embedder=HashingEmbedder(64))
    client = TestClient(create_app(Recommender.open(tmp_path / "odd")))
    response = client.get(f"/v1/articles/{quote(article_id, safe='')}/similar")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == article_id
    assert [r["id"] for r in response.json()["results"]] == ["t02"]
    back = client.get("/v1/articles/t02/similar").json()["results"]
    assert [r["id"] for r in back] == [article_id]


def test_a_10_kb_id_is_a_404_not_a_crash(client: TestClient) -> None:
    response = client.get("/v1/articles/" + "x" * 10_000 + "/page")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "article_not_found"


def test_a_failure_is_500_internal_without_a_traceback(rec: Recommender,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(article_id: str) -> None:
        raise RuntimeError("secret detail /srv/index")

    monkeypatch.setattr(rec, "page", broken)
    response = TestClient(create_app(rec), raise_server_exceptions=False).get(
        "/v1/articles/t01/page")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal server error"}}
    assert "secret" not in response.text


def test_no_write_endpoints(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    methods = {m for ops in schema["paths"].values() for m in ops}
    assert methods == {"get", "post"}
    assert [p for p, ops in schema["paths"].items() if "post" in ops] == ["/v1/related:batch"]
    response = client.delete("/v1/articles/t01/page")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_state_tag_changes_with_version_overrides_and_clock(tiny_index: Path) -> None:
    from datetime import timedelta

    rec = Recommender.open(tiny_index, reload_interval=0, now=NOW)
    tag = rec.state()
    assert rec.state() == tag
    OverridesFile(tiny_index).block("t03")
    assert rec.state() != tag
    later = Recommender.open(tiny_index, now=NOW + timedelta(minutes=1))
    assert later.state() != rec.state()
    tag = rec.state()
    (tiny_index / "recommender.toml").write_text("[slots.see_also]\nk = 1\n")
    assert rec.state() != tag and len(rec.page("t01")["see_also"]) <= 1


def test_serve_without_the_extra_names_it(tiny_index: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from click.testing import CliRunner

    from recommender.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    import recommender

    monkeypatch.delitem(sys.modules, "recommender.server", raising=False)
    monkeypatch.delattr(recommender, "server", raising=False)
    result = CliRunner().invoke(main, ["serve", "--index", str(tiny_index)])
    assert result.exit_code == 1
    assert "pip install 'recommender[server]'" in result.output
    assert "Traceback" not in result.output


def test_serve_a_missing_index_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from recommender.cli import main

    result = CliRunner().invoke(main, ["serve", "--index", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_serve_with_workers_answers_over_http(tiny_index: Path) -> None:
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "recommender", "serve", "--index", str(tiny_index),
         "--port", str(port), "--workers", "2", "--max-age", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/articles/t01/page")
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1].decode()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=5"
        expected = Recommender.open(tiny_index).page("t01")
        assert response.json()["slots"] == {n: dicts(r) for n, r in expected.items()}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_readme_curl_examples_work_as_written(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from recommender import sample_corpus_path

    from .conftest import live_server

    if shutil.which("curl") is None:
        pytest.skip("no curl on PATH")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## HTTP API"):readme.index("### Serving speed over HTTP")]
    examples = section.split("```sh")[2].split("```")[0]
    assert examples.count("curl ") >= 10
    build_index(tmp_path / "demo", [sample_corpus_path()], embedder=HashingEmbedder(64))
    with live_server(create_app(Recommender.open(tmp_path / "demo"))) as url:
        # Each example as written, on this server's port; an HTTP error fails it.
        script = ("set -euo pipefail\n"
                  'curl() { command curl --silent --show-error --fail-with-body "$@"; echo; }\n'
                  + examples.replace("http://127.0.0.1:8000", url))
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert '"slots":{"see_also":[],"you_may_also_like":[]}' in out  # ?unknown=empty
    assert "HTTP/1.1 304 Not Modified" in out and '"status":"ok"' in out
    assert '"results":{"a001":[' in out  # the batch


def counted_pages(monkeypatch: pytest.MonkeyPatch, rec: Recommender) -> list[str]:
    """The ids `rec.page` is asked for from now on (what the server computed, not sent from
    memory)."""
    calls: list[str] = []
    page = rec.page

    def counted(article_id: str, **kwargs: Any) -> Any:
        calls.append(article_id)
        return page(article_id, **kwargs)

    monkeypatch.setattr(rec, "page", counted)
    return calls


def test_a_repeated_request_is_answered_from_memory_until_the_state_moves(
        rec: Recommender, tiny_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counted_pages(monkeypatch, rec)
    client = TestClient(create_app(rec))
    first = client.get("/v1/articles/t01/page")
    again = client.get("/v1/articles/t01/page")
    assert calls == ["t01"]  # the repeat cost no query
    assert again.content == first.content and again.headers == first.headers
    assert client.get("/v1/articles/t01/page",
                      headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    head = client.head("/v1/articles/t01/page")
    assert head.content == b"" and head.headers == first.headers
    assert calls == ["t01"]
    client.get("/v1/articles/t01/page?section=world")
    assert calls == ["t01", "t01"]  # another query, another answer
    # an editor's block: the kept answer is not sent again
    OverridesFile(tiny_index).block("t02")
    changed = client.get("/v1/articles/t01/page")
    assert calls[-1] == "t01" and len(calls) == 3
    assert "t02" not in json.dumps(changed.json()["slots"]) and "t02" in first.text
    # errors are never kept
    assert client.get("/v1/articles/nope/page").status_code == 404
    assert client.get("/v1/articles/nope/page").status_code == 404
    assert calls[-2:] == ["nope", "nope"]
    # and the cache can be off
    calls.clear()
    uncached = TestClient(create_app(rec, cache_bytes=0))
    uncached.get("/v1/articles/t01/page")
    uncached.get("/v1/articles/t01/page")
    assert calls == ["t01", "t01"]


def test_in_the_background_a_new_version_is_answered_before_it_is_served(
        tiny_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOMMENDER_NOW", NOW.isoformat())  # no new minute mid-test
    asked: list[tuple[str, str]] = []
    related = Recommender.related

    def counted(self: Recommender, article_id: str, **kwargs: Any) -> Any:
        asked.append((article_id, self.version))
        return related(self, article_id, **kwargs)

    monkeypatch.setattr(Recommender, "related", counted)
    app = create_app(tiny_index, switch_in_background=True)
    client = TestClient(app)  # no lifespan: the follower is stepped by hand below
    before = client.get("/v1/articles/t01/related")
    client.get("/v1/articles/t02/related")
    old = before.headers["X-Index-Version"]
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps(story(13, "Portmere harbour bridge reopens",
                                    "The Portmere harbour bridge reopened after the collapse."))
                   + "\n")
    published = build_index(tiny_index, [new], embedder=HashingEmbedder(64),
                            incremental=True).version
    # until the switch, readers get the version they had, whole
    assert client.get("/v1/articles/t01/related",
                      headers={"If-None-Match": before.headers["ETag"]}).status_code == 304
    assert client.get("/v1/articles/t13/page").status_code == 404
    assert asked == [("t01", old), ("t02", old)]
    follower = app.state.follower
    assert asyncio.run(follower.follow_once()) is True
    # the kept answers were computed again for the new version, before it was served
    assert follower.warmed == 2
    assert asked[2:] == [("t02", published), ("t01", published)]  # most recently kept first
    after = client.get("/v1/articles/t01/related")
    assert len(asked) == 4  # sent from the answers computed ahead
    assert after.headers["X-Index-Version"] == after.json()["version"] == published
    assert client.get("/v1/articles/t13/page").status_code == 200
    assert asyncio.run(follower.follow_once()) is False  # nothing new: no switch


def test_the_background_follower_runs_with_the_server(tiny_index: Path, tmp_path: Path
                                                      ) -> None:
    with TestClient(create_app(tiny_index, switch_in_background=True)) as client:  # lifespan
        old = client.get("/healthz").json()["version"]
        new = tmp_path / "new.jsonl"
        new.write_text(json.dumps(story(13, "Portmere harbour bridge reopens", "Reopened."))
                       + "\n")
        build_index(tiny_index, [new], embedder=HashingEmbedder(64), incremental=True)
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["version"] == old and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/v1/articles/t13/related").status_code == 200


def test_the_server_reads_each_version_ahead_before_it_serves_it(
        tiny_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # at start, and at each switch before the new version answers: its first pages then do
    # not wait on the disk (Recommender.prefetch)
    read: list[str] = []
    monkeypatch.setattr(Recommender, "prefetch", lambda self: read.append(self.version) or 0)
    app = create_app(tiny_index, switch_in_background=True)
    with TestClient(app) as client:
        first = client.get("/healthz").json()["version"]
        assert read == [first]
        new = tmp_path / "new.jsonl"
        new.write_text(json.dumps(story(13, "Portmere harbour bridge reopens", "Reopened."))
                       + "\n")
        published = build_index(tiny_index, [new], embedder=HashingEmbedder(64),
                                incremental=True).version
        assert asyncio.run(app.state.follower.follow_once()) is True
        assert read == [first, published]
        assert client.get("/healthz").json()["version"] == published

    def failing(self: Recommender) -> int:
        raise OSError("no such device")

    monkeypatch.setattr(Recommender, "prefetch", failing)  # only costs the disk reads
    with TestClient(create_app(tiny_index)) as client:
        assert client.get("/v1/articles/t01/related").status_code == 200


def test_switching_in_the_background_needs_the_index_path(rec: Recommender) -> None:
    with pytest.raises(TypeError):
        create_app(rec, switch_in_background=True)


def test_a_page_a_publish_did_not_touch_is_carried_to_the_new_version_uncomputed(
        tiny_index: Path, tmp_path: Path, tiny_records: list[dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOMMENDER_NOW", NOW.isoformat())  # no new minute mid-test
    asked: list[str] = []
    page = Recommender.page

    def counted(self: Recommender, article_id: str, **kwargs: Any) -> Any:
        asked.append(article_id)
        return page(self, article_id, **kwargs)

    monkeypatch.setattr(Recommender, "page", counted)
    app = create_app(tiny_index, switch_in_background=True)
    client = TestClient(app)
    before = {i: client.get(f"/v1/articles/{i}/page") for i in ("t01", "t09")}
    # the embargoed article is edited: it is no page's candidate, no page changes
    edited = tmp_path / "edited.jsonl"
    edited.write_text(json.dumps(dict(tiny_records[11], title="Embargoed: budget figures"))
                      + "\n")
    published = build_index(tiny_index, [edited], embedder=HashingEmbedder(64),
                            incremental=True).version
    follower = app.state.follower
    assert asyncio.run(follower.follow_once()) is True
    assert follower.warmed == 0 and asked == ["t01", "t09"]  # nothing computed again
    for article_id, old in before.items():
        after = client.get(f"/v1/articles/{article_id}/page")
        assert after.headers["X-Index-Version"] == after.json()["version"] == published
        assert after.json()["slots"] == old.json()["slots"]
        assert after.headers["ETag"] == old.headers["ETag"]  # a CDN revalidates with a 304
        assert client.get(f"/v1/articles/{article_id}/page",
                          headers={"If-None-Match": old.headers["ETag"]}).status_code == 304
    assert asked == ["t01", "t09"]
    fresh = Recommender.open(tiny_index).page("t01")
    assert client.get("/v1/articles/t01/page").json()["slots"] == \
        {name: [r.to_dict() for r in links] for name, links in fresh.items()}
    # a publish that touches the pages: computed again ahead of the switch, not carried
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps(story(13, "Portmere harbour bridge reopens",
                                    "The Portmere harbour bridge reopened after the collapse."))
                   + "\n")
    build_index(tiny_index, [new], embedder=HashingEmbedder(64), incremental=True)
    computed = len(asked)  # (the fresh reader's page above is counted too)
    assert asyncio.run(follower.follow_once()) is True
    assert follower.warmed == 2 and sorted(asked[computed:]) == ["t01", "t09"]
    touched = client.get("/v1/articles/t01/page")
    assert len(asked) == computed + 2  # sent from the answer computed ahead
    assert touched.headers["ETag"] != before["t01"].headers["ETag"]
    fresh = Recommender.open(tiny_index).page("t01")
    assert touched.json()["slots"] == \
        {name: [r.to_dict() for r in links] for name, links in fresh.items()}
    assert "t13" in touched.text


def test_the_next_minute_carries_a_kept_page_that_did_not_change(
        tiny_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [NOW]
    rec = Recommender.open(tiny_index, reload_interval=0, now=lambda: clock[0])
    calls = counted_pages(monkeypatch, rec)
    client = TestClient(create_app(rec))
    first = client.get("/v1/articles/t01/page")
    state = rec.state()
    clock[0] = NOW + timedelta(minutes=1)
    assert rec.state() != state
    again = client.get("/v1/articles/t01/page")
    assert calls == ["t01"] and again.content == first.content


def test_a_switch_computes_ahead_only_the_pages_read_last(
        tiny_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOMMENDER_NOW", NOW.isoformat())
    monkeypatch.setattr(server, "WARM_PAGES", 1)
    app = create_app(tiny_index, switch_in_background=True)
    client = TestClient(app)
    client.get("/v1/articles/t02/page")
    client.get("/v1/articles/t01/page")  # read last
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps(story(13, "Portmere harbour bridge reopens",
                                    "The Portmere harbour bridge reopened after the collapse."))
                   + "\n")
    build_index(tiny_index, [new], embedder=HashingEmbedder(64), incremental=True)
    assert asyncio.run(app.state.follower.follow_once()) is True
    assert app.state.follower.warmed == 1
    fresh = Recommender.open(tiny_index)
    for article_id in ("t01", "t02"):  # the other one is computed on its first request
        assert client.get(f"/v1/articles/{article_id}/page").json()["slots"] == \
            {n: [r.to_dict() for r in links] for n, links in fresh.page(article_id).items()}
