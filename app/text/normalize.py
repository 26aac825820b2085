"""Character-wise normalisation that keeps offsets: output[i] always comes from input[i].

Full-width forms become half-width (NFKC) and letters lower-case, but only where that maps one
character to exactly one character, so spans found in the normalised text index the original.
"""

from functools import lru_cache


@lru_cache(maxsize=65536)
def normalize_char(char: str) -> str:
    import unicodedata

    folded = unicodedata.normalize("NFKC", char)
    if len(folded) != 1:
        return char
    lowered = folded.lower()
    return lowered if len(lowered) == 1 else folded


def normalize(text: str) -> str:
    """Normalise `text` character by character; `len(normalize(t)) == len(t)` always holds."""
    return "".join(normalize_char(c) for c in text)
