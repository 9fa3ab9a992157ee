"""Pick the See also threshold from the labelled sample corpus.

For each threshold, over every published article: precision of the top-2 links that clear it
(a link is right when it shares the source's story or topic in the corpus's fixture labels) and
the share of story articles whose See also holds at least one article of their story.

    python scripts/measure_thresholds.py [--model M]
"""

from __future__ import annotations

import argparse
import tempfile

from recommender import Recommender, build_index, sample_corpus_path


def group(article_metadata: dict[str, object]) -> str | None:
    value = article_metadata.get("fixture_story") or article_metadata.get("fixture_topic")
    return str(value) if value else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_index(tmp, [sample_corpus_path()], model=args.model)
        rec = Recommender.open(tmp)
        articles = {a.id: a for a in rec.articles()}
        published = [a for a in articles.values() if a.is_published]
        neighbours = {a.id: [r for r in rec.similar(a.id, k=30) if r.status == "published"][:2]
                      for a in published}
        print(f"model {rec.info()['model']}, {len(published)} published articles")
        print("threshold  links  precision  story-articles-with-same-story-link")
        in_story = [a for a in published if a.metadata.get("fixture_story")]
        for t in [x / 100 for x in range(30, 75, 5)]:
            shown = right = 0
            covered = 0
            for a in published:
                links = [r for r in neighbours[a.id] if r.score >= t]
                shown += len(links)
                right += sum(1 for r in links
                             if group(a.metadata) and group(articles[r.id].metadata)
                             == group(a.metadata))
                if a in in_story and any(articles[r.id].metadata.get("fixture_story")
                                         == a.metadata["fixture_story"] for r in links):
                    covered += 1
            precision = right / shown if shown else 1.0
            print(f"{t:9.2f}  {shown:5d}  {precision:9.3f}  {covered}/{len(in_story)}")


if __name__ == "__main__":
    main()
