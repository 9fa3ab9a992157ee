"""Slot policies: turn relevance candidates into what a slot shows.

For one source article, `Ranker.select` runs a slot's steps over one pool of candidates:

    eligibility   published, not the source, not shown elsewhere on the page, editorial
                  blocks and never-pairs, section/tag/paywall/language filters, time limits
                  measured around the source's date, nothing dated after now
    identity      drop copies (syndicated versions) and translations of the source
    relevance     the fused relevance model (semantic, words, names, time proximity, tags,
                  section) against the slot's bar; a "story" slot keeps the source's own
                  story only (one event: close in time and highly relevant to the source)
    freshness     relevance × decay with the distance from the source's date
    selection     the story's latest development first (where the slot asks), then by score
                  with maximal marginal relevance; never a copy of a link on the page, and
                  one link per event
    pins          editors' pinned links at their positions
    fallback      the next most relevant eligible articles (below the bar, then published
                  around the source's date), through the same steps, labelled

Every result carries `reason`: the parts of its score and its flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .articles import format_datetime
from .config import RankingConfig, SlotPolicy
from .lexical import lexical_scores
from .overrides import Overrides
from .store import IndexVersion

DAY = 86_400.0
NEARBY = 64  # articles around the source's date considered when the candidates run out


@dataclass(frozen=True)
class Recommendation:
    id: str
    title: str
    url: str | None
    score: float
    reason: dict[str, Any] = field(default_factory=dict)
    published_at: datetime | None = None
    section: str | None = None
    status: str = "published"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "url": self.url,
            "score": round(self.score, 4), "reason": self.reason,
            "published_at": format_datetime(self.published_at),
            "section": self.section, "status": self.status,
        }


SCORE_PARTS = ("relevance", "semantic", "lexical", "names", "proximity", "tags", "section",
               "freshness")


def explain_reason(reason: dict[str, Any]) -> str:
    """Why a link is there, in one line: flags (pinned, fallback, story) first, then the score
    parts."""
    parts = [f"{name} {reason[name]:.2f}" for name in SCORE_PARTS if name in reason]
    if reason.get("same_story"):
        parts.insert(0, "latest development" if reason.get("latest") else "same story")
    if "fallback" in reason:
        parts.insert(0, f"fallback ({reason['fallback']})")
    if reason.get("pinned"):
        until = reason.get("pinned_until")
        parts.insert(0, "pinned" + (f" until {until}" if until else ""))
    if reason.get("other_language"):
        parts.append(f"other language ({reason['language']})" if reason.get("language")
                     else "other language")
    if reason.get("event_collapsed_from"):
        parts.append("stands for " + ", ".join(reason["event_collapsed_from"]))
    return "; ".join(parts)


@dataclass(frozen=True)
class Candidates:
    """Relevance candidates of one source: rows with their pairwise scores."""

    rows: np.ndarray       # int64
    semantic: np.ndarray   # float32 embedding cosine
    lexical: np.ndarray    # float32 TF-IDF cosine of title and body
    names: np.ndarray      # float32 TF-IDF cosine of the names mentioned


@dataclass(frozen=True)
class Keys:
    """Per-row attributes the copy and event rules compare (arrays, or one row's values)."""

    title: Any      # int64 hash of the normalised title
    body: Any       # int64 hash of the body (0: none)
    story: Any      # int32 story_id code (-1: none)
    timestamp: Any  # float64 epoch seconds (NaN: undated)

    def at(self, i: int | np.ndarray) -> Keys:
        return Keys(self.title[i], self.body[i], self.story[i], self.timestamp[i])

    def column(self) -> Keys:
        """As one column, to broadcast against a row."""
        return Keys(self.title[:, None], self.body[:, None], self.story[:, None],
                    self.timestamp[:, None])

    def row(self) -> Keys:
        """As one row, to broadcast against a column."""
        return Keys(self.title[None, :], self.body[None, :], self.story[None, :],
                    self.timestamp[None, :])


@dataclass(frozen=True)
class Prepared:
    """One source's candidates with what every slot reads of them (see Ranker.prepare)."""

    source: int                 # the page's article
    anchor: int                 # the row whose vector speaks for it (see Ranker.anchor)
    c: Candidates
    relevance: np.ndarray       # float32, 0..1
    parts: dict[str, np.ndarray]
    table: np.ndarray           # float32 (len(parts) + 1, n): the parts and relevance, stacked
    identity: np.ndarray        # bool: a copy or a translation of the source
    other_language: np.ndarray  # bool
    story: np.ndarray           # bool: the source's own story
    development: np.ndarray     # bool: a later development of it
    timestamp: np.ndarray       # float64 epoch seconds of each candidate (NaN: undated)
    later: np.ndarray           # float64 days from the anchor's date (see Ranker.later)
    version: IndexVersion       # where the candidates' vectors are read from
    read: np.ndarray            # bool (n,): the candidates whose vector `known` holds
    known: np.ndarray           # float32 (n, dim): the vectors read so far this page

    def vectors(self, at: np.ndarray) -> np.ndarray:
        """The vectors of the candidates at these positions, (len(at), dim). Each one is
        read once a page, and only when a slot's pool holds it: a large index reads them
        from its files row by row, and a third or more of a page's candidates never reach
        a pool (not eligible, or below the bar)."""
        missing = at[~self.read[at]]
        if len(missing):  # (a row twice in `at` is read twice: the same values)
            self.known[missing] = self.version.vectors_at(self.c.rows[missing])
            self.read[missing] = True
        out: np.ndarray = self.known[at]
        return out

    def cosines(self, rows: np.ndarray, at: np.ndarray, at_least: float) -> np.ndarray | None:
        """The cosines of a few rows (picks, links on the page) with the candidates at these
        positions wherever they reach `at_least` (-inf elsewhere), from the rows' own
        candidate lists instead of the vectors: a list holds every candidate above its
        bound, so a pair it leaves out scores below that (with an approximate table, as far
        as its recall goes: pairs this close are the ones it misses least). None where a
        list's bound reaches `at_least` (a rule that low needs the vectors) or there is no
        table. This is what the copy and event rules ask, for a fraction of the reads: a page
        of a large index reads its vectors a row at a time (see RowFile)."""
        read = self.version.lists_at(rows) if len(rows) else None
        if read is None or (read[2] >= at_least).any():
            return None
        listed, scores, _ = read
        out = np.full((len(rows), len(at)), -np.inf, dtype=np.float32)
        if len(at):
            targets = self.c.rows[at].astype(listed.dtype)
            order = np.argsort(targets)
            ranked = targets[order]
            found = np.searchsorted(ranked, listed)
            np.minimum(found, len(ranked) - 1, out=found)
            i, j = np.nonzero(ranked[found] == listed)
            out[i, order[found[i, j]]] = scores[i, j]
        return out


@dataclass
class Scored:
    """A prepared pool under one slot's policy: what may be shown, and how fresh it is."""

    p: Prepared
    eligible: np.ndarray        # bool: may be shown at all
    freshness: np.ndarray       # float32, 0..1
    bar: np.ndarray             # float32: the slot's minimum relevance for each

    @property
    def score(self) -> np.ndarray:
        out: np.ndarray = self.p.relevance * self.freshness
        return out


@dataclass
class Pick:
    """A row chosen for a slot, with its score and reason (ids are resolved later)."""

    row: int
    score: float
    reason: dict[str, Any]


class Ranker:
    """Applies slot policies over one index version. Holds per-version derived data (articles
    by date, override rows) so each query only touches its candidates."""

    def __init__(self, version: IndexVersion, config: RankingConfig) -> None:
        self.version = version
        self.ids = version.ids
        self.position = version.position
        self.columns = version.columns
        self.config = config
        # Most sites have one language and no translation links: their pages skip that work.
        self._languages = len(version.columns.languages)
        self._translations = bool((version.columns.original >= 0).any())
        self._by_date: np.ndarray | None = None
        self._overrides: tuple[Overrides, set[int], dict[int, set[int]]] | None = None

    def page_wide(self) -> tuple[Any, ...]:
        """What of the whole version (beyond a page's own articles) every page depends on."""
        return (self._languages > 1, self._translations)

    def candidates(self, source: int, rows: np.ndarray) -> Candidates:
        """Pairwise scores of `source` with `rows`, computed now (for rows outside the
        precomputed table)."""
        rows = np.asarray(rows, dtype=np.int64)
        vectors = self.version.vectors_at(np.r_[source, rows])
        semantic = np.einsum("ik,k->i", vectors[1:], vectors[0])
        return Candidates(rows, semantic.astype(np.float32),
                          lexical_scores(self.version.lexical(), source, rows),
                          lexical_scores(self.version.names(), source, rows))

    # ------------------------------------------------------------------ relevance

    def later(self, source: int, rows: np.ndarray) -> np.ndarray:
        """Days from the source's date to each row's (negative: earlier; NaN: either is
        undated)."""
        ts = self.columns.timestamp
        out: np.ndarray = (ts[rows] - ts[source]) / DAY
        return out

    def proximity(self, source: int, rows: np.ndarray, later: np.ndarray | None = None
                  ) -> np.ndarray:
        """exp(-days apart / proximity_days); 0 where either article is undated."""
        days = np.abs(self.later(source, rows) if later is None else later)
        out: np.ndarray = np.exp(-days / self.config.proximity_days).astype(np.float32)
        out[np.isnan(out)] = 0.0
        return out

    def relevance(self, source: int, c: Candidates, later: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The fused relevance of each candidate (0..1) and its parts (see RankingConfig)."""
        cfg, cols = self.config, self.columns
        proximity = self.proximity(source, c.rows, later)
        lexical, names = c.lexical, c.names
        semantic = c.semantic if cfg.semantic_scale == 1.0 and cfg.semantic_offset == 0.0 \
            else (cfg.semantic_offset + cfg.semantic_scale * c.semantic).astype(np.float32)
        if cfg.cross_lingual and self._languages > 1:
            # Words and names are compared within one language only (across languages they
            # would favour whatever shares the source's language); across, they are what a
            # same-language pair of this meaning scores.
            other = self._other_language(source, c.rows)
            if other.any():
                lexical = np.where(other, np.clip(
                    cfg.across_lexical_offset + cfg.across_lexical_scale * semantic, 0, 1),
                    lexical).astype(np.float32)
                names = np.where(other, np.clip(
                    cfg.across_names_offset + cfg.across_names_scale * semantic, 0, 1),
                    names).astype(np.float32)
        parts: dict[str, np.ndarray] = {"semantic": c.semantic, "lexical": lexical,
                                        "names": names, "proximity": proximity}
        logit = (cfg.bias + cfg.semantic_weight * semantic + cfg.lexical_weight * lexical
                 + cfg.names_weight * names
                 + proximity * (cfg.proximity_weight + cfg.semantic_proximity_weight * semantic
                                + cfg.lexical_proximity_weight * lexical
                                + cfg.names_proximity_weight * names))
        if cfg.tag_weight:
            parts["tags"] = self._tag_overlap(source, c.rows)
            logit = logit + cfg.tag_weight * parts["tags"]
        if cfg.section_weight:
            src_section = cols.section[source]
            same = ((cols.section[c.rows] == src_section) & (src_section >= 0)).astype(np.float32)
            parts["section"] = same
            logit = logit + cfg.section_weight * same
        relevance = (1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64))))
        return relevance.astype(np.float32), parts

    def _tag_overlap(self, source: int, rows: np.ndarray) -> np.ndarray:
        """Jaccard overlap of each row's tags with the source's (0 where either has none).
        (Each article's tag codes are distinct: `build_columns` stores them as a set.)"""
        cols = self.columns
        mine = cols.tags_of(source)
        out = np.zeros(len(rows), dtype=np.float32)
        if not len(mine) or not len(rows):
            return out
        starts = cols.tag_indptr[rows]
        theirs = cols.tag_indptr[rows + 1] - starts
        total = int(theirs.sum())
        if not total:
            return out
        # every row's codes in one array: row i's run begins at starts[i]
        ends = np.cumsum(theirs)
        at = np.arange(total) + np.repeat(starts - (ends - theirs), theirs)
        found = (cols.tag_codes[at][:, None] == mine[None, :]).any(axis=1)
        shared = np.bincount(np.repeat(np.arange(len(rows)), theirs), weights=found,
                             minlength=len(rows))
        np.divide(shared, len(mine) + theirs - shared, out=out, where=theirs > 0,
                  casting="unsafe")
        return out

    def ranking(self, source: int, c: Candidates) -> tuple[np.ndarray, list[Pick]]:
        """The relevance ranking before any policy (what `similar` shows)."""
        anchor = self.anchor(source)
        score, parts = self.relevance(anchor, c)
        keep = (c.rows != source) & (c.rows != anchor)
        order = np.argsort(-score[keep], kind="stable")
        rows = c.rows[keep][order]
        picks = [Pick(int(r), float(score[keep][i]),
                      {**{k: _r(v[keep][i]) for k, v in parts.items()},
                       "relevance": _r(score[keep][i])})
                 for r, i in zip(rows, order, strict=True)]
        return rows, picks

    # ------------------------------------------------------------------ relations

    def keys(self, rows: np.ndarray | int) -> Keys:
        """What the copy and event rules compare, for these rows."""
        cols = self.columns
        return Keys(cols.title_key[rows], cols.body_key[rows], cols.story[rows],
                    cols.timestamp[rows])

    def duplicate(self, source: int | np.ndarray, rows: np.ndarray, cosine: np.ndarray
                  ) -> np.ndarray:
        """Copies of `source` (a row, or a column of rows against `rows` as a row: arrays
        broadcast): near-identical meaning, the same headline (normalised), or the same body
        text under another headline."""
        return self._copies(self.keys(source), self.keys(rows), cosine)

    def _copies(self, a: Keys, b: Keys, cosine: np.ndarray) -> np.ndarray:
        dup: np.ndarray = (cosine >= self.config.duplicate_similarity) | \
            ((b.body == a.body) & (a.body != 0)) | (b.title == a.title)
        return dup

    def _one_event(self, a: Keys, b: Keys, cosine: np.ndarray) -> np.ndarray:
        """One event between rows (broadcast): published within story_window_days of each
        other and either of the same story_id (when both have one) or close in meaning
        (event_similarity). Pairwise, never chained: an editor's story_id spanning weeks of
        follow-ups is a saga of several events."""
        cfg = self.config
        close = ~(np.abs(b.timestamp - a.timestamp) / DAY > cfg.story_window_days)  # undated
        same: np.ndarray = close & np.where((a.story >= 0) & (b.story >= 0), a.story == b.story,
                                            cosine >= cfg.event_similarity)
        return same

    def own_story(self, source: int, rows: np.ndarray, relevance: np.ndarray,
                  later: np.ndarray | None = None) -> np.ndarray:
        """The source's own story: its story_id when both have one, else relevance at least
        story_relevance within story_window_days of the source (undated: relevance alone),
        or a translation link."""
        cfg, cols = self.config, self.columns
        days = np.abs(self.later(source, rows) if later is None else later)
        story: np.ndarray = (relevance >= cfg.story_relevance) & \
            ~(days > cfg.story_window_days)  # undated: relevance alone
        if cols.story[source] >= 0:
            tagged = cols.story[rows] >= 0
            story = np.where(tagged, cols.story[rows] == cols.story[source], story)
        if self._translations:
            story = story | self._linked(source, rows)
        return story

    def development(self, source: int, rows: np.ndarray, relevance: np.ndarray,
                    later: np.ndarray | None = None) -> np.ndarray:
        """Later developments of the source's story: published after it and of the same
        story_id (when both have one), else within development_window_days with relevance
        at least story_relevance."""
        cfg, cols = self.config, self.columns
        if later is None:
            later = self.later(source, rows)  # NaN: never later
        out: np.ndarray = (later > 0) & (later <= cfg.development_window_days) & \
            (relevance >= cfg.story_relevance)
        if cols.story[source] >= 0:
            tagged = cols.story[rows] >= 0
            out = (later > 0) & np.where(tagged, cols.story[rows] == cols.story[source], out)
        return out

    def _linked(self, a: np.ndarray | int, b: np.ndarray) -> np.ndarray:
        """Linked by `translation_of` (one is the other's original, or both share one)."""
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        if not self._translations:
            return np.zeros(np.broadcast_shapes(a_arr.shape, b_arr.shape), dtype=bool)
        original = self.columns.original
        out: np.ndarray = (np.where(original[a_arr] >= 0, original[a_arr], a_arr) ==
                           np.where(original[b_arr] >= 0, original[b_arr], b_arr)) & \
            (a_arr != b_arr)
        return out

    def translation(self, source: int, rows: np.ndarray, cosine: np.ndarray) -> np.ndarray:
        """Translations of the source: linked by `translation_of`, or another language, close
        in meaning (translation_similarity) and published within translation_window_days."""
        cfg = self.config
        if self._languages < 2:
            return self._linked(source, rows)
        other = self._other_language(source, rows)
        days = np.abs(self.later(source, rows))
        close = ~(days > cfg.translation_window_days)  # undated: no time apart
        out: np.ndarray = self._linked(source, rows) | \
            (other & (cosine >= cfg.translation_similarity) & close)
        return out

    def anchor(self, source: int) -> int:
        """The row whose vector speaks for `source`: its original when it is a translation
        (`translation_of`) that is in the index, since the default model reads English only;
        otherwise, and always with a model that reads every language (cross_lingual), the
        source itself."""
        if self.config.cross_lingual:
            return source
        original = int(self.columns.original[source])
        return original if original >= 0 else source

    def language_of(self, row: int) -> str | None:
        code = int(self.columns.language[row])
        return self.columns.languages[code] if code >= 0 else None

    def _other_language(self, source: int, rows: np.ndarray) -> np.ndarray:
        lang = self.columns.language
        src = lang[source]
        if src < 0 or self._languages < 2:
            return np.zeros(len(rows), dtype=bool)
        theirs = lang[rows]
        other: np.ndarray = (theirs >= 0) & (theirs != src)
        return other

    # ------------------------------------------------------------------ the steps

    def reference_time(self, source: int, now_ts: float) -> float:
        """The date a page's links are measured around: the source's own date (never after
        now), or now for an undated source. On a fresh page that is now; an archive page gets
        the links of its time, not an empty slot."""
        ts = float(self.columns.timestamp[source])
        return now_ts if np.isnan(ts) else min(ts, now_ts)

    def prepare(self, source: int, c: Candidates) -> Prepared:
        """What does not depend on the slot, computed once per page: relevance and its
        parts, copies and translations of the source, its story and later developments."""
        anchor = self.anchor(source)
        rows = c.rows
        later = self.later(anchor, rows)
        relevance, parts = self.relevance(anchor, c, later)
        return Prepared(
            source=source, anchor=anchor, c=c, relevance=relevance, parts=parts,
            table=np.vstack([*parts.values(), relevance]),
            identity=self.duplicate(anchor, rows, c.semantic) |
            self.translation(anchor, rows, c.semantic),
            other_language=self._other_language(anchor, rows),
            story=self.own_story(anchor, rows, relevance, later),
            development=self.development(anchor, rows, relevance, later),
            timestamp=self.columns.timestamp[rows], later=later, version=self.version,
            read=np.zeros(len(rows), dtype=bool),
            known=np.empty((len(rows), self.version.manifest.dimension), dtype=np.float32))

    def score(self, policy: SlotPolicy, p: Prepared, *, now_ts: float, excluded: set[int]
              ) -> Scored:
        """Eligibility and freshness of one pool under a slot's policy, by one set of rules
        (the slot's candidates and its fallback pool alike)."""
        rows, source = p.c.rows, p.anchor
        eligible = self.columns.published[rows] & ~p.identity
        if excluded:
            eligible &= ~_member(rows, excluded)
        eligible &= self._filters(policy, rows)
        if policy.languages == "same":
            eligible &= ~p.other_language
        reference = self.reference_time(source, now_ts)
        eligible &= self._in_time(policy, source, rows, reference, now_ts,
                                  timestamp=p.timestamp, later=p.later)
        if policy.scope == "story":
            eligible &= p.story | (p.development if policy.latest_first else False)
        bar = np.where(p.other_language, policy.min_score_other_language,
                       policy.min_score).astype(np.float32)
        return Scored(p, eligible, self._freshness(policy, p.timestamp, reference), bar)

    def _in_time(self, policy: SlotPolicy, source: int, rows: np.ndarray, reference: float,
                 now_ts: float, *, timestamp: np.ndarray | None = None,
                 later: np.ndarray | None = None) -> np.ndarray:
        """The hard time limits: nothing dated after now; distance from the reference date;
        window relative to the source's date; undated articles when their factor is 0.
        `timestamp` and `later`: the rows' dates and days from the source, when known."""
        ts = self.columns.timestamp[rows] if timestamp is None else timestamp
        mask = ~(ts > now_ts)
        if policy.max_age_days is not None:
            mask &= ~(np.abs(ts - reference) / DAY > policy.max_age_days)
        if policy.window_before_days is not None or policy.window_after_days is not None:
            delta_days = self.later(source, rows) if later is None else later  # NaN: no limit
            if policy.window_before_days is not None:
                mask &= ~(delta_days < -policy.window_before_days)
            if policy.window_after_days is not None:
                mask &= ~(delta_days > policy.window_after_days)
        if policy.undated_factor <= 0:
            mask &= ~np.isnan(ts)
        out: np.ndarray = mask
        return out

    def _freshness(self, policy: SlotPolicy, ts: np.ndarray, reference: float) -> np.ndarray:
        """Each row's freshness factor, from its date `ts`."""
        factor = np.ones(len(ts), dtype=np.float32)
        if not policy.half_life_days and policy.undated_factor == 1.0:
            return factor
        if policy.half_life_days:
            distance = np.abs(ts - reference) / DAY
            factor = np.power(0.5, distance / policy.half_life_days).astype(np.float32)
        out: np.ndarray = np.where(np.isnan(ts), policy.undated_factor, factor).astype(np.float32)
        return out

    def _filters(self, policy: SlotPolicy, rows: np.ndarray) -> np.ndarray:
        cols = self.columns
        mask = np.ones(len(rows), dtype=bool)
        if policy.paywalled == "exclude":
            mask &= ~cols.paywalled[rows]
        if policy.sections_include or policy.sections_exclude:
            names = np.array([cols.sections[s] if s >= 0 else "" for s in cols.section[rows]])
            if policy.sections_include:
                mask &= np.isin(names, [s.casefold() for s in policy.sections_include])
            if policy.sections_exclude:
                mask &= ~np.isin(names, [s.casefold() for s in policy.sections_exclude])
        if policy.languages_include:
            codes = [cols.languages[c] if c >= 0 else "" for c in cols.language[rows]]
            mask &= np.isin(np.array(codes, dtype=object),
                            [lang.casefold() for lang in policy.languages_include])
        if policy.tags_include or policy.tags_exclude:
            include = {t.casefold() for t in policy.tags_include}
            exclude = {t.casefold() for t in policy.tags_exclude}
            for i, row in enumerate(rows):
                tags = {cols.tags[t] for t in cols.tags_of(int(row))}
                if (include and not tags & include) or tags & exclude:
                    mask[i] = False
        return mask

    # ------------------------------------------------------------------ selection

    def select(self, policy: SlotPolicy, prepared: Prepared, *, now: datetime,
               overrides: Overrides, shown: Sequence[int] = (), reserved: Iterable[int] = (),
               k: int | None = None, filtered: bool = False) -> list[Pick]:
        """What `policy` shows for the prepared source. `shown`: rows already on the page
        (earlier slots), never repeated, never copied, and their events taken; `reserved`:
        rows pinned in other slots. `filtered`: the policy was narrowed by a request's
        filters (`Filters.narrow`), which pins must pass too."""
        limit = policy.k if k is None else k
        blocked, never = self._override_rows(overrides)
        now_ts = now.timestamp()
        page_source, source = prepared.source, prepared.anchor
        excluded = set(shown) | set(reserved) | blocked | never.get(page_source, set()) | \
            {page_source, source}
        scored = self.score(policy, prepared, now_ts=now_ts, excluded=excluded)
        chosen = self._choose(policy, source, scored, scored.eligible &
                              (scored.p.relevance >= scored.bar), list(shown), limit)
        chosen = self._apply_pins(policy, page_source, chosen, overrides, now, blocked, limit,
                                  shown, filtered)
        fill_to = limit if policy.fallback_links is None else min(limit, policy.fallback_links)
        if policy.fallback and len(chosen) < fill_to:
            chosen += self._fallback(policy, source, scored, chosen, shown, excluded, now_ts,
                                     fill_to - len(chosen))
        return chosen

    def _choose(self, policy: SlotPolicy, source: int, scored: Scored, pool: np.ndarray,
                page: list[int], limit: int, label: dict[str, Any] | None = None
                ) -> list[Pick]:
        """Greedy selection from `pool` (a mask over scored.p.c.rows): same language first (if
        the policy says so), the story's latest development first (if it asks), then by
        score with MMR; never a copy of a link on the page (`page`, and each pick), and with
        one_per_event never two links of one event."""
        index = np.flatnonzero(pool)
        if limit <= 0 or len(index) == 0:
            return []
        p = scored.p
        rows = p.c.rows[index]
        keys = self.keys(rows)
        at_least = self.config.duplicate_similarity if not policy.one_per_event else \
            min(self.config.duplicate_similarity, self.config.event_similarity)

        def cosines(among: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
            """The cosines the copy and event rules read: of the rows `among` with the
            pool (rows `among` at `positions` of it, when they are its own), from the
            candidate lists, else from the vectors."""
            out = p.cosines(among, index, at_least)
            if out is None:
                # einsum, not `@`: a small product through a multithreaded BLAS costs tens
                # of us on an idle machine but milliseconds when the cores are busy (thread
                # hand-offs), the normal state of a server. einsum runs in this thread.
                out = np.einsum("ik,jk->ij", p.vectors(index[positions]) if positions is not
                                None else self._vectors_of(p, among), p.vectors(index))
            return out

        remaining = np.ones(len(index), dtype=bool)
        if page:  # never a copy of, or (one_per_event) the same event as, a link on the page
            on_page = np.asarray(page, dtype=np.int64)
            remaining &= ~self._conflict(policy, self.keys(on_page[:, None]), keys.row(),
                                         cosines(on_page)).any(0)
        tier = scored.p.other_language[index].astype(np.int8) if policy.languages == "same_first" \
            else np.zeros(len(index), dtype=np.int8)
        base = scored.score[index].astype(np.float64)
        in_story = scored.p.story[index]
        story_only = policy.scope == "story"
        latest = -1
        if policy.latest_first and remaining.any():
            newer = remaining & (tier == tier[remaining].min()) & scored.p.development[index]
            if newer.any():  # the story's latest development leads
                dates = self.columns.timestamp[rows]
                latest = int(np.argmax(np.where(newer & ~np.isnan(dates), dates, -np.inf)))
        if policy.mmr_lambda >= 1.0:
            picked, conflict = self._walk(
                policy, keys, lambda head: cosines(rows[head], head), remaining, tier, base,
                in_story if story_only else None, latest, limit)
        else:
            picked, conflict = self._mmr(policy, keys, p.vectors(index), remaining, tier,
                                         base, in_story if story_only else None, latest, limit)
        if not picked:
            return []
        # What each pick stands for: the pool's other rows it rules out (copies, and with
        # one_per_event its event), each counted under the first pick that rules it out.
        at = np.asarray(picked)
        conflict &= remaining[None, :]
        conflict[:, at] = False
        first = np.where(conflict.any(0), conflict.argmax(0), -1)
        out: list[Pick] = []
        chosen = index[at]
        names = [*scored.p.parts, "relevance"]
        # rounded as round(float(x), 4) rounds each (both round half to even), in one pass
        values = np.round(scored.p.table[:, chosen].T.astype(np.float64), 4).tolist()
        freshness = np.round(scored.freshness[chosen].astype(np.float64), 4).tolist()
        collapsed: dict[int, list[str]] = {}
        for x in np.flatnonzero(first >= 0).tolist():
            collapsed.setdefault(int(first[x]), []).append(self.ids[int(rows[x])])
        for n, j in enumerate(picked):
            i = int(index[j])
            reason: dict[str, Any] = dict(label or {})
            reason.update(zip(names, values[n], strict=True))
            reason["freshness"] = freshness[n]
            if scored.p.story[i] or j == latest:
                reason["same_story"] = True
                if j == latest:
                    reason["latest"] = True
            if scored.p.other_language[i]:
                reason["other_language"] = True
                reason["language"] = self.language_of(int(rows[j]))
            if n in collapsed:
                reason["event_collapsed_from"] = collapsed[n]
            out.append(Pick(int(rows[j]), float(base[j]), reason))
        return out

    def _walk(self, policy: SlotPolicy, keys: Keys,
              cosines: Callable[[np.ndarray], np.ndarray], remaining: np.ndarray,
              tier: np.ndarray, base: np.ndarray, story: np.ndarray | None, latest: int,
              limit: int) -> tuple[list[int], np.ndarray]:
        """Without MMR the order is fixed (same language first, then by score; ties: the
        candidate table's order): walk it, taking each row that conflicts with no pick so
        far. The conflicts of the head of the walk with the pool are computed at once
        (`cosines`: of the pool rows at these positions with the pool), a few rows more than
        the slot needs at a time, instead of one pass per pick. Returns the picks and their
        conflict rows over the pool."""
        order = np.lexsort((-base, tier)) if tier.any() else np.argsort(-base, kind="stable")
        walk = order[remaining[order] & (story[order] if story is not None else True)]
        if latest >= 0:
            walk = np.concatenate([[latest], walk[walk != latest]])
        picked: list[int] = []
        rows: list[np.ndarray] = []  # each pick's conflicts over the pool, per head
        step = limit + 2
        for start in range(0, len(walk), step):
            head = walk[start:start + step]
            clash = self._conflict(policy, keys.at(head).column(), keys.row(), cosines(head))
            among = clash[:, head].tolist()  # the head with itself
            before = clash[:, picked].tolist() if picked else None  # with earlier picks
            taken: list[int] = []
            for x, candidate in enumerate(head.tolist()):
                if (before and any(before[x])) or any(among[x][t] for t in taken):
                    continue
                taken.append(x)
                picked.append(candidate)
                if len(picked) == limit:
                    break
            rows.append(clash[taken])
            if len(picked) == limit:
                break
        return picked, (np.concatenate(rows) if rows else np.zeros((0, len(base)), dtype=bool))

    def _vectors_of(self, p: Prepared, rows: np.ndarray) -> np.ndarray:
        """The vectors of a few rows (the links already on a page): from the candidates'
        read for the page where they are among them, else from the index."""
        match = p.c.rows[None, :] == rows[:, None]
        found = match.any(axis=1)
        if found.all():
            out: np.ndarray = p.vectors(match.argmax(axis=1))
            return out
        out = np.empty((len(rows), self.version.manifest.dimension), dtype=np.float32)
        out[found] = p.vectors(match.argmax(axis=1)[found])
        out[~found] = self.version.vectors_at(rows[~found])
        return out

    def _mmr(self, policy: SlotPolicy, keys: Keys, vectors: np.ndarray,
             remaining: np.ndarray, tier: np.ndarray, base: np.ndarray,
             story: np.ndarray | None, latest: int, limit: int
             ) -> tuple[list[int], np.ndarray]:
        """Maximal marginal relevance: each next pick maximises lam * score - (1 - lam) *
        its highest cosine to the picks so far, among rows that conflict with none. Returns
        the picks and their conflict rows over the pool."""
        lam = policy.mmr_lambda
        remaining = remaining.copy()
        nearest = np.full(len(base), -np.inf, dtype=np.float32)
        picked: list[int] = []
        rows: list[np.ndarray] = []
        while len(picked) < limit and remaining.any():
            if latest >= 0 and not picked:
                j = latest
            else:
                value = lam * base - (1.0 - lam) * nearest if picked else base.copy()
                value[~remaining] = -np.inf
                value[tier != tier[remaining].min()] = -np.inf
                if story is not None:  # then the story's best coverage
                    value[~story] = -np.inf
                if not np.isfinite(value).any():
                    break
                j = int(np.argmax(value))
            cosine_j = np.einsum("k,ik->i", vectors[j], vectors)
            nearest = np.maximum(nearest, cosine_j)
            rows.append(self._conflict(policy, keys.at(j), keys, cosine_j))
            remaining &= ~rows[-1]
            remaining[j] = False
            picked.append(j)
        return picked, (np.stack(rows) if rows else np.zeros((0, len(base)), dtype=bool))

    def _conflict(self, policy: SlotPolicy, a: Keys, b: Keys, cosine: np.ndarray
                  ) -> np.ndarray:
        """Rows that may not stand beside each other (broadcast): copies, and with
        one_per_event two links of one event."""
        out = self._copies(a, b, cosine)
        if policy.one_per_event:
            out |= self._one_event(a, b, cosine)
        return out

    def _fallback(self, policy: SlotPolicy, source: int, scored: Scored, chosen: list[Pick],
                  shown: Sequence[int], excluded: set[int], now_ts: float, needed: int
                  ) -> list[Pick]:
        """The next most relevant eligible articles: first the candidates below the bar,
        then (if still short) articles published around the source's date, scored by the
        same steps. Labelled, never a copy of a link on the page, one per event."""
        page = [*shown, *(p.row for p in chosen)]
        taken = excluded | set(page)
        below = scored.eligible & (scored.p.relevance < scored.bar) & \
            ~_member(scored.p.c.rows, taken)
        out = self._choose(policy, source, scored, below, page, needed,
                           label={"fallback": "below the bar"})
        if len(out) < needed:
            page += [p.row for p in out]
            nearby = self._nearby(source, now_ts, taken | set(page) |
                                  set(scored.p.c.rows.tolist()))
            if len(nearby):
                extra = self.score(policy, self.prepare(source, self.candidates(source, nearby)),
                                   now_ts=now_ts, excluded=excluded)
                out += self._choose(policy, source, extra, extra.eligible, page,
                                    needed - len(out), label={"fallback": "nearby"})
        return out

    def articles_by_date(self) -> np.ndarray:
        """Published, dated rows in date order (computed once per version)."""
        if self._by_date is None:
            cols = self.columns
            dated = np.flatnonzero(cols.published & ~np.isnan(cols.timestamp))
            self._by_date = dated[np.argsort(cols.timestamp[dated], kind="stable")]
        return self._by_date

    def _nearby(self, source: int, now_ts: float, taken: set[int]) -> np.ndarray:
        """Up to NEARBY published rows closest in date to the source's reference date (never
        after now), not yet taken."""
        by_date = self.articles_by_date()
        ts = self.columns.timestamp[by_date]
        reference = self.reference_time(source, now_ts)
        end = int(np.searchsorted(ts, now_ts, side="right"))
        at = int(np.searchsorted(ts, reference))
        lo, hi = max(0, at - NEARBY), min(end, at + NEARBY)
        window = by_date[lo:hi]
        if taken:
            window = window[~_member(window, taken)]
        order = np.argsort(np.abs(self.columns.timestamp[window] - reference), kind="stable")
        nearby: np.ndarray = window[order[:NEARBY]]
        return nearby

    # ------------------------------------------------------------------ overrides

    def _override_rows(self, overrides: Overrides) -> tuple[set[int], dict[int, set[int]]]:
        cached = self._overrides
        if cached is None or cached[0] is not overrides:
            blocked = {self.position[i] for i in overrides.blocks if i in self.position}
            never: dict[int, set[int]] = {}
            for pair in overrides.never_pair:
                a, b = sorted(pair) if len(pair) == 2 else (next(iter(pair)),) * 2
                if a in self.position and b in self.position:
                    never.setdefault(self.position[a], set()).add(self.position[b])
                    never.setdefault(self.position[b], set()).add(self.position[a])
            cached = self._overrides = (overrides, blocked, never)
        return cached[1], cached[2]

    def pinned_rows(self, source: int, slot: str, overrides: Overrides, now: datetime
                    ) -> list[int]:
        return [self.position[p.target] for p in overrides.pins_for(self.ids[source], slot, now)
                if p.target in self.position and self._pinnable(self.position[p.target],
                                                                 source, overrides, now)]

    def _pinnable(self, row: int, source: int, overrides: Overrides, now: datetime) -> bool:
        # A pin never brings in a withdrawn, blocked, never-paired or future-dated article.
        blocked, never = self._override_rows(overrides)
        return (row != source and bool(self.columns.published[row]) and row not in blocked
                and row not in never.get(source, ())
                and not self.columns.timestamp[row] > now.timestamp())

    def _passes_filters(self, policy: SlotPolicy, source: int, row: int, now: datetime
                        ) -> bool:
        """Does `row` pass the policy's section, language, tag, paywall and time limits?"""
        rows = np.array([row], dtype=np.int64)
        now_ts = now.timestamp()
        reference = self.reference_time(source, now_ts)
        return bool(self._filters(policy, rows)[0] and
                    self._in_time(policy, source, rows, reference, now_ts)[0])

    def _apply_pins(self, policy: SlotPolicy, source: int, chosen: list[Pick],
                    overrides: Overrides, now: datetime, blocked: set[int], limit: int,
                    shown: Sequence[int] = (), filtered: bool = False) -> list[Pick]:
        """Pinned links at their positions; an article already on the page (pinned or shown
        by an earlier slot) is not pinned again. A request's filters (`filtered`) hold for
        pins too: a site that asks for one section gets only that section."""
        pins = overrides.pins_for(self.ids[source], policy.name, now)
        if not pins:
            return chosen
        on_page = set(shown)
        for pin in pins:
            row = self.position.get(pin.target)
            if row is None or row in on_page or not self._pinnable(row, source, overrides, now):
                continue
            if filtered and not self._passes_filters(policy, source, row, now):
                continue
            on_page.add(row)
            chosen = [p for p in chosen if p.row != row]
            pair = self.version.vectors_at([row, source])
            semantic = float(np.dot(pair[0], pair[1]))
            reason: dict[str, Any] = {"pinned": True, "semantic": _r(semantic)}
            if pin.until is not None:
                reason["pinned_until"] = format_datetime(pin.until)
            chosen.insert(min(pin.position - 1, len(chosen)), Pick(row, semantic, reason))
        # Pins keep their place; the weakest organic links give way.
        while len(chosen) > limit:
            organic = [i for i, p in enumerate(chosen) if not p.reason.get("pinned")]
            if not organic:
                break
            del chosen[organic[-1]]
        return chosen


def _r(value: Any) -> float:
    return round(float(value), 4)


def _member(rows: np.ndarray, among: set[int]) -> np.ndarray:
    """rows in `among`, elementwise: a comparison per member for the few rows a page
    excludes, else a set lookup per row (both beat np.isin at ~50 rows)."""
    if len(among) <= 8:
        out = np.zeros(len(rows), dtype=bool)
        for row in among:
            out |= rows == row
        return out
    return np.fromiter((row in among for row in rows.tolist()), dtype=bool, count=len(rows))
