"""Slot policies: turn relevance candidates into what a slot shows.

For one source article, `Ranker.select` runs a slot's steps over its candidates, in order:

    eligibility   published, not the source, not shown elsewhere on the page, editorial
                  blocks and never-pairs, section/tag/paywall/language filters, age limits
    identity      drop near-duplicates (syndicated copies) and translations of the source
    relevance     fused score (semantic, lexical, tags, section) against the slot's bar
    freshness     relevance × decay relative to now (half-life), undated articles explicit
    selection     one article per story (story_id, or close in meaning and date), maximal
                  marginal relevance for variety, same language first
    pins          editors' pinned links at their positions
    fallback      recent articles (same section, then site-wide) to fill a slot that must
                  not be empty

Every result carries `reason`: the parts of its score and its flags.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .articles import format_datetime
from .config import RankingConfig, SlotPolicy
from .overrides import Overrides
from .store import Columns

DAY = 86_400.0


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


SCORE_PARTS = ("relevance", "semantic", "lexical", "tags", "section", "freshness")


def explain_reason(reason: dict[str, Any]) -> str:
    """Why a link is there, in one line: flags (pinned, fallback) first, then the score parts,
    then what it stands for."""
    parts = [f"{name} {reason[name]:.2f}" for name in SCORE_PARTS if name in reason]
    if "fallback" in reason:
        parts.insert(0, f"fallback ({reason['fallback']})")
    if reason.get("pinned"):
        until = reason.get("pinned_until")
        parts.insert(0, "pinned" + (f" until {until}" if until else ""))
    if reason.get("other_language"):
        parts.append("other language")
    if reason.get("story_collapsed_from"):
        parts.append("stands for " + ", ".join(reason["story_collapsed_from"]))
    return "; ".join(parts)


@dataclass(frozen=True)
class Candidates:
    """Relevance candidates of one source: rows with their semantic and lexical scores."""

    rows: np.ndarray       # int64
    semantic: np.ndarray   # float32 cosine
    lexical: np.ndarray    # float32 TF-IDF cosine


@dataclass
class Pick:
    """A row chosen for a slot, with its score and reason (ids are resolved later)."""

    row: int
    score: float
    reason: dict[str, Any]


class Ranker:
    """Applies slot policies over one index version. Holds per-version derived data (recent
    articles per section, override rows) so each query only touches its candidates."""

    def __init__(self, ids: Sequence[str], position: dict[str, int], vectors: np.ndarray,
                 columns: Columns, config: RankingConfig) -> None:
        self.ids = ids
        self.position = position
        self.vectors = vectors
        self.columns = columns
        self.config = config
        self._recent: np.ndarray | None = None
        self._overrides: tuple[Overrides, set[int], dict[int, set[int]]] | None = None

    # ------------------------------------------------------------------ relevance

    def relevance(self, source: int, c: Candidates) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        cfg, cols = self.config, self.columns
        parts: dict[str, np.ndarray] = {"semantic": c.semantic, "lexical": c.lexical}
        score = cfg.semantic_weight * c.semantic + cfg.lexical_weight * c.lexical
        if cfg.tag_weight:
            parts["tags"] = self._tag_overlap(source, c.rows)
            score = score + cfg.tag_weight * parts["tags"]
        if cfg.section_weight:
            src_section = cols.section[source]
            same = ((cols.section[c.rows] == src_section) & (src_section >= 0)).astype(np.float32)
            parts["section"] = same
            score = score + cfg.section_weight * same
        return score.astype(np.float32), parts

    def _tag_overlap(self, source: int, rows: np.ndarray) -> np.ndarray:
        mine = set(self.columns.tags_of(source).tolist())
        out = np.zeros(len(rows), dtype=np.float32)
        if not mine:
            return out
        for i, row in enumerate(rows):
            theirs = set(self.columns.tags_of(int(row)).tolist())
            if theirs:
                out[i] = len(mine & theirs) / len(mine | theirs)
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

    # ------------------------------------------------------------------ selection

    def select(self, policy: SlotPolicy, source: int, c: Candidates, *, now: datetime,
               overrides: Overrides, shown: Sequence[int] = (), reserved: Iterable[int] = (),
               k: int | None = None) -> list[Pick]:
        """What `policy` shows for `source`. `shown`: rows already on the page (earlier slots),
        never repeated and counted for one-per-story; `reserved`: rows pinned in other slots."""
        cols = self.columns
        limit = policy.k if k is None else k
        blocked, never = self._override_rows(overrides)
        now_ts = now.timestamp()
        rows = c.rows
        page_source, source = source, self.anchor(source)
        excluded = set(shown) | set(reserved) | blocked | never.get(page_source, set()) | \
            {page_source, source}

        mask = cols.published[rows].copy()
        if excluded:
            mask &= ~np.isin(rows, np.fromiter(excluded, dtype=np.int64))
        mask &= self._filters(policy, rows)
        other_language = self._other_language(source, rows)
        if policy.languages == "same":
            mask &= ~other_language

        mask &= self._in_time(policy, source, rows, now_ts)
        freshness = self._freshness(policy, rows, now_ts)

        duplicate = self.duplicate(source, rows, c.semantic)
        _, translation = self._relation(np.array(source), rows, c.semantic)
        mask &= ~duplicate & ~translation

        relevance, parts = self.relevance(source, c)
        bar = np.where(other_language, policy.min_score_other_language, policy.min_score)
        mask &= relevance >= bar
        score = relevance * freshness

        eligible = np.flatnonzero(mask)
        picks = self._choose(policy, source, eligible, rows, score, other_language, shown, limit)
        for pick, i in picks:
            pick.reason.update({name: _r(values[i]) for name, values in parts.items()})
            pick.reason["relevance"] = _r(relevance[i])
            pick.reason["freshness"] = _r(freshness[i])
            if other_language[i]:
                pick.reason["other_language"] = True
        chosen = [p for p, _ in picks]
        chosen = self._apply_pins(policy, page_source, chosen, overrides, now, blocked, limit,
                                  shown)
        if policy.fallback and len(chosen) < limit:
            chosen += self._fallback(policy, source, chosen, shown, excluded, now_ts,
                                     limit - len(chosen))
        return chosen

    def _in_time(self, policy: SlotPolicy, source: int, rows: np.ndarray, now_ts: float
                 ) -> np.ndarray:
        """The hard time limits: age relative to now, window relative to the source's date,
        and undated articles when their factor is 0."""
        ts = self.columns.timestamp[rows]
        mask = np.ones(len(rows), dtype=bool)
        mask &= ~(ts > now_ts)  # dated in the future: held back until then, like an embargo
        if policy.max_age_days is not None:
            mask &= ~((now_ts - ts) / DAY > policy.max_age_days)
        src_ts = self.columns.timestamp[source]
        if not math.isnan(src_ts):
            delta_days = (ts - src_ts) / DAY
            if policy.window_before_days is not None:
                mask &= ~(delta_days < -policy.window_before_days)
            if policy.window_after_days is not None:
                mask &= ~(delta_days > policy.window_after_days)
        if policy.undated_factor <= 0:
            mask &= ~np.isnan(ts)
        return mask

    def _freshness(self, policy: SlotPolicy, rows: np.ndarray, now_ts: float) -> np.ndarray:
        ts = self.columns.timestamp[rows]
        factor = np.ones(len(rows), dtype=np.float32)
        if policy.half_life_days:
            age_days = np.clip((now_ts - ts) / DAY, 0, None)
            factor = np.power(0.5, age_days / policy.half_life_days).astype(np.float32)
        out: np.ndarray = np.where(np.isnan(ts), policy.undated_factor, factor).astype(np.float32)
        return out

    def duplicate(self, source: int, rows: np.ndarray, cosine: np.ndarray) -> np.ndarray:
        """Copies of the source: near-identical meaning, the same headline (normalised), or
        the same body text under another headline."""
        cols = self.columns
        same_body = (cols.body_key[rows] == cols.body_key[source]) & (cols.body_key[source] != 0)
        dup: np.ndarray = (cosine >= self.config.duplicate_similarity) | same_body | \
            (cols.title_key[rows] == cols.title_key[source])
        return dup

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
        if policy.tags_include or policy.tags_exclude:
            include = {t.casefold() for t in policy.tags_include}
            exclude = {t.casefold() for t in policy.tags_exclude}
            for i, row in enumerate(rows):
                tags = {cols.tags[t] for t in cols.tags_of(int(row))}
                if (include and not tags & include) or tags & exclude:
                    mask[i] = False
        return mask

    def _other_language(self, source: int, rows: np.ndarray) -> np.ndarray:
        lang = self.columns.language
        src = lang[source]
        if src < 0:
            return np.zeros(len(rows), dtype=bool)
        theirs = lang[rows]
        other: np.ndarray = (theirs >= 0) & (theirs != src)
        return other

    def _relation(self, a: np.ndarray, b: np.ndarray, cosine: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(same story, translation) between rows `a` and rows `b` (arrays broadcast, e.g. a
        column against a row gives the matrix).

        Same story: the same story_id when both have one; otherwise close in meaning
        (cosine >= story_similarity, or translation_similarity across languages) and
        published within story_window_days. Translation: linked by `translation_of`, or the
        same story in another language published within translation_window_days.
        """
        cfg, cols = self.config, self.columns
        la, lb = cols.language[a], cols.language[b]
        other = (la >= 0) & (lb >= 0) & (la != lb)
        delta = (cols.timestamp[b] - cols.timestamp[a]) / DAY
        undated = np.isnan(delta)
        gap = np.abs(np.nan_to_num(delta))
        sa, sb = cols.story[a], cols.story[b]
        tagged = (sa >= 0) & (sb >= 0)
        similar = np.where(other, cosine >= cfg.translation_similarity,
                           cosine >= cfg.story_similarity)
        same = np.where(tagged, sa == sb, similar & (undated | (gap <= cfg.story_window_days)))
        original = cols.original
        linked = (np.where(original[a] >= 0, original[a], a) ==
                  np.where(original[b] >= 0, original[b], b)) & (a != b)
        same = same | linked
        translation = linked | (other & same & (undated | (gap <= cfg.translation_window_days)))
        return same, translation

    def anchor(self, source: int) -> int:
        """The row whose vector speaks for `source`: its original when it is a translation
        (`translation_of`) that is in the index, since the default model reads English only;
        otherwise the source itself."""
        original = int(self.columns.original[source])
        return original if original >= 0 else source

    def _choose(self, policy: SlotPolicy, source: int, eligible: np.ndarray,
                rows: np.ndarray, score: np.ndarray, other_language: np.ndarray,
                shown: Sequence[int], limit: int) -> list[tuple[Pick, int]]:
        """Greedy selection: same language first (if the policy says so), MMR for variety,
        and never two articles of one story on the page (the source's own story included:
        one follow-up, not five). Stories are the connected groups of the same-story
        relation over the source, the page and the candidates, so a chain of follow-ups
        counts as one story even when its ends are not alike."""
        if limit <= 0 or len(eligible) == 0:
            return []
        n_fixed = 1 + len(shown)
        # Stories are grouped over every candidate, eligible or not: an ineligible article
        # (paywalled, too weak) can still be the link that ties two follow-ups together.
        nodes = np.concatenate([[source], np.asarray(list(shown), dtype=np.int64), rows])
        vectors = np.asarray(self.vectors[nodes], dtype=np.float32)
        # einsum, not `@`: a ~50x50 product through a multithreaded BLAS costs 35 us on an
        # idle machine but milliseconds when the cores are busy (thread hand-offs), which is
        # the normal state of a server. einsum runs in this thread: ~120 us, every time.
        cosine = np.einsum("ik,jk->ij", vectors, vectors)
        story = np.arange(len(nodes))
        if policy.one_per_story:
            same, _ = self._relation(nodes[:, None], nodes[None, :], cosine)
            story = _components(same)
        cand_rows = rows[eligible]
        pairwise = cosine[n_fixed + eligible][:, n_fixed + eligible]
        remaining = np.ones(len(eligible), dtype=bool)
        if policy.one_per_story:
            on_page = story[1:n_fixed]
            remaining &= ~np.isin(story[n_fixed + eligible], on_page)
        cand_story = story[n_fixed + eligible]
        tier = other_language[eligible].astype(np.int8) if policy.languages == "same_first" \
            else np.zeros(len(eligible), dtype=np.int8)
        picked: list[int] = []
        out: list[tuple[Pick, int]] = []
        lam = policy.mmr_lambda
        base = score[eligible].astype(np.float64)
        while len(out) < limit and remaining.any():
            value = base.copy()
            if picked and lam < 1.0:
                value = lam * base - (1.0 - lam) * pairwise[:, picked].max(axis=1)
            value[~remaining] = -np.inf
            value[tier != tier[remaining].min()] = -np.inf
            j = int(np.argmax(value))
            if policy.one_per_story and policy.story_representative == "latest":
                # The story's latest development stands for it (undated members last).
                members = np.flatnonzero((cand_story == cand_story[j]) & remaining &
                                         (tier == tier[j]))
                dates = np.nan_to_num(self.columns.timestamp[cand_rows[members]], nan=-np.inf)
                j = int(members[np.argmax(dates)])
            remaining[j] = False
            pick = Pick(int(cand_rows[j]), float(base[j]), {})
            if policy.one_per_story:
                same_story = cand_story == cand_story[j]
                collapsed = np.flatnonzero(same_story & remaining)
                if len(collapsed):
                    pick.reason["story_collapsed_from"] = [self.ids[int(cand_rows[i])]
                                                           for i in collapsed]
                remaining &= ~same_story
            picked.append(j)
            out.append((pick, int(eligible[j])))
        return out

    def _story_taken(self, source: int, shown: Sequence[int]) -> bool:
        """Does an article already on the page belong to the source's own story?"""
        if not len(shown):
            return False
        rows = np.asarray(list(shown), dtype=np.int64)
        cosine = np.asarray(self.vectors[rows], dtype=np.float32) @ \
            np.asarray(self.vectors[source], dtype=np.float32)
        same, _ = self._relation(np.array(source), rows, cosine)
        return bool(same.any())

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

    def _apply_pins(self, policy: SlotPolicy, source: int, chosen: list[Pick],
                    overrides: Overrides, now: datetime, blocked: set[int], limit: int,
                    shown: Sequence[int] = ()) -> list[Pick]:
        """Pinned links at their positions; an article already on the page (pinned or shown
        by an earlier slot) is not pinned again."""
        pins = overrides.pins_for(self.ids[source], policy.name, now)
        if not pins:
            return chosen
        on_page = set(shown)
        for pin in pins:
            row = self.position.get(pin.target)
            if row is None or row in on_page or not self._pinnable(row, source, overrides, now):
                continue
            on_page.add(row)
            chosen = [p for p in chosen if p.row != row]
            semantic = float(np.dot(self.vectors[row], self.vectors[source]))
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

    # ------------------------------------------------------------------ fallback

    def recent_rows(self) -> np.ndarray:
        """Published, dated rows, newest first (computed once per version)."""
        if self._recent is None:
            cols = self.columns
            dated = np.flatnonzero(cols.published & ~np.isnan(cols.timestamp))
            self._recent = dated[np.argsort(-cols.timestamp[dated], kind="stable")]
        return self._recent

    def _fallback(self, policy: SlotPolicy, source: int, chosen: list[Pick],
                  shown: Sequence[int], excluded: set[int], now_ts: float, needed: int
                  ) -> list[Pick]:
        """Recent articles, same section first, then site-wide, passing the slot's filters.
        A fallback link is never a copy or translation of the source, and never repeats a
        story already on the page (the source's own story included, once represented)."""
        cols = self.columns
        recent = self.recent_rows()
        recent = recent[cols.timestamp[recent] <= now_ts]  # nothing dated in the future
        taken = excluded | {p.row for p in chosen}
        src_section = cols.section[source]
        tiers = []
        if src_section >= 0:
            tiers.append(("section", recent[cols.section[recent] == src_section]))
        tiers.append(("site", recent))
        out: list[Pick] = []
        on_page = [*shown, *(p.row for p in chosen)]
        source_taken = self._story_taken(source, on_page)
        for label, tier_rows in tiers:
            for start in range(0, len(tier_rows), 64):
                block = tier_rows[start:start + 64]
                if taken:
                    block = block[~np.isin(block, np.fromiter(taken, dtype=np.int64))]
                block = block[self._filters(policy, block) &
                              self._in_time(policy, source, block, now_ts)]
                if policy.languages != "any":
                    block = block[~self._other_language(source, block)]
                if not len(block):
                    continue
                anchors = np.asarray([source, *on_page], dtype=np.int64)
                vectors = np.asarray(self.vectors[block], dtype=np.float32)
                cosine = np.einsum("ik,jk->ij", np.asarray(self.vectors[anchors],
                                                           dtype=np.float32), vectors)
                same, translation = self._relation(anchors[:, None], block[None, :], cosine)
                conflict = self.duplicate(source, block, cosine[0]) | translation[0] | \
                    same[1:].any(axis=0) | (same[0] & source_taken)
                within, _ = self._relation(block[:, None], block[None, :],
                                           np.einsum("ik,jk->ij", vectors, vectors))
                for j in range(len(block)):
                    if conflict[j]:
                        continue
                    row = int(block[j])
                    out.append(Pick(row, float(cosine[0, j]),
                                    {"fallback": label, "semantic": _r(cosine[0, j])}))
                    on_page.append(row)
                    taken.add(row)
                    conflict |= within[j]
                    if same[0, j]:  # the source's story is now on the page
                        source_taken = True
                        conflict |= same[0]
                    if len(out) == needed:
                        return out
        return out


def _r(value: Any) -> float:
    return round(float(value), 4)


def _components(linked: np.ndarray) -> np.ndarray:
    """Connected-component labels of a small symmetric boolean matrix, by propagating the
    smallest label along links until nothing changes (a few rounds for ~50 nodes; scipy's
    csgraph costs more in conversions than the whole computation here)."""
    labels = np.arange(len(linked))
    sentinel = len(linked)
    while True:
        spread = np.where(linked, labels[None, :], sentinel).min(axis=1)
        updated = np.minimum(labels, spread)
        if np.array_equal(updated, labels):
            return labels
        labels = updated

