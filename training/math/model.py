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


GRAMMAR_TOKENS = tuple("0123456789.+-*/^()")  # what the expression grammar writes (app/tasks/math/decode.py)


def math_vocab(base: CharVocab) -> CharVocab:
    """The BERT's vocabulary plus one token per number slot (and any expression token it lacks), appended so
    that the old ids keep their rows."""
    return CharVocab(base.tokens + [t for t in (*SLOT_TOKENS, *GRAMMAR_TOKENS) if t not in base.index])


def grown(old, base: CharVocab, max_positions: int):
    """`old` (a BertForMaskedLM) grown to the math vocabulary, `max_positions` and two token types: new token
    rows start at the mean of the digits' embeddings (plus noise, so slots differ); new positions repeat the
    learned ones; a second token type starts as the first."""
    from transformers import BertForMaskedLM

    vocab = math_vocab(base)
    config = old.config
    config.vocab_size, config.max_position_embeddings = len(vocab), max(max_positions, config.max_position_embeddings)
    config.type_vocab_size = max(2, config.type_vocab_size)
    model = BertForMaskedLM(config)
    state, fresh = old.state_dict(), model.state_dict()
    digits = [base.index[d] for d in "0123456789" if d in base.index] or list(range(len(base)))
    gen = torch.Generator().manual_seed(0)
    for key, value in state.items():
        target = fresh[key]
        if target.shape == value.shape:
            fresh[key] = value
        elif key.endswith("position_ids"):
            continue
        elif "position_embeddings" in key or "token_type_embeddings" in key:
            fresh[key] = value[torch.arange(target.shape[0]) % value.shape[0]]
        else:  # vocabulary-sized: word embeddings, output bias
            added = value[digits].mean(0, keepdim=True).expand(len(vocab) - len(base), *value.shape[1:])
            if added.dim() == 2:
                added = added + 0.02 * torch.randn(added.shape, generator=gen)
            fresh[key] = torch.cat([value, added])
    model.load_state_dict(fresh)
    model.tie_weights()
    return model, vocab


def from_pretrained(run: Path, max_positions: int):
    """The project's BERT (a `zhserve train mlm` run) grown to the math vocabulary and `max_positions`."""
    from training.common.bert import load_mlm

    old, base = load_mlm(run)
    return grown(old, base, max_positions)


def from_encoder(folder: Path, max_positions: int):
    """A user's BERT folder (`--encoder DIR`, checked by training/common/encoder.py) grown to the math
    vocabulary, and its word-piece tokenizer. Its masked-LM head is kept when the folder has one (else it
    starts fresh, tied to the word embeddings). UniLM masking and the cached decoder run BERT's own layers,
    so the folder must be model_type bert (Chinese RoBERTa-wwm and MacBERT folders are)."""
    from transformers import BertForMaskedLM

    from training.common.encoder import EncoderError, load_encoder

    encoder, pieces, _ = load_encoder(folder)
    if encoder.info.model_type != "bert":
        raise EncoderError(f"--encoder {folder}: model_type {encoder.info.model_type!r}; the math solver's "
                           "UniLM decoder needs a bert folder")
    vocab = pieces.tokenizer.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise EncoderError(f"--encoder {folder}: the tokenizer's ids are not 0..{len(tokens) - 1}")
    old = BertForMaskedLM.from_pretrained(str(folder), local_files_only=True)
    # rows of the embedding table past the tokenizer's ids (never produced) keep placeholder names
    spare = [f"[row{i}]" for i in range(len(tokens), old.config.vocab_size)]
    model, math = grown(old, CharVocab(tokens + spare), max_positions)
    return model, math, pieces


def from_scratch(vocab: CharVocab, hidden: int, layers: int, heads: int, max_positions: int):
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=heads, intermediate_size=4 * hidden,
                                      max_position_embeddings=max_positions, pad_token_id=vocab.pad_id))
