"""Cross-lingual check on a small parallel set: does `similar()` put an article's own
translation first in a pool of every language?

    python scripts/measure_multilingual.py [--models minilm,multilingual,e5-small] [--alone]
                                           [--set KEY=VALUE ...]
    python scripts/measure_multilingual.py --calibrate --models multilingual,e5-small
    python scripts/measure_multilingual.py --speed --models minilm,multilingual,e5-small

The set (tests/fixtures/multilingual/parallel_news.jsonl) is 16 invented news stories, each
written in English, Spanish, French and German, in pairs of one topic published a day apart
(two storms, two football stories, ...), so a model must tell the story, not the topic. As in
the issue's test, each body loses its article's own title words and all digits, so shared names
and numbers cannot carry it. For each model it prints:

- rank 1: the share of articles whose first `similar()` result is one of their translations
  (the mixed pool: all 64 articles, every language), and per source language;
- translations: the share whose translations the slots recognise (`Ranker.translation`) and
  that reach neither slot as separate stories, and the share of other stories wrongly taken
  for translations;
- cosines: translation pairs against the same topic's other story in another language (the
  closest wrong pair), which is what the per-model translation_similarity separates;
- language detection: py3langid on the titles and bodies of the set.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recommender import Recommender, build_index  # noqa: E402
from recommender.embedding import load_embedder  # noqa: E402

PARALLEL = ROOT / "tests" / "fixtures" / "multilingual" / "parallel_news.jsonl"
SAMPLE = ROOT / "recommender" / "data" / "sample_articles.jsonl"
WORD = re.compile(r"\w+")


def story_of(article_id: str) -> str:
    return article_id.rsplit("-", 1)[0]


def without_title_words(record: dict[str, str]) -> dict[str, str]:
    """The record with its own title words and every digit taken out of the body."""
    title_words = {w.casefold() for w in WORD.findall(record["title"])}
    body = WORD.sub(lambda m: "" if m.group().casefold() in title_words else m.group(),
                    record["body"])
    body = re.sub(r"\d", "", body)
    return {**record, "body": re.sub(r"\s+", " ", body).strip()}


def load(strip: bool = True) -> list[dict[str, str]]:
    records = [json.loads(line) for line in PARALLEL.read_text().splitlines() if line]
    return [without_title_words(r) if strip else r for r in records]


def distractors() -> list[dict[str, str]]:
    """The bundled sample corpus (English, a few Spanish and German), dated into the parallel
    set's month and without translation links: other stories the translations must beat."""
    out = []
    for n, line in enumerate(SAMPLE.read_text().splitlines()):
        record = json.loads(line)
        record = {k: v for k, v in record.items()
                  if k in ("id", "title", "body", "language", "section")}
        record["published_at"] = f"2026-03-{1 + n % 28:02d}T{n % 24:02d}:30:00Z"
        out.append(record)
    return out


def calibrate(model: str) -> tuple[float, float]:
    """semantic_offset and semantic_scale that map `model`'s cosines onto MiniLM's: least
    squares over the pairs that matter (each sample article's 20 nearest by either model)."""
    from recommender.articles import load_articles
    from recommender.text import embed_text_for

    texts = [embed_text_for(a) for a in load_articles([SAMPLE])]
    reference = load_embedder("minilm").embed(texts)
    theirs = load_embedder(model).embed(texts)
    a, b = reference @ reference.T, theirs @ theirs.T
    np.fill_diagonal(a, -np.inf)
    np.fill_diagonal(b, -np.inf)
    near = np.zeros_like(a, dtype=bool)
    for m in (a, b):
        top = np.argsort(-m, axis=1)[:, :20]
        near[np.arange(len(m))[:, None], top] = True
    scale, offset = np.polyfit(b[near], a[near], 1)
    return float(offset), float(scale)


def speed(model: str) -> float:
    """Texts a second, embedding the sample corpus once after a warm-up batch."""
    from recommender.articles import load_articles
    from recommender.text import embed_text_for

    texts = [embed_text_for(a) for a in load_articles([SAMPLE])]
    embedder = load_embedder(model)
    embedder.embed(texts[:8])
    started = time.perf_counter()
    embedder.embed(texts)
    return len(texts) / (time.perf_counter() - started)


def calibrate_across() -> dict[str, float]:
    """What words and names score for a same-language pair of a given MiniLM cosine: least
    squares over each sample article's 20 nearest (the across_* settings)."""
    from recommender.ranking import Ranker

    with tempfile.TemporaryDirectory() as tmp:
        build_index(Path(tmp) / "i", [SAMPLE], embedder=load_embedder("minilm"))
        rec = Recommender.open(Path(tmp) / "i", reload_interval=-1)
        version = rec.snapshot()
        ranker = Ranker(version, rec.config.ranking)
        vectors = np.asarray(version.vectors)
        semantic, lexical, names = [], [], []
        for row in range(len(vectors)):
            cosine = vectors @ vectors[row]
            cosine[row] = -np.inf
            c = ranker.candidates(row, np.argsort(-cosine)[:20].astype(np.int64))
            semantic += c.semantic.tolist()
            lexical += c.lexical.tolist()
            names += c.names.tolist()
    lexical_scale, lexical_offset = np.polyfit(semantic, lexical, 1)
    names_scale, names_offset = np.polyfit(semantic, names, 1)
    return {"across_lexical_offset": float(lexical_offset),
            "across_lexical_scale": float(lexical_scale),
            "across_names_offset": float(names_offset),
            "across_names_scale": float(names_scale)}


def measure(model: str, records: list[dict[str, str]], pool: list[dict[str, str]],
            workdir: Path, settings: dict[str, str] | None = None) -> dict[str, object]:
    embedder = load_embedder(model)
    index = workdir / model
    started = time.perf_counter()
    build_index(index, records + pool, embedder=embedder)
    if settings:  # [ranking] keys laid over the model's profile, as a site would
        (index / "recommender.toml").write_text(
            "[ranking]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    seconds = time.perf_counter() - started
    now = datetime(2026, 4, 1, tzinfo=UTC)
    rec = Recommender.open(index, now=now, reload_interval=-1)
    first: dict[str, list[bool]] = {}
    parallel = {r["id"] for r in records}
    found, wrong, total_other = [], 0, 0
    for r in records:
        top = rec.similar(r["id"], k=1)
        hit = bool(top) and story_of(top[0].id) == story_of(r["id"])
        first.setdefault(r["language"], []).append(hit)
        page = rec.page(r["id"])
        shown = {link.id for links in page.values() for link in links}
        version = rec.snapshot()
        ranker = rec._current().ranker
        row = version.position[r["id"]]
        rows = np.array([i for i in range(len(version.ids)) if i != row and
                         version.ids[i] in parallel], dtype=np.int64)
        cosine = version.vectors[rows] @ version.vectors[row]
        taken = ranker.translation(ranker.anchor(row), rows, cosine.astype(np.float32))
        translations = [version.position[f"{story_of(r['id'])}-{lang}"] for lang in
                        ("en", "es", "fr", "de") if lang != r["language"]]
        mine = np.isin(rows, translations)
        found.append(bool(taken[mine].all()) and
                     not shown & {version.ids[t] for t in translations})
        wrong += int((taken & ~mine).sum())
        total_other += int((~mine).sum())
    vectors = np.asarray(rec.snapshot().vectors)
    ids = rec.snapshot().ids
    by_id = {i: n for n, i in enumerate(ids)}
    same, sibling = [], []
    for r in records:
        story, lang = story_of(r["id"]), r["language"]
        number = int(story[1:])
        other_story = f"s{number + 1 if number % 2 else number - 1:02d}"
        for other in ("en", "es", "fr", "de"):
            if other == lang:
                continue
            a = vectors[by_id[r["id"]]]
            same.append(float(a @ vectors[by_id[f"{story}-{other}"]]))
            sibling.append(float(a @ vectors[by_id[f"{other_story}-{other}"]]))
    hits = [h for v in first.values() for h in v]
    return {
        "model": embedder.name,
        "rank1": sum(hits) / len(hits),
        "rank1_by_language": {k: sum(v) / len(v) for k, v in first.items()},
        "translations_recognised": sum(found) / len(found),
        "false_translations": wrong / total_other,
        "cosine_translation_median": statistics.median(same),
        "cosine_translation_min": min(same),
        "cosine_sibling_median": statistics.median(sibling),
        "cosine_sibling_max": max(sibling),
        "build_seconds": round(seconds, 1),
    }


def detection(records: list[dict[str, str]]) -> dict[str, float]:
    from recommender.languages import detect_language

    titles = [detect_language(r["title"]) == r["language"] for r in records]
    bodies = [detect_language(r["body"]) == r["language"] for r in records]
    return {"titles": sum(titles) / len(titles), "bodies": sum(bodies) / len(bodies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm,multilingual")
    parser.add_argument("--keep-digits", action="store_true",
                        help="leave the bodies whole (no title words or digits removed)")
    parser.add_argument("--alone", action="store_true",
                        help="the parallel set alone, without the sample corpus around it")
    parser.add_argument("--calibrate", action="store_true",
                        help="print each model's semantic_offset/semantic_scale (its cosines "
                             "mapped onto MiniLM's) and stop")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a [ranking] setting for the measured indexes (repeatable)")
    parser.add_argument("--speed", action="store_true",
                        help="print each model's embedding speed on the sample corpus and stop")
    args = parser.parse_args()
    if args.speed:
        for model in args.models.split(","):
            print(f"{model}: {speed(model):.1f} texts/s (sample corpus, "
                  f"{len(SAMPLE.read_text().splitlines())} articles)")
        return
    if args.calibrate:
        for model in args.models.split(","):
            offset, scale = calibrate(model)
            print(f"{model}: semantic_offset = {offset:.3f}, semantic_scale = {scale:.3f}")
        print("every model, on MiniLM's scale: " +
              ", ".join(f"{k} = {v:.3f}" for k, v in calibrate_across().items()))
        return
    records = load(strip=not args.keep_digits)
    pool = [] if args.alone else distractors()
    print(f"{len(records)} articles, {len({story_of(r['id']) for r in records})} stories, "
          f"languages {sorted({r['language'] for r in records})}; pool of "
          f"{len(records) + len(pool)} (the sample corpus around them: {len(pool)})")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            result = measure(model, records, pool, Path(tmp),
                             dict(item.split("=", 1) for item in args.set))
            by_lang = " ".join(f"{k} {v:.0%}" for k, v in result["rank1_by_language"].items())
            print(f"\n{model} ({result['model']}): build {result['build_seconds']} s")
            print(f"  translation at rank 1 of similar(): {result['rank1']:.0%} ({by_lang})")
            print(f"  translations recognised, kept out of the slots: "
                  f"{result['translations_recognised']:.0%}; other stories taken for "
                  f"translations: {result['false_translations']:.1%}")
            print(f"  cosine, translation pairs: median {result['cosine_translation_median']:.3f},"
                  f" min {result['cosine_translation_min']:.3f}; the topic's other story in "
                  f"another language: median {result['cosine_sibling_median']:.3f}, max "
                  f"{result['cosine_sibling_max']:.3f}")
    whole = load(strip=False)
    try:
        found = detection(whole)
    except ImportError:
        return
    print(f"\nlanguage detection (py3langid): titles {found['titles']:.0%}, "
          f"bodies {found['bodies']:.0%}")


if __name__ == "__main__":
    main()
