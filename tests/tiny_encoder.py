"""A tiny random BERT folder written by the tests themselves (nothing downloaded): what a user passes as
`--encoder DIR`, with a word-piece vocabulary built from the given texts (ASCII words split into `##` pieces)
and some characters left out so that [UNK] occurs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocab(texts: Iterable[str], left_out: str = "") -> list[str]:
    """Special tokens, then every word BERT's own normaliser and pre-tokeniser make of the texts: one-character
    words as they are, longer ones (ASCII, digits) as their first two characters plus `##` pieces."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    tokens = dict.fromkeys(SPECIALS)
    for text in texts:
        for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)):
            if any(c in left_out for c in word):
                continue
            tokens[word[:2]] = None
            for c in word[2:]:
                tokens["##" + c] = None
    return list(tokens)


def write_tiny_bert(folder: Path, texts: Iterable[str], left_out: str = "", hidden: int = 32, layers: int = 2,
                    seed: int = 0) -> Path:
    """config.json, model weights and a fast tokenizer (tokenizer.json + vocab.txt) in `folder`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_vocab(texts, left_out)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128, pad_token_id=0)
    BertModel(config).save_pretrained(str(folder))
    return folder
