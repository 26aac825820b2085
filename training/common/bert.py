"""The project's BERT (a `zhserve train mlm` run) or a user's Hugging Face folder, as a masked LM."""

from __future__ import annotations

from pathlib import Path

import torch

from app.text import CharVocab


def bert_config(vocab: CharVocab, hidden: int, layers: int, heads: int, intermediate: int, seq_len: int, **_):
    """The BertConfig of a `zhserve train mlm` recipe (its other keys are training settings)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=intermediate,
                      max_position_embeddings=seq_len, pad_token_id=vocab.pad_id)


def encoder_vocab(folder: Path) -> CharVocab:
    """A Hugging Face folder's vocabulary by id: its vocab.txt, else its fast tokenizer's (checked by
    training/common/encoder.py). Read one character a token, as Perturbed Masking reads text."""
    if (folder / "vocab.txt").exists():
        return CharVocab.load(folder / "vocab.txt")
    from training.common.encoder import load_tokenizer

    vocab = load_tokenizer(folder).get_vocab()
    return CharVocab([t for t, _ in sorted(vocab.items(), key=lambda item: item[1])])


def load_mlm(run: Path):
    """(BertForMaskedLM, CharVocab) from a training run folder (last.pt) or a Hugging Face folder."""
    from transformers import BertForMaskedLM

    vocab = encoder_vocab(run)
    if (run / "last.pt").exists():  # a `zhserve train mlm` run
        state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
        model = BertForMaskedLM(bert_config(vocab, **state["config"]))
        model.load_state_dict(state["model"])
    else:
        model = BertForMaskedLM.from_pretrained(str(run))
    return model.eval(), vocab
