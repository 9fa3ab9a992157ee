"""What the model reads for an article, and the hash that decides whether it must be re-read."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .articles import Article

# The model reads at most ~256 word pieces (all-MiniLM-L6-v2). 2,000 characters is comfortably
# more than that for English prose, so nothing the model would read is cut here, while a later
# edit deep inside a long body (which the model never sees) does not force a re-embedding.
MAX_EMBED_CHARS = 2_000

_WHITESPACE = re.compile(r"\s+")


def embed_text_for(article: Article) -> str:
    """Title first, then the body: a news body is written lead-first (inverted pyramid), so the
    title and the opening paragraphs carry the story, and the model's window ends in the body,
    never before the title. The title ends with a full stop so it reads as its own sentence."""
    title = _WHITESPACE.sub(" ", article.title).strip()
    body = _WHITESPACE.sub(" ", article.body).strip()
    if title and title[-1] not in ".!?:":
        title += "."
    text = f"{title} {body}".strip()
    return text[:MAX_EMBED_CHARS]


def lexical_text_for(article: Article) -> str:
    """The text the lexical (TF-IDF) score reads: the title twice (it is the densest summary),
    then the whole body."""
    return f"{article.title}\n{article.title}\n{article.body}"


_SENTENCE_BREAK = re.compile(r"(?<=[.!?:;\"\u201d])\s+|\n+")
_WORD = re.compile(r"[^\W\d_][\w'\u2019-]*")


def name_tokens(text: str) -> list[str]:
    """The names a text mentions, as lowercased tokens: capitalised words that do not open a
    sentence ("Kim", "Jong-nam", "Kuala", "Lumpur", "VX"). Reports of one event share the
    names of its people and places far more than generic words; a tokenizer this plain keeps
    the signal in any language that capitalises names, at no model cost."""
    out = []
    for sentence in _SENTENCE_BREAK.split(text):
        words = _WORD.findall(sentence)
        for word in words[1:]:
            if word[0].isupper():
                token = word.casefold().replace("\u2019", "'").split("'")[0]
                if len(token) > 1:
                    out.append(token)
    return out


def names_text_for(article: Article) -> str:
    """The text whose names are compared: the title as its own sentence, then the body."""
    return f"{article.title}.\n{article.body}"


def content_hash(text: str) -> str:
    """Hash of exactly what is embedded; equal hash + equal model = the stored vector is valid."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_TITLE_SUFFIX = re.compile(r"\s+[|–—]\s+.*$")  # " | Wire report", " – Site name"
_NON_WORD = re.compile(r"[\W_]+")


def normalised_title(title: str) -> str:
    """The title as a duplicate key: without a trailing " | Source" part, accents, case and
    punctuation. A syndicated copy usually keeps the headline and appends its source."""
    base = _TITLE_SUFFIX.sub("", title.strip())
    decomposed = unicodedata.normalize("NFKD", base.casefold())
    letters = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", letters).strip()
