"""Lexical similarity: TF-IDF over title and body, and over the names the text mentions,
stored per version.

Terms are hashed (scikit-learn's HashingVectorizer, 2**20 buckets), so no vocabulary is kept
and an article never seen by the fit still gets its words: a build fits the IDF weights
(`LexicalModel.fit`), and an update weighs its new and changed articles with the weights of
the last fit (`LexicalModel.transform`), leaving every other article's row, and its table
scores, as they were. The stored artefacts are the L2-normalised sparse rows of words and of
names (CSR arrays in .npy files, `lexical_*.npy` and `names_*.npy`: memory-mapped by readers,
spliced by the kernel on update) and the weights (`lexical_idf.npz`), all numpy formats, no
pickle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

from .articles import Article
from .files import copy_range, runs
from .text import lexical_text_for, name_tokens, names_text_for

WORDS, NAMES = "lexical", "names"  # {name}_data.npy, _indices.npy, _indptr.npy: CSR arrays
OLD_FILES = {WORDS: "lexical.npz", NAMES: "names.npz"}  # how format 6 and before kept them
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


def _files(directory: Path, name: str) -> tuple[Path, Path, Path]:
    return (directory / f"{name}_data.npy", directory / f"{name}_indices.npy",
            directory / f"{name}_indptr.npy")


def has_lexical_files(directory: Path) -> bool:
    """Whether a version holds its TF-IDF rows as .npy files (format 7; before, .npz)."""
    return all(path.is_file() for name in (WORDS, NAMES) for path in _files(directory, name))


def write_lexical(directory: Path, matrix: sp.csr_matrix, names: sp.csr_matrix) -> None:
    """The TF-IDF rows of words and of names, each as its CSR arrays in .npy files (which
    readers memory-map and an update splices in the kernel)."""
    for name, rows in ((WORDS, matrix), (NAMES, names)):
        rows = sp.csr_matrix(rows, dtype=np.float32)
        data, indices, indptr = _files(directory, name)
        np.save(data, rows.data.astype(np.float32, copy=False))
        np.save(indices, rows.indices.astype(np.int32, copy=False))
        np.save(indptr, rows.indptr.astype(np.int64, copy=False))


def read_lexical(directory: Path, name: str) -> sp.csr_matrix:
    """The TF-IDF rows `name` (WORDS or NAMES) of a version, memory-mapped. Raises what
    numpy raises for a missing or damaged file, ValueError for arrays that do not fit."""
    data_file, indices_file, indptr_file = _files(directory, name)
    data = np.load(data_file, mmap_mode="r", allow_pickle=False)
    indices = np.load(indices_file, mmap_mode="r", allow_pickle=False)
    indptr = np.load(indptr_file, allow_pickle=False)
    if data.shape != indices.shape or indptr.ndim != 1 or not len(indptr) \
            or indptr[-1] != len(data):
        raise ValueError(f"the TF-IDF arrays of {name} in {directory} do not fit together")
    return sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, FEATURES),
                         copy=False)


def splice_lexical(target: Path, source: Path, name: str, old_rows: np.ndarray,
                   fresh: sp.csr_matrix, fresh_rows: np.ndarray, count: int
                   ) -> sp.csr_matrix:
    """The TF-IDF rows `name` of a new version (directory `target`): row old_rows[i] of the
    previous version's (`source`) for each carried row i (-1: not carried), fresh's rows at
    fresh_rows (every other row). The kernel copies the carried rows in runs of consecutive
    rows (copy_file_range), the fresh ones are written at their place: nothing of the
    previous rows passes through this process. Returns the new rows, memory-mapped."""
    fresh = sp.csr_matrix(fresh, dtype=np.float32)
    old_rows = np.asarray(old_rows, dtype=np.int64)
    fresh_rows = np.asarray(fresh_rows, dtype=np.int64)
    old_indptr = np.load(_files(source, name)[2], allow_pickle=False)
    carried = np.flatnonzero(old_rows >= 0)
    from_rows = old_rows[carried]
    lengths = np.zeros(count, dtype=np.int64)
    lengths[carried] = np.diff(old_indptr)[from_rows]
    lengths[fresh_rows] = np.diff(fresh.indptr)
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    # the runs of carried rows, as runs of values
    first_old, first_new, rows = runs(from_rows, carried)
    read_starts = old_indptr[first_old]
    run_lengths = old_indptr[first_old + rows] - read_starts
    write_starts = indptr[first_new]
    for old_file, new_file, fresh_values, dtype in zip(
            _files(source, name)[:2], _files(target, name)[:2],
            (fresh.data, fresh.indices), (np.float32, np.int32), strict=True):
        previous = np.load(old_file, mmap_mode="r", allow_pickle=False)
        if previous.dtype != dtype or previous.ndim != 1:
            raise ValueError(f"{old_file} does not hold {np.dtype(dtype)} values")
        read_offset = previous.offset
        del previous
        out = np.lib.format.open_memmap(new_file, mode="w+", dtype=dtype,
                                        shape=(int(indptr[-1]),))
        write_offset, size = out.offset, np.dtype(dtype).itemsize
        del out
        values = np.ascontiguousarray(fresh_values, dtype=dtype)
        with open(old_file, "rb") as src, open(new_file, "r+b") as dst:
            for start, length, at in zip(read_starts.tolist(), run_lengths.tolist(),
                                         write_starts.tolist(), strict=True):
                copy_range(src.fileno(), dst.fileno(), length * size,
                           read_offset + start * size, write_offset + at * size, new_file)
            for row, at in enumerate(indptr[fresh_rows].tolist()):
                start, stop = int(fresh.indptr[row]), int(fresh.indptr[row + 1])
                if stop > start:
                    os.pwrite(dst.fileno(), values[start:stop].tobytes(),
                              write_offset + at * size)
    np.save(_files(target, name)[2], indptr)
    return read_lexical(target, name)



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
