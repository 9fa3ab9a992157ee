"""Lexical similarity: TF-IDF over title and body, and over the names the text mentions
(scikit-learn), stored per version.

Only article-to-article scores are needed, so the stored artefacts are the L2-normalised
sparse matrices themselves (`lexical.npz`, `names.npz`, scipy's format, no pickle); the
vocabularies are not kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from .articles import Article
from .text import lexical_text_for, name_tokens, names_text_for

FILE = "lexical.npz"
NAMES_FILE = "names.npz"


def _fit(texts: list[str], **options: object) -> sp.csr_matrix:
    """Unit-length TF-IDF rows (sublinear tf; terms in more than half of all articles carry
    no signal and are dropped)."""
    if not texts:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    vectorizer = TfidfVectorizer(sublinear_tf=True, max_df=0.5 if len(texts) > 20 else 1.0,
                                 dtype=np.float32, **options)
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # empty vocabulary (e.g. only stop-word-like titles, or no names)
        return sp.csr_matrix((len(texts), 1), dtype=np.float32)
    return sp.csr_matrix(matrix, dtype=np.float32)


def fit_lexical(articles: Sequence[Article]) -> sp.csr_matrix:
    """Word TF-IDF over the title (twice) and the body."""
    return _fit([lexical_text_for(a) for a in articles], strip_accents="unicode")


def fit_names(articles: Sequence[Article]) -> sp.csr_matrix:
    """TF-IDF over the names each article mentions (`text.name_tokens`): people, places and
    organisations are what reports of one event, and of one saga, have in common."""
    return _fit([names_text_for(a) for a in articles], analyzer=name_tokens)


def write_lexical(directory: Path, matrix: sp.csr_matrix, names: sp.csr_matrix) -> None:
    sp.save_npz(directory / FILE, matrix, compressed=False)
    sp.save_npz(directory / NAMES_FILE, names, compressed=False)


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
