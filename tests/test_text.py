from app.text import CharVocab, normalize
from app.text.vocab import SPECIAL_TOKENS, UNK_ID


def test_normalize_keeps_offsets_and_folds_width_and_case():
    text = "ＡＢＣ１２３，Hello…ｗｏｒｌｄ İ"
    out = normalize(text)
    assert len(out) == len(text)
    assert out.startswith("abc123,hello")
    assert out[12] == "…"  # NFKC would give three characters: left alone to keep offsets


def test_vocab_encodes_one_id_per_character(tmp_path):
    vocab = CharVocab.build(["你好世界", "你好"], min_count=1)
    assert vocab.tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    ids = vocab.encode("你好吗")
    assert ids.shape == (3,) and ids[2] == UNK_ID and ids[0] == vocab.index["你"]
    vocab.save(tmp_path / "v.txt")
    assert CharVocab.load(tmp_path / "v.txt").tokens == vocab.tokens
