"""`--encoder DIR`: loading a user's Hugging Face folder (and refusing what does not fit), the serving-side
tokenizer's character offsets, and the encoder's ONNX export against PyTorch. A tiny BERT written here."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from app.text.subword import SubwordTokenizer
from tests.tiny_encoder import write_tiny_bert

TEXTS = ["《邪少兵王》是冰火未央写的网络小说", "iPhone 15 Pro于2023年9月发布", "ＡＢＣ公司 成立于１９９８年",
         "周杰伦  出生于台湾省新北市", "email: hello@zhserve.org"]
LEFT_OUT = "冰"  # never in the vocabulary: [UNK]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), TEXTS, LEFT_OUT)


@pytest.fixture(scope="module")
def loaded(folder):
    import torch

    from training.common.encoder import load_encoder

    torch.set_num_threads(1)
    return load_encoder(folder)


def test_offsets_index_the_original_text(loaded, tmp_path):
    from training.common.encoder import save_tokenizer

    _, tokenizer, hf = loaded
    served = SubwordTokenizer.load(save_tokenizer(tokenizer, tmp_path))  # what a version folder holds
    unk_seen = pieces_seen = False
    for text in TEXTS + ["冰火 ＡＢＣ  x"]:
        enc = served.encode(text)
        assert enc.ids[0] == served.cls_id and enc.ids[-1] == served.sep_id
        assert list(enc.ids) == hf(text)["input_ids"]  # serving encodes exactly as transformers does
        words = [text[s:e] for s, e in enc.offsets[enc.is_text]]
        assert all(w and not w.isspace() for w in words)
        # every non-space character is covered by exactly one token, in order
        covered = [i for s, e in enc.offsets[enc.is_text] for i in range(s, e)]
        assert covered == [i for i, c in enumerate(text) if not c.isspace()]
        unk_seen |= served.unk_id in enc.ids
        pieces_seen |= any(served.tokenizer.id_to_token(int(i)).startswith("##") for i in enc.ids)
    assert unk_seen and pieces_seen


def test_token_spans_round_trip(loaded):
    _, tokenizer, _ = loaded
    text = "iPhone 15 Pro于2023年9月发布"
    enc = tokenizer.encode(text)
    first, last = enc.token_span(0, 6)  # "iPhone": several word pieces
    assert last > first and enc.char_span(first, last) == (0, 6)
    assert enc.token_span(1, 6) is None  # a boundary inside a word piece cannot be pointed at
    for start, end in [(7, 9), (10, 13), (13, 14), (14, 18)]:
        span = enc.token_span(start, end)
        assert span is not None and enc.char_span(*span) == (start, end)
    values = np.arange(len(enc), dtype=np.float64)
    per_char = enc.char_values(values, len(text))
    assert per_char.sum() == pytest.approx(values[enc.is_text].sum()) and per_char[6] == 0  # a space


def test_encoder_exports_with_dynamic_axes(loaded, tmp_path):
    from training.common.encoder import export_hidden

    encoder, _, _ = loaded
    assert encoder.info.model_type == "bert" and encoder.info.hidden == 32
    assert export_hidden(encoder, tmp_path / "hidden.onnx") < 1e-5


def test_refuses_what_does_not_fit(folder, tmp_path):
    from training.common.encoder import EncoderError, load_encoder

    with pytest.raises(EncoderError, match="not a folder"):
        load_encoder(tmp_path / "missing")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(EncoderError, match="model_type 'gpt2' is not a supported encoder"):
        load_encoder(gpt)
    vocab_only = tmp_path / "vocab_only"  # a BERT folder with vocab.txt but no tokenizer.json still loads
    vocab_only.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        shutil.copy(folder / name, vocab_only / name)
    _, tokenizer, _ = load_encoder(vocab_only)
    _, reference, _ = load_encoder(folder)
    assert list(tokenizer.encode(TEXTS[1]).ids) == list(reference.encode(TEXTS[1]).ids)
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, no_tokenizer / name)
    with pytest.raises(EncoderError, match="tokenizer"):
        load_encoder(no_tokenizer)


def test_an_albert_folder_loads_and_exports(folder, tmp_path):
    """ALBERT (factorised embeddings: E < H) with a BERT vocabulary, as the Chinese ALBERTs ship."""
    import torch
    from transformers import AlbertConfig, AlbertModel

    from training.common.encoder import export_hidden, load_encoder

    albert = tmp_path / "albert"
    albert.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, albert / name)
    torch.manual_seed(0)
    size = len((folder / "vocab.txt").read_text(encoding="utf-8").split())
    AlbertModel(AlbertConfig(vocab_size=size, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                             pad_token_id=0)).save_pretrained(str(albert))
    encoder, _, _ = load_encoder(albert)
    assert (encoder.info.model_type, encoder.info.embedding_size, encoder.info.hidden) == ("albert", 16, 32)
    assert export_hidden(encoder, tmp_path / "albert.onnx") < 1e-5


def test_a_long_text_is_cut_to_the_encoders_positions(loaded):
    """Evaluation and the export's parity check read an over-long text as its longest prefix that fits."""
    from training.extract.evaluate import fitted_encoding

    _, tokenizer, _ = loaded
    text = " ".join(TEXTS) * 4
    whole, cut = tokenizer.encode(text), fitted_encoding(tokenizer, text, 32)
    assert len(whole) > 32 >= len(cut) and cut.ids[-1] == tokenizer.sep_id
    assert list(cut.ids[:-1]) == list(whole.ids[: len(cut) - 1])  # the same tokens, [SEP] after the last that fits
    assert list(fitted_encoding(tokenizer, TEXTS[0], 32).ids) == list(tokenizer.encode(TEXTS[0]).ids)
