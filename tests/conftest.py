"""Shared fixtures. The fast suite uses the deterministic HashingEmbedder (bag of words, no
model); tests marked `model` use the real bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from recommender import HashingEmbedder, build_index
from recommender.articles import format_datetime

FAKE_MODEL = "hashing:64"
# Freshness is computed against "now": tests that compare answers over time pin it.
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every CLI run and subprocess it starts) sees the same "now", so none
    ages out of an age limit as the calendar moves on."""
    monkeypatch.setenv("RECOMMENDER_NOW", format_datetime(NOW) or "")


def story(i: int, title: str, body: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"t{i:02d}", "title": title, "body": body,
            "url": f"https://news.example.org/t{i:02d}",
            "published_at": f"2026-11-{i + 1:02d}T09:00:00Z", "section": "world",
            "tags": ["tiny"], "language": "en", **extra}


# Three topics whose articles share vocabulary, so the bag-of-words embedder groups them.
TINY = [
    story(1, "Harbour bridge collapses in Portmere",
          "The harbour bridge in Portmere collapsed at dawn. Divers searched the harbour."),
    story(2, "Portmere bridge collapse: divers find cause",
          "Divers in Portmere harbour say corroded cables caused the bridge collapse."),
    story(3, "Portmere bridge rebuild to cost millions",
          "Rebuilding the Portmere harbour bridge after the collapse will cost millions."),
    story(4, "Portmere bridge inquiry opens (draft)",
          "An inquiry into the Portmere harbour bridge collapse opens.", status="draft"),
    story(5, "Portmere bridge collapse victims named",
          "Portmere named the victims of the harbour bridge collapse.", status="deleted"),
    story(6, "Central bank raises interest rates",
          "The central bank raised interest rates by half a point to fight inflation."),
    story(7, "Markets fall after central bank rate rise",
          "Markets fell after the central bank interest rate rise; inflation fears grew."),
    story(8, "Mortgage costs climb after interest rate rise",
          "Mortgage costs climbed as banks passed on the central bank interest rate rise."),
    story(9, "Local team wins cup final",
          "The local football team won the cup final with a late goal in extra time."),
    story(10, "Cup final hero signs new contract",
          "The football striker who scored the cup final goal signed a new contract."),
    story(11, "Museum opens new wing",
          "The city museum opened a new wing for modern sculpture and painting."),
    story(12, "Embargoed: budget details",
          "Budget details on central bank interest rates and inflation.", status="embargoed"),
]


@pytest.fixture
def tiny_records() -> list[dict[str, Any]]:
    return [dict(r) for r in TINY]


@pytest.fixture
def tiny_jsonl(tmp_path: Path, tiny_records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny_records))
    return path


@pytest.fixture
def tiny_index(tmp_path: Path, tiny_jsonl: Path) -> Path:
    index = tmp_path / "index"
    build_index(index, [tiny_jsonl], embedder=HashingEmbedder(64))
    return index


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free port of 127.0.0.1; yields its base URL.
    For what needs a real HTTP server (a browser, curl)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        host, port = sock.getsockname()
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
