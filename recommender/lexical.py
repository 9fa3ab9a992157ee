"""Lexical similarity: TF-IDF over title and body, and over the names the text mentions,
stored per version.

Terms are hashed (scikit-learn's HashingVectorizer, 2**20 buckets), so no vocabulary is kept
and an article never seen by the fit still gets its words: a build fits the IDF weights
(`LexicalModel.fit`), and an update weighs its new and changed articles with the weights of
the last fit (`LexicalModel.transform`), leaving every other article's row, and its table
scores, as they were. The stored artefacts are the L2-normalised sparse rows (`lexical.npz`,
`names.npz`) and the weights (`lexical_idf.npz`), all numpy/scipy formats, no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

from .articles import Article
from .text import lexical_text_for, name_tokens, names_text_for

FILE = "lexical.npz"
NAMES_FILE = "names.npz"
IDF_FILE = "lexical_idf.npz"
FEATURES = 2**20  # hash buckets: collisions are rare at a news site's vocabulary
MAX_DF = 0.5      # terms in more than half of all articles carry no signal (weight 0)


def _counts(texts: list[str], kind: str) -> sp.csr_matrix:
    if not texts:
        return sp.csr_matrix((0, FEATURES), dtype=np.float32)
    options: dict[str, Any] = ({"strip_accents": "unicode"} if kind == "words"
                               else {"analyzer": name_tokens})
    vectorizer = HashingVectorizer(n_features=FEATURES, alternate_sign=False, norm=None,
                                   dtype=np.float32, **options)
    return sp.csr_matrix(vectorizer.transform(texts), dtype=np.float32)


def _idf(counts: sp.csr_matrix) -> np.ndarray:
    """Smoothed IDF as TfidfVectorizer computes it, 0 for terms in more than MAX_DF of the
    articles (when there are more than 20)."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=FEATURES)
    idf: np.ndarray = (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)
    idf[df == 0] = _unseen(n)
    if n > 20:
        idf[df > MAX_DF * n] = 0.0
    return idf


def _weigh(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear tf times idf, rows L2-normalised (an article with no term: a zero row)."""
    matrix = counts.copy()
    if matrix.shape[0] == 0:
        return matrix
    matrix.data = (1 + np.log(matrix.data)) * idf[matrix.indices]
    matrix.eliminate_zeros()
    return sp.csr_matrix(normalize(matrix, norm="l2", copy=False), dtype=np.float32)


def _texts(articles: Sequence[Article], kind: str) -> list[str]:
    if kind == "words":  # the title twice, then the body
        return [lexical_text_for(a) for a in articles]
    # names (`text.name_tokens`): people, places and organisations are what reports of one
    # event, and of one saga, have in common
    return [names_text_for(a) for a in articles]


@dataclass(frozen=True)
class LexicalModel:
    """The IDF weights of words and of names, as fitted by the last build on `fitted` articles."""

    words: np.ndarray
    names: np.ndarray
    fitted: int

    @classmethod
    def fit(cls, articles: Sequence[Article]) -> tuple[LexicalModel, sp.csr_matrix,
                                                        sp.csr_matrix]:
        """Fit the weights on these articles: (model, word rows, names rows)."""
        words, names = _counts(_texts(articles, "words"), "words"), \
            _counts(_texts(articles, "names"), "names")
        model = cls(_idf(words), _idf(names), len(articles))
        return model, _weigh(words, model.words), _weigh(names, model.names)

    def transform(self, articles: Sequence[Article]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Rows of (new or changed) articles weighed with the fitted weights."""
        return (_weigh(_counts(_texts(articles, "words"), "words"), self.words),
                _weigh(_counts(_texts(articles, "names"), "names"), self.names))

    def save(self, directory: Path) -> None:
        """Only the weights of terms seen by the fit are stored: every other bucket has the
        weight of a term in no article, which the fitted count gives."""
        arrays: dict[str, Any] = {"fitted": np.array(self.fitted)}
        for kind, idf in (("words", self.words), ("names", self.names)):
            seen = np.flatnonzero(idf != _unseen(self.fitted)).astype(np.int32)
            arrays[f"{kind}_terms"], arrays[f"{kind}_idf"] = seen, idf[seen]
        np.savez(directory / IDF_FILE, **arrays)

    @classmethod
    def load(cls, directory: Path) -> LexicalModel | None:
        """The weights a version was written with, or None (a version from before them)."""
        if not (directory / IDF_FILE).is_file():
            return None
        with np.load(directory / IDF_FILE, allow_pickle=False) as data:
            fitted = int(data["fitted"])
            weights = []
            for kind in ("words", "names"):
                idf = np.full(FEATURES, _unseen(fitted), dtype=np.float32)
                idf[data[f"{kind}_terms"]] = data[f"{kind}_idf"]
                weights.append(idf)
        return cls(weights[0], weights[1], fitted)


def _unseen(n: int) -> np.float32:
    """The weight of a term in none of n articles."""
    return np.float32(np.log(1 + n) + 1)


def write_lexical(directory: Path, matrix: sp.csr_matrix, names: sp.csr_matrix) -> None:
    sp.save_npz(directory / FILE, matrix, compressed=False)
    sp.save_npz(directory / NAMES_FILE, names, compressed=False)


def splice_rows(old: sp.csr_matrix, old_rows: np.ndarray, fresh: sp.csr_matrix,
                fresh_rows: np.ndarray, count: int) -> sp.csr_matrix:
    """A matrix of `count` rows: row old_rows[i] of `old` for each carried row i (-1: not
    carried), and fresh's rows at fresh_rows (every other row). Written in one pass: the
    carried rows are copied in runs of consecutive rows, the fresh ones one by one."""
    old, fresh = sp.csr_matrix(old, dtype=np.float32), sp.csr_matrix(fresh, dtype=np.float32)
    old_rows = np.asarray(old_rows, dtype=np.int64)
    fresh_rows = np.asarray(fresh_rows, dtype=np.int64)
    carried = np.flatnonzero(old_rows >= 0)
    from_rows = old_rows[carried]
    lengths = np.zeros(count, dtype=np.int64)
    lengths[carried] = np.diff(old.indptr)[from_rows]
    lengths[fresh_rows] = np.diff(fresh.indptr)
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    data = np.empty(int(indptr[-1]), dtype=np.float32)
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    breaks = np.flatnonzero((np.diff(from_rows) != 1) | (np.diff(carried) != 1)) + 1
    for first, last in zip(np.r_[0, breaks], np.r_[breaks, len(carried)], strict=True):
        if first == last:
            continue
        start, stop = old.indptr[from_rows[first]], old.indptr[from_rows[last - 1] + 1]
        at = indptr[carried[first]]
        data[at:at + stop - start] = old.data[start:stop]
        indices[at:at + stop - start] = old.indices[start:stop]
    for row, target in enumerate(fresh_rows.tolist()):
        start, stop = fresh.indptr[row], fresh.indptr[row + 1]
        at = indptr[target]
        data[at:at + stop - start] = fresh.data[start:stop]
        indices[at:at + stop - start] = fresh.indices[start:stop]
    return sp.csr_matrix((data, indices, indptr), shape=(count, old.shape[1]))


def pair_scores(matrix: sp.csr_matrix, first: np.ndarray, second: np.ndarray,
                chunk: int = 50_000) -> np.ndarray:
    """TF-IDF cosine of each pair (first[i], second[i]), in chunks of row-wise products."""
    out = np.zeros(len(first), dtype=np.float32)
    if matrix.shape[1] == 0:
        return out
    for start in range(0, len(first), chunk):
        a = matrix[first[start:start + chunk]]
        b = matrix[second[start:start + chunk]]
        out[start:start + chunk] = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    return out


def lexical_scores(matrix: sp.csr_matrix, source: int, rows: np.ndarray) -> np.ndarray:
    """TF-IDF cosine between article `source` and each of `rows`."""
    if len(rows) == 0 or matrix.shape[1] == 0:
        return np.zeros(len(rows), dtype=np.float32)
    scores = matrix[rows] @ matrix[source].T
    return np.asarray(scores.toarray(), dtype=np.float32).ravel()
