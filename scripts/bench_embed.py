"""Embedding speed: plain `SentenceTransformer.encode` vs the project's path, same texts, one run.

Reports articles/second for each, the speed-up, and the cosine agreement of the vectors with
plain fp32 encode (min and mean over articles).

    python scripts/bench_embed.py [--input FILE.jsonl] [--repeat N] [--rounds R]

The texts are `embed_text_for(article)` of the input (default: the bundled sample corpus,
repeated N times so the timing covers more than a few batches).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from recommender import load_articles, sample_corpus_path
from recommender.embedding import (
    SentenceTransformerEmbedder,
    cpu_supports_bf16,
    default_model_path,
)
from recommender.text import embed_text_for


def rate(texts: list[str], encode: object) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = encode(texts)  # type: ignore[operator]
    return len(texts) / (time.perf_counter() - started), np.asarray(vectors, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(sample_corpus_path()))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    texts = [embed_text_for(a) for a in load_articles(args.input)] * args.repeat
    words = np.mean([len(t.split()) for t in texts])
    print(f"{len(texts)} texts, {words:.0f} words on average; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.machine()}, "
          f"native bf16: {cpu_supports_bf16()}")

    plain = SentenceTransformer(str(default_model_path()), device="cpu")
    paths = {"plain encode (fp32, batch 32)":
             lambda t: plain.encode(t, normalize_embeddings=True)}
    for precision in ("fp32", "auto"):
        embedder = SentenceTransformerEmbedder(precision=precision)
        paths[f"recommender ({embedder.precision}, sorted batches)"] = embedder.embed
    for encode in paths.values():
        encode(texts[:16])  # load and warm up
    # Interleave the paths over several rounds and keep the median: a shared 2-core machine
    # drifts by ±15% between minutes, which would otherwise favour whichever ran first.
    rates: dict[str, list[float]] = {name: [] for name in paths}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, encode in paths.items():
            r, vectors[name] = rate(texts, encode)
            rates[name].append(r)
    reference_name = next(iter(paths))
    reference = vectors[reference_name]
    base = float(np.median(rates[reference_name]))
    print(f"median of {args.rounds} interleaved rounds")
    print(f"{'path':<34} {'articles/s':>10} {'speed-up':>9} {'min cos':>8} {'mean cos':>9}")
    for name in paths:
        median = float(np.median(rates[name]))
        cosine = (vectors[name] * reference).sum(axis=1)
        print(f"{name:<34} {median:10.1f} {median / base:9.2f} {cosine.min():8.4f} "
              f"{cosine.mean():9.4f}")

if __name__ == "__main__":
    main()
