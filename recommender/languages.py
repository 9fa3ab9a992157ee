"""Language detection for records that do not say their language (py3langid: a maintained
fork of langid.py, by the author of trafilatura).

Detection reads the title and the start of the body, which for news is enough (see
`python scripts/measure_multilingual.py`); a text too short to tell gets no language.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

MIN_LETTERS = 12      # fewer letters than this: too short to tell, no language
MIN_CONFIDENCE = 0.5  # below this probability the language is left unknown
READ_CHARS = 1_000


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the language `text` is written in, or None when the text is too
    short or the detector unsure."""
    text = text[:READ_CHARS]
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return None
    code, probability = _identifier().classify(text)
    return str(code) if probability >= MIN_CONFIDENCE else None
