"""Text normalisation and tokenisation shared by serving and training (one source of truth)."""

from app.text.normalize import normalize
from app.text.vocab import CharVocab

__all__ = ["CharVocab", "normalize"]
