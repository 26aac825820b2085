"""A Google BERT / bert4keras TensorFlow checkpoint -> a Hugging Face BERT folder (`zhserve import tf-checkpoint`).

The checkpoint folder holds what Google's releases and bert4keras use: `bert_model.ckpt.{index,data-*}`
(or any single checkpoint prefix), `bert_config.json` and `vocab.txt`. Variables carry Google's names
(`bert/encoder/layer_0/attention/self/query/kernel`, ...); dense kernels are stored (in, out) and are
transposed into torch's (out, in). The result is a BertForPreTraining, BertForMaskedLM or BertModel state
dict (by which heads the checkpoint has), config.json and a fast tokenizer, written with save_pretrained.

Every variable is accounted for: optimizer slots (adam_m, adam_v), global_step and TensorFlow's own
bookkeeping are dropped; any other name that maps nowhere, and any weight the model needs that is not
there, refuses the import by name. TensorFlow is needed only here (the optional `tf` extra).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DROPPED = re.compile(r"(^|/)(adam_m|adam_v|Adam|Adam_1|global_step|good_steps|bad_steps|loss_scale)$"
                     r"|^_CHECKPOINTABLE_OBJECT_GRAPH$|^global_step$")
LAYER = re.compile(r"^bert/encoder/layer_(\d+)/(.+)$")
_LINEAR = {"kernel": "weight", "bias": "bias"}
_NORM = {"gamma": "weight", "beta": "bias"}
# Per encoder layer: Google's sub-path -> Hugging Face's, and whether the tensor is a kernel to transpose.
_LAYER_PARTS = {f"{g}/{leaf}": (f"{h}.{_LINEAR[leaf]}", leaf == "kernel")
                for g, h in (("attention/self/query", "attention.self.query"),
                             ("attention/self/key", "attention.self.key"),
                             ("attention/self/value", "attention.self.value"),
                             ("attention/output/dense", "attention.output.dense"),
                             ("intermediate/dense", "intermediate.dense"),
                             ("output/dense", "output.dense"))
                for leaf in ("kernel", "bias")}
_LAYER_PARTS |= {f"{g}/{leaf}": (f"{h}.{_NORM[leaf]}", False)
                 for g, h in (("attention/output/LayerNorm", "attention.output.LayerNorm"),
                              ("output/LayerNorm", "output.LayerNorm"))
                 for leaf in ("gamma", "beta")}
EMBEDDINGS = {
    "bert/embeddings/word_embeddings": ("bert.embeddings.word_embeddings.weight", False),
    "bert/embeddings/position_embeddings": ("bert.embeddings.position_embeddings.weight", False),
    "bert/embeddings/token_type_embeddings": ("bert.embeddings.token_type_embeddings.weight", False),
    "bert/embeddings/LayerNorm/gamma": ("bert.embeddings.LayerNorm.weight", False),
    "bert/embeddings/LayerNorm/beta": ("bert.embeddings.LayerNorm.bias", False),
}
POOLER = {"bert/pooler/dense/kernel": ("bert.pooler.dense.weight", True),
          "bert/pooler/dense/bias": ("bert.pooler.dense.bias", False)}
MLM_HEAD = {"cls/predictions/transform/dense/kernel": ("cls.predictions.transform.dense.weight", True),
            "cls/predictions/transform/dense/bias": ("cls.predictions.transform.dense.bias", False),
            "cls/predictions/transform/LayerNorm/gamma": ("cls.predictions.transform.LayerNorm.weight", False),
            "cls/predictions/transform/LayerNorm/beta": ("cls.predictions.transform.LayerNorm.bias", False),
            "cls/predictions/output_bias": ("cls.predictions.bias", False)}
# Google stores the next-sentence weights already (2, hidden), used with transpose_b: no transpose here.
NSP_HEAD = {"cls/seq_relationship/output_weights": ("cls.seq_relationship.weight", False),
            "cls/seq_relationship/output_bias": ("cls.seq_relationship.bias", False)}


class CheckpointError(ValueError):
    """The checkpoint cannot be imported as it is; the message names the variables at fault."""


def checkpoint_prefix(folder: Path) -> Path:
    """The checkpoint in `folder`: the one its `checkpoint` file names, else its only `*.index`."""
    if (folder / "checkpoint").exists():
        m = re.search(r'model_checkpoint_path:\s*"([^"]+)"', (folder / "checkpoint").read_text())
        if m:
            return folder / m.group(1)
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) != 1:
        found = ", ".join(p.name for p in indexes) or "none"
        raise CheckpointError(f"{folder}: expected one TensorFlow checkpoint (*.index), found {found}")
    return indexes[0].with_suffix("")


def read_variables(prefix: Path) -> dict[str, np.ndarray]:
    """Every variable of a TensorFlow checkpoint as numpy, by name."""
    try:
        import tensorflow as tf
    except ImportError:
        raise SystemExit("zhserve import tf-checkpoint needs TensorFlow: pip install 'zhserve[tf]'") from None
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()}


def expected_names(layers: int) -> dict[str, tuple[str, bool]]:
    """Google name -> (Hugging Face name, transpose) for the encoder with `layers` layers (heads apart)."""
    out = dict(EMBEDDINGS)
    for i in range(layers):
        out |= {f"bert/encoder/layer_{i}/{g}": (f"bert.encoder.layer.{i}.{h}", t) for g, (h, t) in _LAYER_PARTS.items()}
    return out


def _listed(names: list[str], most: int = 20) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def to_state_dict(variables: dict[str, np.ndarray], layers: int) -> tuple[dict[str, np.ndarray], str]:
    """Google-named variables -> (a Hugging Face state dict, the BERT class it fits).

    The class: BertForPreTraining with both heads, BertForMaskedLM with the masked-LM head only, else
    BertModel. A head (or the pooler) is all there or absent; a partial one is refused."""
    kept = {k: v for k, v in variables.items() if not DROPPED.search(k)}
    dropped = sorted(set(variables) - set(kept))
    if dropped:
        log.info("dropped %d optimizer/bookkeeping variables (%s...)", len(dropped), ", ".join(dropped[:3]))
    mapping = expected_names(layers)
    groups = {"pooler": POOLER, "masked-LM head": MLM_HEAD, "next-sentence head": NSP_HEAD}
    present = {}
    for group, names in groups.items():
        have = [n for n in names if n in kept]
        if have and len(have) < len(names):
            raise CheckpointError(f"{group} incomplete: missing {', '.join(n for n in names if n not in kept)}")
        present[group] = bool(have)
        if have:
            mapping |= names
    unknown = sorted(set(kept) - set(mapping))
    if unknown:
        extra = [n for n in unknown if (m := LAYER.match(n)) and int(m.group(1)) >= layers]
        hint = f" (bert_config.json says {layers} layers)" if extra else ""
        raise CheckpointError(f"unknown variables, not a Google/bert4keras BERT checkpoint{hint}: {_listed(unknown)}")
    missing = sorted(set(mapping) - set(kept))
    if missing:
        raise CheckpointError(f"missing variables: {_listed(missing)}")
    state = {}
    for name, (hf_name, transpose) in mapping.items():
        value = kept[name].astype(np.float32)
        state[hf_name] = np.ascontiguousarray(value.T if transpose else value)
    if present["masked-LM head"]:
        # the output layer is the word embeddings (tied, as in Google's BERT) plus output_bias
        state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
        kind = "BertForPreTraining" if present["next-sentence head"] else "BertForMaskedLM"
    elif present["next-sentence head"]:
        raise CheckpointError("next-sentence head without the masked-LM head (cls/predictions/...)")
    else:
        kind = "BertModel"
    if kind == "BertForMaskedLM" and present["pooler"]:
        log.info("the pooler is dropped: Hugging Face's BertForMaskedLM has none")
        state = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
    if kind == "BertModel":
        state = {k.removeprefix("bert."): v for k, v in state.items()}
    return state, kind


def bert_config(path: Path):
    """Google's bert_config.json -> a transformers BertConfig (the key names are the same)."""
    from transformers import BertConfig

    raw = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}")
    return BertConfig(**raw)


def fast_tokenizer(vocab_file: Path, lowercase: bool, max_length: int):
    """Google's WordPiece vocab.txt -> a transformers fast tokenizer (BERT normalisation, pre-tokenisation,
    [CLS] A [SEP] B [SEP] with token types), built by the tokenizers library itself."""
    from tokenizers import BertWordPieceTokenizer, Tokenizer
    from transformers import PreTrainedTokenizerFast

    wordpiece = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(wordpiece.to_str()), unk_token="[UNK]",
                                   pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=max_length,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def import_checkpoint(folder: Path, out: Path, lowercase: bool = True) -> str:
    """Convert the checkpoint in `folder` into a Hugging Face folder `out`; returns the model class written."""
    import torch
    import transformers

    config_file, vocab_file = folder / "bert_config.json", folder / "vocab.txt"
    for needed in (config_file, vocab_file):
        if not needed.exists():
            raise CheckpointError(f"{folder}: no {needed.name}")
    config = bert_config(config_file)
    variables = read_variables(checkpoint_prefix(folder))
    state, kind = to_state_dict(variables, config.num_hidden_layers)
    model = getattr(transformers, kind)(config)
    expected = model.state_dict()
    wrong = [f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(expected[k].shape)} by bert_config.json"
             for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise CheckpointError("shapes disagree with bert_config.json: " + "; ".join(wrong[:10]))
    result = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    left = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if left or result.unexpected_keys:
        raise CheckpointError(f"state dict does not fit {kind}: missing {left}, unexpected {result.unexpected_keys}")
    model.config.architectures = [kind]
    tokenizer = fast_tokenizer(vocab_file, lowercase, config.max_position_embeddings)
    if len(tokenizer) > config.vocab_size:
        raise CheckpointError(f"vocab.txt has {len(tokenizer)} tokens, over bert_config.json's vocab_size "
                              f"{config.vocab_size}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.copyfile(vocab_file, out / "vocab.txt")  # for readers of the plain vocabulary
    log.info("%s: %s with %d layers written to %s", folder, kind, config.num_hidden_layers, out)
    return kind
