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
    [slots.sidebar]
    based_on = "you_may_also_like"    # a new slot, declared on purpose (or `new = true`)

Values are checked against the type hints of `SlotPolicy` and `RankingConfig` (pydantic,
strict: no "0.4" for 0.4, no 2.5 for a count, no NaN, a list where a list is meant) and the
range rules of their `__post_init__`; a mistyped key or slot name is an error, not a new one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import typing
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
    # Only articles in one of these languages (BCP-47 codes, compared case-insensitively).
    languages_include: tuple[str, ...] = ()
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
class Filters:
    """A per-request narrowing of slot policies (what a site asks for one listing): only
    these sections, only these languages, nothing published more than `max_age_days` before
    or after the source. A filter only ever narrows: a slot that already limits sections,
    languages or age keeps its limit, and sections or languages outside it match nothing."""

    sections: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    max_age_days: float | None = None

    def __post_init__(self) -> None:
        for kind, values in (("section", self.sections), ("language", self.languages)):
            if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
                raise ValueError(f"{kind} filters must be a list of non-empty strings, "
                                 f"not {values!r}")
        if self.max_age_days is not None and not (
                isinstance(self.max_age_days, (int, float)) and
                math.isfinite(self.max_age_days) and self.max_age_days >= 0):
            raise ValueError(f"max_age_days must be a finite number >= 0, "
                             f"not {self.max_age_days!r}")

    def __bool__(self) -> bool:
        return bool(self.sections or self.languages or self.max_age_days is not None)

    def narrow(self, policy: SlotPolicy) -> SlotPolicy | None:
        """`policy` with these filters applied, or None when nothing can match (every
        section or language asked for is outside what the slot allows)."""
        changes: dict[str, Any] = {}
        for values, field_name in ((self.sections, "sections_include"),
                                   (self.languages, "languages_include")):
            if not values:
                continue
            allowed = {v.casefold() for v in getattr(policy, field_name)}
            kept = tuple(dict.fromkeys(v.casefold() for v in values
                                       if not allowed or v.casefold() in allowed))
            if not kept:
                return None
            changes[field_name] = kept
        if self.max_age_days is not None:
            changes["max_age_days"] = float(self.max_age_days) if policy.max_age_days is None \
                else min(policy.max_age_days, float(self.max_age_days))
        return dataclasses.replace(policy, **changes) if changes else policy


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
    # The model's cosine as the relevance weights read it: semantic_offset +
    # semantic_scale·cosine. The weights were fitted on all-MiniLM-L6-v2's cosines; another
    # model's profile (MODEL_PROFILES) maps its own onto that scale.
    semantic_scale: float = 1.0
    semantic_offset: float = 0.0
    # The model places every language in one space (a multilingual model's profile sets
    # it): each article is ranked by its own vector, not through its `translation_of`
    # original, and the word and names scores count within one language only. Off for an
    # English-only model, whose translated articles borrow their original's vector.
    cross_lingual: bool = False
    # ... and across languages the words and names scores are read from the meaning instead:
    # what a same-language pair of that (mapped) cosine scores on average, offset + scale ·
    # cosine clipped to 0..1, so a translation competes with same-language articles on equal
    # terms. Fitted on the sample corpus (`measure_multilingual.py --calibrate`).
    across_lexical_offset: float = -0.060
    across_lexical_scale: float = 0.414
    across_names_offset: float = -0.178
    across_names_scale: float = 0.799


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
class ModelProfile:
    """The defaults that depend on the model's score scale, in place of the built-in ones
    for an index built with that model: RankingConfig fields and slot fields by slot.
    recommender.toml still overrides every one of them."""

    ranking: dict[str, Any] = field(default_factory=dict)
    slots: dict[str, dict[str, Any]] = field(default_factory=dict)


# Keyed by the model name an index records (embedding.MODELS). all-MiniLM-L6-v2 is the scale
# the built-in defaults were fitted on. The multilingual profile is measured by
# `python scripts/measure_multilingual.py --calibrate` (README "Several languages").
MODEL_PROFILES: dict[str, ModelProfile] = {
    "all-MiniLM-L6-v2": ModelProfile(),
    # Its cosines run a little higher than MiniLM's (offset/scale from --calibrate); a
    # translation scores >= 0.66 and another story of the same topic in another language
    # <= 0.47 on the parallel set, hence 0.6. Copies and events keep MiniLM's cosines
    # (near-identical texts score near 1 in both; not re-measured).
    "use-multilingual-v3": ModelProfile(ranking={
        "cross_lingual": True, "semantic_offset": -0.064, "semantic_scale": 0.872,
        "translation_similarity": 0.6,
    }),
    # Squeezed cosines (unrelated texts ~0.75): every threshold is higher. Translations
    # >= 0.88 and the topic's other story <= 0.84 on the parallel set; events are MiniLM's
    # 0.85 through the calibration (0.98); copies 0.997 (MiniLM's 0.95 maps past 1).
    "multilingual-e5-small-q4": ModelProfile(ranking={
        "cross_lingual": True, "semantic_offset": -3.393, "semantic_scale": 4.333,
        "translation_similarity": 0.86, "duplicate_similarity": 0.997,
        "event_similarity": 0.98,
    }),
}


def profile_for(model: str | None) -> tuple[RankingConfig, dict[str, SlotPolicy]]:
    """The built-in ranking settings and slots for an index built with `model`."""
    profile = MODEL_PROFILES.get(model or "", ModelProfile())
    slots = dict(DEFAULT_SLOTS)
    for name, values in profile.slots.items():
        slots[name] = dataclasses.replace(slots[name], **values)
    return dataclasses.replace(RankingConfig(), **profile.ranking), slots


@dataclass(frozen=True)
class Config:
    ranking: RankingConfig = field(default_factory=RankingConfig)
    slots: dict[str, SlotPolicy] = field(default_factory=lambda: dict(DEFAULT_SLOTS))
    source: str | None = None  # the file it came from, for messages
    # The TOML tables it was parsed from (None: built in code) and the model whose profile
    # it starts from, so that `for_model` can lay the same file over another model's.
    data: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    model: str | None = None

    def for_model(self, model: str | None) -> Config:
        """This configuration over the defaults of `model` (MODEL_PROFILES): the same file
        or built-in defaults, another model's scale. A Config built in code with its own
        settings is kept as it is."""
        if model == self.model:
            return self
        if self.data is None and (self.ranking != RankingConfig() or
                                  self.slots != DEFAULT_SLOTS):
            return self
        parsed = parse_config(self.data or {}, self.source or "<config>", model=model)
        return dataclasses.replace(parsed, source=self.source)


# Numbers that are counts, durations or weights cannot be negative; which ones they are is
# read from the type (int) and the name, so that new fields follow the rule on their own.
NON_NEGATIVE_SUFFIXES = ("_days", "_weight", "_factor")
NEW_SLOT_KEYS = ("new", "based_on")
_MESSAGES = {
    "int_type": "must be a whole number", "int_from_float": "must be a whole number",
    "float_type": "must be a number", "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "string_type": "must be a string",
    "tuple_type": 'must be a list of strings, e.g. ["local"] (a bare string is not a list)',
}


_VALIDATORS: dict[type[Any], Any] = {}


def _validator(cls: type[Any]) -> Any:
    """A strict pydantic model over the fields of the dataclass `cls`, built from its type
    hints (so it follows every field added or renamed there)."""
    if cls in _VALIDATORS:
        return _VALIDATORS[cls]
    from pydantic import ConfigDict, create_model

    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {f.name: (hints[f.name], None) for f in dataclasses.fields(cls)
                              if f.init and f.name != "name"}
    _VALIDATORS[cls] = create_model(
        f"{cls.__name__}Schema",
        __config__=ConfigDict(strict=True, extra="forbid", allow_inf_nan=False), **fields)
    return _VALIDATORS[cls]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _validated(cls: type[Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    """The TOML table `values` checked against the fields of `cls`: the given keys with
    their values, or ConfigError naming the file, table, key and value of every problem."""
    from pydantic import ValidationError

    schema = _validator(cls)
    prepared = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        checked: dict[str, Any] = schema.model_validate(prepared).model_dump(exclude_unset=True)
    except ValidationError as exc:
        known = ", ".join(schema.model_fields)
        problems = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else "?"
            shown = f"{key} = {_toml(values.get(key, error.get('input')))}"
            if error["type"] == "extra_forbidden":
                close = difflib.get_close_matches(key, schema.model_fields, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {known}"
                problems.append(f"unknown key {key!r} ({shown}; {hint})")
            else:
                problems.append(f"{shown}: {_MESSAGES.get(error['type'], error['msg'])}")
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None
    hints = typing.get_type_hints(cls)
    for key, value in checked.items():
        counted = int in (hints[key], *typing.get_args(hints[key])) or \
            key.endswith(NON_NEGATIVE_SUFFIXES)
        if counted and isinstance(value, (int, float)) and value < 0:
            raise ConfigError(f"{where}: {key} = {_toml(values[key])}: must not be negative")
    return checked


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table ([{key}]), not {_toml(value)}")
    return value


def parse_config(data: dict[str, Any], source: str = "<config>", model: str | None = None
                 ) -> Config:
    """The config of the TOML tables `data` over the defaults of `model` (its profile)."""
    unknown = set(data) - {"ranking", "slots"}
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(sorted(unknown))} "
                          "(known: ranking, slots)")
    try:
        defaults, slots = profile_for(model)
        ranking = dataclasses.replace(
            defaults, **_validated(RankingConfig, _table(data, "ranking", source),
                                   f"{source} [ranking]"))
        for name, values in _table(data, "slots", source).items():
            where = f"{source} [slots.{name}]"
            if not isinstance(values, dict):
                raise ConfigError(f"{where} must be a table")
            values = dict(values)
            base = _slot_base(name, values, slots, where)
            slots[name] = dataclasses.replace(base, **_validated(SlotPolicy, values, where))
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}"
                          ) from None
    return Config(ranking=ranking, slots=slots, source=source, data=data, model=model)


def _slot_base(name: str, values: dict[str, Any], slots: dict[str, SlotPolicy], where: str
               ) -> SlotPolicy:
    """What [slots.NAME] starts from: the slot of that name, or, for a slot declared new on
    purpose (`new = true` or `based_on = "OTHER"`), the defaults or OTHER. Pops those keys."""
    new, based_on = values.pop("new", None), values.pop("based_on", None)
    if new is not None and new is not True:
        raise ConfigError(f"{where}: new = {_toml(new)}: must be true (or left out)")
    if based_on is not None and (not isinstance(based_on, str) or based_on not in slots):
        raise ConfigError(f"{where}: based_on = {_toml(based_on)}: must name a slot "
                          f"(known: {', '.join(slots)})")
    if name in slots:
        if new or based_on is not None:
            raise ConfigError(f"{where}: slot {name!r} already exists; new/based_on declare "
                              "a slot that does not")
        return slots[name]
    if based_on is not None:
        return dataclasses.replace(slots[based_on], name=name)
    if new:
        return SlotPolicy(name=name)
    close = difflib.get_close_matches(name, slots, n=1)
    raise ConfigError(
        f"{where}: unknown slot {name!r} (known: {', '.join(slots)})"
        + (f"; did you mean {close[0]!r}?" if close else "")
        + f'; to add a slot, declare it: new = true, or based_on = "{next(iter(slots))}"')


def config_path(index_dir: str | os.PathLike[str] | None = None,
                path: str | os.PathLike[str] | None = None) -> tuple[Path | None, bool]:
    """(the config file that applies, whether it must exist): `path` (flag) >
    $RECOMMENDER_CONFIG > <index>/recommender.toml (optional) > none."""
    chosen = path or os.environ.get("RECOMMENDER_CONFIG")
    if chosen:
        return Path(chosen), True
    if index_dir is not None:
        return Path(index_dir) / CONFIG_FILE, False
    return None, False


def read_config(file: Path, required: bool = True) -> Config:
    """The config in `file` (defaults when it is optional and absent); ConfigError if it
    cannot be read or breaks a rule."""
    try:
        with open(file, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        if not required:
            return Config()
        raise ConfigError(f"config file {str(file)!r} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    return parse_config(data, str(file))


def load_config(index_dir: str | os.PathLike[str] | None = None,
                path: str | os.PathLike[str] | None = None) -> Config:
    """The config for an index: `path` (flag) > $RECOMMENDER_CONFIG > <index>/recommender.toml
    > defaults."""
    file, required = config_path(index_dir, path)
    return Config() if file is None else read_config(file, required)
