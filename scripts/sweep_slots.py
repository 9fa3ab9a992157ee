"""How the slot settings trade off on the judged news-stories pages: the grid behind the
defaults of See also (story_relevance, development_window_days) and You may also like
(min_score, fallback_links, half_life_days), as of 2017-04-01.

    python scripts/sweep_slots.py [--index indexes/news-stories]

Build the index first (`python scripts/evaluate_news.py` does). The relevance weights are
the fitted ones (scripts/tune_relevance.py); only the slot settings vary. These choices are
made on the same pages they are measured on: a few settings, not a fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from datetime import UTC, datetime
from typing import Any

from recommender import Recommender
from recommender.config import Config
from recommender.datasets import judgment_files
from recommender.evaluation import Judgments, page_report


def report(index: str, labels: Judgments, ranking: dict[str, Any],
           slots: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    config = Config()
    config = dataclasses.replace(
        config, ranking=dataclasses.replace(config.ranking, **ranking),
        slots={name: dataclasses.replace(policy, **slots.get(name, {}))
               for name, policy in config.slots.items()})
    rec = Recommender.open(index, config=config, now=datetime(2017, 4, 1, tzinfo=UTC))
    return page_report(rec, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="indexes/news-stories")
    args = parser.parse_args()
    labels = Judgments(*judgment_files("news-stories"))
    print("See also: story_relevance x development_window_days")
    print(f"{'relevance':>10}{'days':>6}{'links':>7}{'same story':>12}{'not rel.':>10}")
    for relevance, days in itertools.product((0.5, 0.7, 0.8, 0.9), (3, 7, 14, 30)):
        m = report(args.index, labels, {"story_relevance": relevance,
                                        "development_window_days": days}, {})["see_also"]
        print(f"{relevance:10.2f}{days:6d}{m['links_per_page']:7.2f}"
              f"{m['same_story_share']:12.1%}{m['not_related_share']:10.1%}")
    print("\nYou may also like: min_score x fallback_links x half_life_days")
    print(f"{'bar':>6}{'fill':>6}{'half-life':>10}{'links':>7}{'related':>9}{'fallback':>10}")
    for bar, fill, half_life in itertools.product((0.05, 0.07, 0.1, 0.13, 0.2), (2, 3, None),
                                                  (None, 180.0)):
        m = report(args.index, labels, {}, {"you_may_also_like": {
            "min_score": bar, "min_score_other_language": bar, "fallback_links": fill,
            "half_life_days": half_life}})["you_may_also_like"]
        print(f"{bar:6.2f}{fill or 'k':>6}{half_life or '-':>10}{m['links_per_page']:7.2f}"
              f"{m['related_share']:9.1%}{m['fallback_share']:10.1%}")


if __name__ == "__main__":
    main()
