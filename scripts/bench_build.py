"""Time `recommender build` and `update` on the bundled sample corpus, as a user runs them.

Each step is the real CLI in a subprocess (so model loading and start-up are included):
  full build (empty index) / rebuild with nothing changed / update with 3 changed articles.

    python scripts/bench_build.py [--precision auto|fp32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recommender import sample_corpus_path


def timed(*args: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "recommender", *args, "--json"],
                         check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - started, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()
    corpus = sample_corpus_path()
    lines = corpus.read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        index = str(Path(tmp) / "index")
        changed = Path(tmp) / "changed.jsonl"
        edited = []
        for line in lines[:3]:
            record = json.loads(line)
            record["body"] += " This article was updated with new details."
            edited.append(json.dumps(record, ensure_ascii=False))
        changed.write_text("\n".join(edited) + "\n", encoding="utf-8")
        common = ["--index", index, "--precision", args.precision]
        rows = [
            ("full build", *timed("build", str(corpus), *common)),
            ("rebuild, nothing changed", *timed("build", str(corpus), *common)),
            ("update, 3 changed", *timed("update", str(changed), *common)),
        ]
    print(f"sample corpus: {len(lines)} articles, precision {args.precision}")
    print(f"{'step':<26} {'wall s':>7} {'embedded':>9} {'embed s':>8}")
    for name, seconds, report in rows:
        print(f"{name:<26} {seconds:7.2f} {report['embedded']:>9} {report['embed_seconds']:>8}")


if __name__ == "__main__":
    main()
