"""Slot policies and ranking settings, resolved in one place:
flag > environment variable > recommender.toml > built-in default.

The file is `recommender.toml` in the index directory (it survives rebuilds) or the path given
with `--config` / `$RECOMMENDER_CONFIG`. Every key is optional; see the README's "Slots and
policies" section for the reference.

    [ranking]
    story_window_days = 4
    [slots.you_may_also_like]
    k = 6
    half_life_days = 30
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_FILE = "recommender.toml"
LANGUAGE_POLICIES = ("same", "same_first", "any")
PAYWALL_POLICIES = ("allow", "exclude")
SCOPES = ("related", "story")


@dataclass(frozen=True)
class SlotPolicy:
    """What one slot shows. `relevance` is the fused probability (0..1) that a reader sees a
    link as related (see RankingConfig); the ranking score is relevance × freshness."""

    name: str
    k: int = 6
    # Minimum relevance: empty beats wrong. `min_score_other_language` applies when the
    # candidate's language differs from the source's.
    min_score: float = 0.25
    min_score_other_language: float = 0.35
    candidates: int = 50
    # "related": any article above the bar; "story": only articles of the source's own story
    # (one event, see RankingConfig.story_*): the See also kind of slot.
    scope: str = "related"
    # Time, measured around the source's own date (so an archive page gets the links of its
    # time, not an empty slot): drop articles published more than max_age_days before or
    # after it; halve the score every half_life_days of distance from it. Nothing dated
    # after now is ever shown. window_*_days: hard limits relative to the source's date.
    max_age_days: float | None = None
    half_life_days: float | None = None
    window_before_days: float | None = None
    window_after_days: float | None = None
    # Articles without a date: their freshness factor (1 = neutral, 0 = never shown).
    undated_factor: float = 1.0
    # At most one article per event in the slot and on the page: a candidate of the same
    # event as a link already shown (RankingConfig.event_similarity, within
    # story_window_days) is left out. Copies are always left out.
    one_per_event: bool = True
    # The story's latest development first, when it is newer than the source.
    latest_first: bool = False
    # Maximal marginal relevance: 1.0 = relevance only, lower = more varied.
    mmr_lambda: float = 1.0
    languages: str = "same_first"
    paywalled: str = "allow"
    sections_include: tuple[str, ...] = ()
    sections_exclude: tuple[str, ...] = ()
    tags_include: tuple[str, ...] = ()
    tags_exclude: tuple[str, ...] = ()
    # Fill up to k when too few articles clear the bar: the next most relevant eligible
    # articles (the candidates below the bar, then articles published around the source's
    # date), through the same rules and score, each marked as fallback. fallback_links: fill
    # only up to this many links (default: k), so a slot with a few good links is not padded.
    fallback: bool = False
    fallback_links: int | None = None

    def __post_init__(self) -> None:
        if self.languages not in LANGUAGE_POLICIES:
            raise ConfigError(f"slot {self.name}: languages must be one of "
                              f"{', '.join(LANGUAGE_POLICIES)}, not {self.languages!r}")
        if self.paywalled not in PAYWALL_POLICIES:
            raise ConfigError(f"slot {self.name}: paywalled must be one of "
                              f"{', '.join(PAYWALL_POLICIES)}, not {self.paywalled!r}")
        if self.scope not in SCOPES:
            raise ConfigError(f"slot {self.name}: scope must be one of {', '.join(SCOPES)}, "
                              f"not {self.scope!r}")
        if self.k < 0 or self.candidates < 1:
            raise ConfigError(f"slot {self.name}: k must be >= 0 and candidates >= 1")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"slot {self.name}: mmr_lambda must be within 0..1")
        if not 0.0 <= self.undated_factor <= 1.0:
            raise ConfigError(f"slot {self.name}: undated_factor must be within 0..1")


@dataclass(frozen=True)
class RankingConfig:
    """Settings shared by all slots: the relevance model and what counts as one story.

    relevance = sigmoid(bias + semantic_weight·cosine + lexical_weight·words
                        + names_weight·names + proximity·(proximity_weight
                        + semantic_proximity_weight·cosine + lexical_proximity_weight·words
                        + names_proximity_weight·names)
                        + tag_weight·tag_jaccard + section_weight·[same section])

    cosine: the embedding cosine; words: TF-IDF cosine of title and body; names: TF-IDF
    cosine of the names both mention; proximity: exp(-days apart / proximity_days), 0 when
    either is undated. Reports of one event appear within days of each other and name the
    same people and places; a saga shares the names over weeks. The weights are a logistic
    regression fitted by `python scripts/tune_relevance.py` on the judged news-stories pages
    (held-out folds reported there; the names features under a stronger prior, since a
    heavy names weight costs topic-level relevance: BBC nDCG@10 0.928 against 0.933), so
    relevance reads as the chance that a reader sees the link as related.
    """

    bias: float = -6.08
    semantic_weight: float = 5.55
    lexical_weight: float = 7.06
    names_weight: float = 3.39
    proximity_weight: float = 0.44
    semantic_proximity_weight: float = 1.26
    lexical_proximity_weight: float = 1.87
    names_proximity_weight: float = 1.0
    proximity_days: float = 3.0
    # Tags and sections are not in the judged pages (they have none): these are guesses in
    # the same logit units, a full tag overlap worth about half of a full lexical match.
    tag_weight: float = 0.5
    section_weight: float = 0.0
    # Near-duplicates of the source or of another link (syndicated copies): cosine at least
    # this, or the same normalised title, or the same body text.
    duplicate_similarity: float = 0.95
    # The source's own story (one event) without story_id: relevance at least
    # story_relevance, published within story_window_days of the source. Never a chain:
    # each article is compared with the source itself.
    story_relevance: float = 0.8
    story_window_days: float = 3.0
    # Its later developments: as relevant, published after it within this many days. A
    # slot with latest_first leads with the newest of them.
    development_window_days: float = 14.0
    # One event among the links: cosine at least event_similarity, within story_window_days.
    event_similarity: float = 0.85
    # Translations: other language, cosine >= translation_similarity, published within
    # translation_window_days (or the same story_id, or linked by translation_of).
    translation_similarity: float = 0.3
    translation_window_days: float = 2.0


DEFAULT_SLOTS: dict[str, SlotPolicy] = {
    # Up to 2 links of the source's own story: its latest development (when newer) and the
    # best other coverage. No age limit (the story is the story); empty only when the story
    # has nothing else. story_relevance 0.8 and development_window_days 14 (RankingConfig):
    # 89.5% same story, no unrelated link on the judged pages (scripts/sweep_slots.py).
    "see_also": SlotPolicy(
        name="see_also", k=2, min_score=0.5, min_score_other_language=0.5, scope="story",
        latest_first=True, one_per_event=False, mmr_lambda=1.0, paywalled="allow"),
    # A varied list of related reading around the source's date: one link per event, never
    # a copy of a See also link, filled (and labelled) only when fewer than 3 clear the bar.
    # The bar and the fill were chosen on the judged news-stories pages (python
    # scripts/sweep_slots.py): 5.56 links a page, 78% related, 4% fallback; a bar of 0.13:
    # 5.40 / 81% / 6%; filled to k: 6 links, 73%, 11%. A half-life of 180 days costs a point.
    "you_may_also_like": SlotPolicy(
        name="you_may_also_like", k=6, min_score=0.1, min_score_other_language=0.1,
        max_age_days=365.0, mmr_lambda=1.0, paywalled="exclude", fallback=True,
        fallback_links=3),
}
PAGE_ORDER = ("see_also", "you_may_also_like")


@dataclass(frozen=True)
class Config:
    ranking: RankingConfig = field(default_factory=RankingConfig)
    slots: dict[str, SlotPolicy] = field(default_factory=lambda: dict(DEFAULT_SLOTS))
    source: str | None = None  # the file it came from, for messages


def _coerce(cls: type[Any], values: dict[str, Any], where: str, **fixed: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = dict(fixed)
    for key, value in values.items():
        if key not in fields or key in fixed:
            raise ConfigError(f"{where}: unknown key {key!r}")
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return kwargs


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    unknown = set(data) - {"ranking", "slots"}
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}")
    try:
        ranking = dataclasses.replace(
            RankingConfig(), **_coerce(RankingConfig, data.get("ranking", {}),
                                       f"{source} [ranking]"))
        slots = dict(DEFAULT_SLOTS)
        for name, values in data.get("slots", {}).items():
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [slots.{name}] must be a table")
            where = f"{source} [slots.{name}]"
            base = slots.get(name, SlotPolicy(name=name))
            slots[name] = dataclasses.replace(base, **_coerce(SlotPolicy, values, where))
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return Config(ranking=ranking, slots=slots, source=source)


def load_config(index_dir: str | os.PathLike[str] | None = None,
                path: str | os.PathLike[str] | None = None) -> Config:
    """The config for an index: `path` (flag) > $RECOMMENDER_CONFIG > <index>/recommender.toml
    > defaults."""
    chosen = path or os.environ.get("RECOMMENDER_CONFIG")
    if chosen is None and index_dir is not None:
        candidate = Path(index_dir) / CONFIG_FILE
        chosen = candidate if candidate.is_file() else None
    if chosen is None:
        return Config()
    try:
        with open(chosen, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(chosen)!r} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: {exc}") from exc
    return parse_config(data, str(chosen))
