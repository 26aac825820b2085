"""UniLM-style seq2seq on one BERT: [CLS] question [SEP] expression [SEP], type 0 for the question and
type 1 for the expression. The question attends to itself both ways; each expression token attends to
the whole question and to the expression tokens up to itself, so the hidden state at a position
predicts the next expression token (the question's [SEP] predicts the first one)."""

from __future__ import annotations

from pathlib import Path

import torch

from app.tasks.math.text import SLOT_TOKENS
from app.text import CharVocab


def unilm_mask(token_ids: torch.Tensor, type_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, 1, T, T) bool: may position i attend to position j."""
    valid = token_ids != pad_id
    at = torch.arange(token_ids.shape[1], device=token_ids.device)
    before = at[None, :] <= at[:, None]  # j <= i
    source = (type_ids == 0)[:, None, :]
    target_row = (type_ids == 1)[:, :, None]
    return (valid[:, None, :] & (source | (target_row & before[None])))[:, None]


def hidden_states(model, token_ids: torch.Tensor, type_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    mask = unilm_mask(token_ids, type_ids, pad_id)
    return model.bert(input_ids=token_ids, token_type_ids=type_ids, attention_mask=mask).last_hidden_state


def math_vocab(base: CharVocab) -> CharVocab:
    """The BERT's vocabulary plus one token per number slot, appended so that the old ids keep their rows."""
    return CharVocab(base.tokens + [t for t in SLOT_TOKENS if t not in base.index])


def from_pretrained(run: Path, max_positions: int):
    """The project's BERT (a `zhserve train mlm` run) grown to the math vocabulary and `max_positions`:
    new slot rows start at the mean of the digits' embeddings (plus noise, so slots differ); new
    positions repeat the learned ones."""
    from transformers import BertForMaskedLM

    from training.common.bert import load_mlm

    old, base = load_mlm(run)
    vocab = math_vocab(base)
    config = old.config
    config.vocab_size, config.max_position_embeddings = len(vocab), max(max_positions, config.max_position_embeddings)
    model = BertForMaskedLM(config)
    state, fresh = old.state_dict(), model.state_dict()
    digits = [base.index[d] for d in "0123456789"]
    gen = torch.Generator().manual_seed(0)
    for key, value in state.items():
        target = fresh[key]
        if target.shape == value.shape:
            fresh[key] = value
        elif key.endswith("position_ids"):
            continue
        elif "position_embeddings" in key:
            fresh[key] = value[torch.arange(target.shape[0]) % value.shape[0]]
        else:  # vocabulary-sized: word embeddings, output bias
            added = value[digits].mean(0, keepdim=True).expand(len(vocab) - len(base), *value.shape[1:])
            if added.dim() == 2:
                added = added + 0.02 * torch.randn(added.shape, generator=gen)
            fresh[key] = torch.cat([value, added])
    model.load_state_dict(fresh)
    model.tie_weights()
    return model, vocab


def from_scratch(vocab: CharVocab, hidden: int, layers: int, heads: int, max_positions: int):
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=heads, intermediate_size=4 * hidden,
                                      max_position_embeddings=max_positions, pad_token_id=vocab.pad_id))
