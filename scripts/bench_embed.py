"""Embedding speed: plain `SentenceTransformer.encode` (fp32) vs the project's runtimes, same
texts, one run.

Every round runs each path once over all texts, in turn; the table gives per path the median
articles/s, the MEDIAN over rounds of its speed-up against plain encode in the same round (a
shared machine drifts by ±15% between minutes, which a ratio of medians would blur), and the
cosine of its vectors with plain fp32 encode (min and mean over texts).

    python scripts/bench_embed.py [--input FILE.jsonl] [--limit N] [--repeat N] [--rounds R]
                                  [--threads T] [--explore]

The texts are `embed_text_for(article)` of the input (default: the bundled sample corpus,
repeated N times so the timing covers more than a few batches). --explore adds torch fp32 and
OpenVINO variants: LATENCY vs THROUGHPUT hint, batch sizes, unsorted input, fp32.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from recommender import load_articles, sample_corpus_path
from recommender.embedding import (
    OPENVINO_BATCH,
    TORCH_BATCH,
    SentenceTransformerEmbedder,
    cpu_supports_bf16,
    default_model_path,
    normalise,
)
from recommender.text import embed_text_for

Encode = Callable[[Sequence[str]], np.ndarray]


def openvino_variant(hint: str, batch: int, *, bf16: bool = True, sort: bool = True
                     ) -> Encode:
    """An OpenVINO encoder outside the embedder, to try settings the embedder does not expose."""
    from sentence_transformers import SentenceTransformer

    from recommender.embedding.openvino_runtime import OpenVINOEncoder

    model = SentenceTransformer(str(default_model_path()), device="cpu")
    encoder = OpenVINOEncoder(model, default_model_path(), bf16=bf16, batch_size=batch,
                              hint=hint)

    def encode(texts: Sequence[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable") if sort \
            else np.arange(len(texts))
        out = np.empty((len(texts), 384), dtype=np.float32)
        out[order] = encoder.encode([texts[i] for i in order])
        return normalise(out)

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(sample_corpus_path()))
    parser.add_argument("--limit", type=int, default=None,
                        help="Use the first N articles of the input.")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="Threads for torch and OpenVINO [default: torch's, one a core].")
    parser.add_argument("--explore", action="store_true",
                        help="Also time torch fp32 and OpenVINO hints, batch sizes, unsorted "
                             "input, fp32.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # OpenVINOEncoder takes torch's count
    from sentence_transformers import SentenceTransformer

    articles = list(load_articles(args.input))[:args.limit]
    texts = [embed_text_for(a) for a in articles] * args.repeat
    random.Random(0).shuffle(texts)  # an export's order, not the corpus's story order
    words = np.mean([len(t.split()) for t in texts])
    print(f"{len(texts)} texts, {words:.0f} words on average; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.machine()}, "
          f"native bf16: {cpu_supports_bf16()}")

    plain = SentenceTransformer(str(default_model_path()), device="cpu")
    paths: dict[str, Encode] = {
        "plain encode (fp32, batch 32)": lambda t: plain.encode(list(t),
                                                                normalize_embeddings=True)}
    for precision in (("fp32", "auto") if args.explore else ("auto",)):
        embedder = SentenceTransformerEmbedder(precision=precision, runtime="torch")
        paths[f"torch {embedder.precision}, sorted, batch {TORCH_BATCH}"] = embedder.embed
    try:
        embedder = SentenceTransformerEmbedder(runtime="openvino")
        embedder.runtime  # noqa: B018 - loads it, or says why it cannot
        paths[f"openvino {embedder.precision}, sorted, batch {OPENVINO_BATCH} "
              "(default)"] = embedder.embed
    except Exception as exc:  # the table says why the row is missing
        print(f"openvino: {exc}")
    if args.explore:
        for hint, batch in (("LATENCY", 32), ("LATENCY", 64), ("THROUGHPUT", 8),
                            ("THROUGHPUT", 32), ("THROUGHPUT", 64)):
            paths[f"openvino bf16, {hint.lower()}, batch {batch}"] = \
                openvino_variant(hint, batch)
        paths[f"openvino bf16, unsorted, batch {OPENVINO_BATCH}"] = \
            openvino_variant("THROUGHPUT", OPENVINO_BATCH, sort=False)
        paths[f"openvino fp32, sorted, batch {OPENVINO_BATCH}"] = \
            openvino_variant("THROUGHPUT", OPENVINO_BATCH, bf16=False)
    for encode in paths.values():
        encode(texts[:16])  # load and warm up
    rates: dict[str, list[float]] = {name: [] for name in paths}
    vectors: dict[str, np.ndarray] = {}
    for round_number in range(args.rounds):
        for name, encode in paths.items():
            started = time.perf_counter()
            vectors[name] = np.asarray(encode(texts), dtype=np.float32)
            rates[name].append(len(texts) / (time.perf_counter() - started))
        print(f"round {round_number + 1}: " + ", ".join(
            f"{rates[name][-1]:.1f}" for name in paths), flush=True)
    reference_name = next(iter(paths))
    reference = vectors[reference_name]
    base = np.array(rates[reference_name])
    width = max(len(name) for name in paths)
    print(f"\nmedian of {args.rounds} interleaved rounds")
    print(f"{'path':<{width}} {'articles/s':>10} {'speed-up':>9} {'min cos':>8} "
          f"{'mean cos':>9}")
    for name in paths:
        speed_up = float(np.median(np.array(rates[name]) / base))
        cosine = (vectors[name] * reference).sum(axis=1)
        print(f"{name:<{width}} {np.median(rates[name]):10.1f} {speed_up:8.2f}× "
              f"{cosine.min():8.5f} {cosine.mean():9.5f}")


if __name__ == "__main__":
    main()
