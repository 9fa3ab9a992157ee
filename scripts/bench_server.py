"""Load on `recommender serve`: requests/s and latency of `/v1/articles/{id}/page`.

Starts `recommender serve` as a subprocess on a free port of 127.0.0.1 over (a) the sample
corpus built with the real model and (b) N synthetic articles (scripts/bench_related.py's
clustered vectors), then drives it with 1, 8 and 64 concurrent closed-loop clients (random
ids, no caching on the client side), and once more at 64 while another process publishes an
update every few seconds (at `--nice` priority: the deployment advice in the README). During
publishes a thread asks /healthz every 50 ms which version is served, and the table says how
long the slowest publish took to be served ("switch"). Prints one table and the load average;
bounded in time (`--seconds` per row).

    python scripts/bench_server.py [--articles 5000] [--seconds 5] [--workers 1]
                                   [--publish-every 3] [--nice 10] [--no-sample] [--wrk]
                                   [--http-server granian|uvicorn] [--popularity zipf]
                                   [--pages]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_related import ClusteredEmbedder, records

from recommender import Recommender, build_index, load_embedder, sample_corpus_path

HOST = "127.0.0.1"  # never anything else: this is a load generator


@dataclass
class Row:
    index: str
    clients: int
    publishing: bool
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    publishes: int = 0
    switch: float | None = None  # seconds from the slowest publish to its version served

    def line(self) -> str:
        lat = sorted(self.latencies) or [float("nan")]

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

        during = f"yes ({self.publishes}, switch ≤ {self.switch:.2f} s)" \
            if self.publishing and self.switch is not None else \
            f"yes ({self.publishes}, not all served)" if self.publishing else "no"
        return (f"| {self.index} | {self.clients} | {during} | {self.requests / self.seconds:,.0f}"
                f" | {pct(0.50):.1f} | {pct(0.99):.1f} | {self.errors} |")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(index: Path, port: int, workers: int, http_server: str
                 ) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "recommender", "serve", "--index", str(index), "--host", HOST,
         "--port", str(port), "--workers", str(workers), "--http-server", http_server],
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            if process.poll() is not None:
                raise SystemExit(process.communicate()[1].decode()) from None
            time.sleep(0.2)
    process.kill()
    raise SystemExit("recommender serve did not start within 60 s")


async def drive(port: int, ids: list[str], clients: int, seconds: float, zipf: bool = False
                ) -> tuple[int, int, list[float]]:
    """`clients` closed-loop clients for `seconds`, each on its own keep-alive connection,
    sending its next request when the previous answer is in. HTTP/1.1 is written by hand over
    asyncio streams: an httpx.AsyncClient costs more CPU per request than the server does, and
    on a shared 2-core machine it would be the client that is measured."""
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def one_client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < end:
                path = f"/v1/articles/{quote(pick(ids, rng, zipf), safe='')}/page"
                started = time.perf_counter()
                try:
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                    ok = status == 200 and b'"slots"' in body
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
                latencies.append(time.perf_counter() - started)
                errors += not ok
        finally:
            writer.close()

    await asyncio.gather(*(one_client(seed) for seed in range(clients)))
    return len(latencies), errors, latencies


WRK_SCRIPT = """
local ids = {%s}
local zipf = %s
request = function()
  local i = zipf and math.floor((#ids) ^ math.random()) or math.random(#ids)
  return wrk.format("GET", "/v1/articles/" .. ids[math.max(i, 1)] .. "/page")
end
"""


def pick(ids: list[str], rng: random.Random, zipf: bool) -> str:
    """A random id: uniformly, or with Zipf popularity (s = 1: the id of rank r is asked
    about 1/r as often as the first; `ids` in a shuffled order), as the readers of a news
    site spread over its pages."""
    if not zipf:
        return rng.choice(ids)
    return ids[max(int(len(ids) ** rng.random()), 1) - 1]


def drive_wrk(port: int, ids: list[str], clients: int, seconds: float, zipf: bool = False
              ) -> tuple[int, int, list[float]]:
    """The same load from wrk (a C load generator, one thread, `clients` keep-alive
    connections, random ids): it costs the shared cores far less than a Python client.
    Returns what drive() does, with the p50 and p99 that wrk reports standing for the
    latencies; errors are non-2xx answers and socket errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(WRK_SCRIPT % (", ".join(json.dumps(quote(i, safe="")) for i in ids),
                                "true" if zipf else "false"))
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency",
                              "--timeout", "30s",  # a slow answer is measured, not an error
                              "-s", lua.name, f"http://{HOST}:{port}"],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(lua.name)

    def ms(label: str) -> float:
        # a line of wrk's "Latency Distribution" ("     99%   12.34ms"), not a "99%" that
        # ends another figure (a stdev share of 78.99%)
        match = re.search(rf"^\s+{label}%\s+(\S+)\s*$", out, re.MULTILINE)
        if match is None:
            raise ValueError(out)
        value = match.group(1)
        for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
            if value.endswith(unit):
                return float(value[:-len(unit)]) * scale
        raise ValueError(value)

    requests = int(out.split(" requests in ")[0].split()[-1])
    errors = int(out.split("Non-2xx or 3xx responses:")[1].split()[0]) \
        if "Non-2xx" in out else 0
    if "Socket errors:" in out:  # connect 0, read 0, write 0, timeout 0
        line = out.split("Socket errors:")[1].splitlines()[0]
        errors += sum(int(part.split()[-1]) for part in line.split(","))
    # wrk's p50 and p99 as a list of 100 latencies whose 50th and 99th are those
    latencies = [ms("50")] * 99 + [ms("99")]
    return requests, errors, latencies


class VersionWatch(threading.Thread):
    """Asks /healthz every 50 ms (one connection; 20 requests a second next to thousands) and
    notes when each version is first served."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, threading.Event()
        self.seen: dict[str, float] = {}

    def run(self) -> None:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=30)
        while not self.stop.wait(0.05):
            try:
                connection.request("GET", "/healthz")
                version = json.loads(connection.getresponse().read())["version"]
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                connection.close()
                continue
            self.seen.setdefault(version, time.time())


def switch_lag(published: list[dict[str, object]], seen: dict[str, float]) -> float | None:
    """The longest time from a publish to the first answer of that version (or of a later
    one: a server may skip a version published while it switched); None if one never was."""
    lags = []
    for p in published:
        at = float(p["at"])  # type: ignore[arg-type]
        later = [t for v, t in seen.items() if t >= at - 1.0 and v >= str(p["version"])]
        if not later:
            return None
        lags.append(max(0.0, min(later) - at))
    return max(lags, default=None)


def measure(name: str, index: Path, args: argparse.Namespace, publisher: list[str]
            ) -> list[Row]:
    ids = Recommender.open(index).ids()
    random.Random(3).shuffle(ids)  # popularity (with --popularity zipf) not by row order
    zipf = args.popularity == "zipf"
    port = free_port()
    server = start_server(index, port, args.workers, args.http_server)
    rows = []

    def load(clients: int, seconds: float) -> tuple[int, int, list[float]]:
        if args.wrk:
            return drive_wrk(port, ids, clients, seconds, zipf)
        return asyncio.run(drive(port, ids, clients, seconds, zipf))

    try:
        asyncio.run(drive(port, ids, 8, 1.0))  # warm-up
        for clients in (1, 8, 64):
            started = time.perf_counter()
            n, errors, lat = load(clients, args.seconds)
            rows.append(Row(name, clients, False, n, errors, time.perf_counter() - started, lat))
            print(rows[-1].line(), file=sys.stderr)
        publishing = subprocess.Popen(publisher, stdout=subprocess.PIPE, text=True)
        watch = VersionWatch(port)
        try:
            assert publishing.stdout is not None
            publishing.stdout.readline()  # its first publish: the model is loaded
            watch.start()
            wall, started = time.time(), time.perf_counter()
            n, errors, lat = load(64, max(args.seconds, 3 * args.publish_every))
            seconds = time.perf_counter() - started
        finally:
            publishing.terminate()
            out, _ = publishing.communicate(timeout=60)
        time.sleep(2 * args.publish_every)  # the last publish's switch, without load
        watch.stop.set()
        watch.join()
        published = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        during = [p for p in published if wall <= p["at"] <= wall + seconds]
        for p in during:
            pages = p.get("pages") or {}
            print(f"  publish {p['version']}: {p['seconds']:.1f} s"
                  + (f", pages computed {pages['computed']}, reused {pages['reused']}"
                     if pages else ""), file=sys.stderr)
        rows.append(Row(name, 64, True, n, errors, seconds, lat, publishes=len(during),
                        switch=switch_lag(during, watch.seen)))
        print(rows[-1].line(), file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def publish_loop(index: Path, kind: str, every: float, clusters: int, nice: int) -> None:
    """Another process: an update of one new article every `every` seconds, until killed,
    at niceness `nice` (the README's advice: the update is batch work, the server is not)."""
    os.nice(nice)
    if kind == "synthetic":
        embedder = ClusteredEmbedder(clusters)
    else:
        embedder = load_embedder(Recommender.open(index).info()["model"])
    template = Recommender.open(index).articles()[0]
    for i in range(10**9):
        if kind == "synthetic":
            record = dict(records(1, clusters, seed=10_000 + i)[0], id=f"pub{i:05d}")
            record["title"] = f"cluster {i % clusters} item {10**7 + i}"
        else:
            record = {"id": f"pub{i:05d}", "title": f"{template.title} (update {i})",
                      "body": template.body, "section": template.section}
        next_at = time.monotonic() + every
        report = build_index(index, [record], embedder=embedder, incremental=True)
        print(json.dumps({"at": time.time(), "id": record["id"], "version": report.version,
                          "seconds": report.seconds,
                          "pages": report.pages.to_dict() if report.pages else None}),
              flush=True)
        time.sleep(max(0.0, next_at - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=5000,
                        help="synthetic articles (0: none)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per row")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--publish-every", type=float, default=3.0)
    parser.add_argument("--http-server", default="granian", choices=["granian", "uvicorn"],
                        help="what `recommender serve` runs on")
    parser.add_argument("--nice", type=int, default=10,
                        help="niceness of the publishing process (0: the server's priority)")
    parser.add_argument("--wrk", action="store_true",
                        help="drive the load with wrk (Debian package wrk) instead of the "
                             "Python client")
    parser.add_argument("--popularity", default="uniform", choices=["uniform", "zipf"],
                        help="which ids are asked for: uniformly at random, or with Zipf "
                             "popularity (s = 1), as readers spread over a site's pages")
    parser.add_argument("--pages", action="store_true",
                        help="build the indexes with their pages computed ahead (build "
                             "--pages; the publishes keep them)")
    parser.add_argument("--no-sample", action="store_true",
                        help="skip the sample corpus (real model)")
    parser.add_argument("--publish", nargs=3, metavar=("INDEX", "KIND", "CLUSTERS"),
                        help=argparse.SUPPRESS)  # the publisher process
    args = parser.parse_args()
    if args.publish:
        publish_loop(Path(args.publish[0]), args.publish[1], args.publish_every,
                     int(args.publish[2]), args.nice)
        return
    os.environ.pop("RECOMMENDER_NOW", None)
    me = [sys.executable, __file__, "--publish-every", str(args.publish_every),
          "--nice", str(args.nice), "--publish"]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sample:
            index = Path(tmp) / "sample"
            build_index(index, [sample_corpus_path()], pages=args.pages)
            rows += measure("sample corpus (156, real model)", index, args,
                            [*me, str(index), "sample", "0"])
        if args.articles:
            index = Path(tmp) / "synthetic"
            clusters = max(args.articles // 40, 2)
            started = time.perf_counter()
            report = build_index(index, records(args.articles, clusters),
                                 embedder=ClusteredEmbedder(clusters), pages=args.pages)
            print(f"built {args.articles:,} synthetic articles in "
                  f"{time.perf_counter() - started:.1f} s"
                  + (f" (pages {report.pages.seconds:.1f} s)" if report.pages else ""),
                  file=sys.stderr)
            rows += measure(f"synthetic ({args.articles:,})", index, args,
                            [*me, str(index), "synthetic", str(clusters)])
    print(f"\n`/v1/articles/{{id}}/page`, {args.http_server}, {args.workers} worker(s), "
          f"{args.seconds:g} s a row, publishes every {args.publish_every:g} s at nice "
          f"{args.nice}, load from {'wrk' if args.wrk else 'the Python client'}, "
          f"{args.popularity} ids, {'pages computed ahead' if args.pages else 'no pages ahead'}; "
          f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min) "
          f"at the end:\n")
    print("| index | clients | during publishes | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.line())


if __name__ == "__main__":
    main()
