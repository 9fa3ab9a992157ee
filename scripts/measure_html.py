"""How well saved pages stand in for their clean text: for the HTML fixtures (five themes, each
with and without class/id attributes, written by tests/fixtures/html/make_pages.py to a
temporary folder), per way of reading a page:

- boilerplate: share of pages whose text contains any string of the page that is not the
  article (its theme's list and the page's own: related titles, comments; boilerplate.json);
- recall: share of the clean text's tokens (title and body, counted with repeats) in the text
  read from the page; precision: share of the page text's tokens that are the clean text's;
- 5-NN: mean overlap of each page's 5 nearest neighbours among the theme's pages (cosine of
  `embed_text_for`, embedded with the project's embedder) with those of the clean text.

Ways of reading a page: "all text" (the page's <title> and every text of its body),
"trafilatura" (trafilatura.extract with its defaults, and its own title added back) and
"recommender" (`read_page`, what `recommender build --format html` does).

    python scripts/measure_html.py [--model hashing:64] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import trafilatura
from lxml import html as lxml_html

from recommender.articles import Article
from recommender.embedding import load_embedder
from recommender.html_pages import read_page
from recommender.text import embed_text_for

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "html"
K = 5
_TOKEN = re.compile(r"\w+")


def read_all_text(content: bytes) -> tuple[str, str]:
    tree = lxml_html.document_fromstring(content)
    for element in tree.xpath("//script|//style"):
        element.drop_tree()
    title = tree.findtext(".//title") or ""
    body = tree.find("body")
    return title.strip(), (body.text_content() if body is not None else "")


def read_trafilatura(content: bytes) -> tuple[str, str]:
    found = trafilatura.extract_metadata(content.decode("utf-8"))
    return (found.title or ""), (trafilatura.extract(content) or "")


def read_recommender(content: bytes, name: str) -> tuple[str, str]:
    record = read_page(content, name)
    return record["title"], record["body"]


READERS = {
    "all text": lambda content, name: read_all_text(content),
    "trafilatura": lambda content, name: read_trafilatura(content),
    "recommender": read_recommender,
}


def tokens(text: str) -> Counter[str]:
    return Counter(_TOKEN.findall(text.casefold()))


def overlap(reference: Counter[str], other: Counter[str]) -> int:
    return sum(min(n, other[t]) for t, n in reference.items())


def nearest(vectors: np.ndarray, k: int = K) -> list[set[int]]:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return [set(row.tolist()) for row in order]


def write_pages(target: Path) -> None:
    """The fixture pages and boilerplate.json, as tests/fixtures/html/make_pages.py writes them."""
    spec = importlib.util.spec_from_file_location("make_pages", FIXTURES / "make_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_pages(target)


def measure(model: str | None, pages_dir: Path) -> list[dict[str, Any]]:
    clean = [json.loads(line) for line in
             (FIXTURES / "articles.jsonl").read_text(encoding="utf-8").splitlines() if line]
    boilerplate = json.loads((pages_dir / "boilerplate.json").read_text(encoding="utf-8"))
    embedder = load_embedder(model)
    ids = [a["id"] for a in clean]
    clean_articles = [Article(id=a["id"], title=a["title"], body=a["body"]) for a in clean]
    clean_nearest = nearest(embedder.embed([embed_text_for(a) for a in clean_articles]))
    clean_tokens = [tokens(f"{a.title} {a.body}") for a in clean_articles]
    rows = []
    for theme, strings in boilerplate.items():
        for variant, folder in (("yes", theme), ("no", f"{theme}-bare")):
            pages = [(pages_dir / folder / f"{i}.html").read_bytes() for i in ids]
            for method, reader in READERS.items():
                read = [reader(content, i) for content, i in zip(pages, ids, strict=True)]
                texts = [f"{title}\n{body}" for title, body in read]
                dirty = sum(
                    any(s.casefold() in text.casefold()
                        for s in strings["every_page"] + strings["pages"][i])
                    for text, i in zip(texts, ids, strict=True))
                page_tokens = [tokens(t) for t in texts]
                recall = np.mean([overlap(c, p) / sum(c.values())
                                  for c, p in zip(clean_tokens, page_tokens, strict=True)])
                precision = np.mean([overlap(p, c) / max(sum(p.values()), 1)
                                     for c, p in zip(clean_tokens, page_tokens, strict=True)])
                vectors = embedder.embed([
                    embed_text_for(Article(id=i, title=title or i, body=body))
                    for (title, body), i in zip(read, ids, strict=True)])
                found = nearest(vectors)
                agreement = np.mean([len(a & b) / K
                                     for a, b in zip(found, clean_nearest, strict=True)])
                rows.append({"theme": theme, "attributes": variant, "method": method,
                             "pages": len(ids), "boilerplate": dirty / len(ids),
                             "recall": float(recall), "precision": float(precision),
                             "nearest_overlap": float(agreement)})
    return rows


def print_table(rows: list[dict[str, Any]], model: str) -> None:
    print(f"{len(rows) // len(READERS)} page sets of {rows[0]['pages']} pages; neighbours "
          f"with {model}\n")
    print("| theme | class/id | read by | pages with boilerplate | recall | precision "
          f"| {K}-NN overlap |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['theme']} | {row['attributes']} | {row['method']} | "
              f"{row['boilerplate']:.0%} | {row['recall']:.3f} | {row['precision']:.3f} | "
              f"{row['nearest_overlap']:.3f} |")
    print("\nAll page sets:\n")
    print("| read by | class/id | pages with boilerplate | recall | precision "
          f"| {K}-NN overlap (mean) | {K}-NN overlap (worst set) |")
    print("|---|---|---|---|---|---|---|")
    for method in READERS:
        for variant in ("yes", "no"):
            group = [r for r in rows if r["method"] == method and r["attributes"] == variant]
            print(f"| {method} | {variant} | "
                  f"{np.mean([r['boilerplate'] for r in group]):.0%} | "
                  f"{np.mean([r['recall'] for r in group]):.3f} | "
                  f"{np.mean([r['precision'] for r in group]):.3f} | "
                  f"{np.mean([r['nearest_overlap'] for r in group]):.3f} | "
                  f"{min(r['nearest_overlap'] for r in group):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="embedder [default: the bundled all-MiniLM-L6-v2]")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as pages_dir:
        write_pages(Path(pages_dir))
        rows = measure(args.model, Path(pages_dir))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, args.model or "all-MiniLM-L6-v2")


if __name__ == "__main__":
    main()
