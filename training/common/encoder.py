"""A user's pretrained encoder (`--encoder DIR`): any local Hugging Face folder that `transformers` loads as a
BERT-family encoder with a fast tokenizer (BERT, RoBERTa-wwm, MacBERT, ALBERT, ELECTRA discriminators).

What the trainers get: `PretrainedEncoder`, an nn.Module from (B, T) token ids or (B, T, E) input embeddings
to (B, T, H) hidden states that exports to ONNX with dynamic batch and sequence axes and traces through
make_fx for the gradient graphs of /explain; and the tokenizer as `tokenizer.json`, which serving reads with
app/text/subword.py (no transformers there). Nothing is downloaded: the folder must hold everything.

Shapes: B batch, T tokens, E input-embedding size (ALBERT: smaller than H), H hidden size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from app.text.subword import SPECIAL_NAMES, SubwordTokenizer

# Model types whose embeddings take `inputs_embeds` and whose encoders take a 4-D attention mask.
SUPPORTED_TYPES = ("bert", "albert", "electra")  # Chinese RoBERTa-wwm and MacBERT are "bert" folders
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_FILES = (TOKENIZER_FILE, "vocab.txt")  # a fast tokenizer, or a BERT vocabulary that converts to one


class EncoderError(ValueError):
    """The folder cannot serve as an encoder here; the message says why and what would fit."""


@dataclass
class EncoderInfo:
    """What model.json and the ONNX metadata record about the encoder (the architecture, not the weights)."""

    path: str
    model_type: str
    hidden: int
    embedding_size: int
    layers: int
    heads: int
    max_positions: int  # tokens, [CLS] and [SEP] included
    vocab_size: int

    def to_dict(self) -> dict:
        return asdict(self)


def _check_folder(path: Path) -> dict:
    if not path.is_dir():
        raise EncoderError(f"--encoder {path}: not a folder (give a local Hugging Face model folder)")
    config_file = path / "config.json"
    if not config_file.exists():
        raise EncoderError(f"--encoder {path}: no config.json (save the model with save_pretrained)")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise EncoderError(f"--encoder {path}: model_type {model_type!r} is not a supported encoder "
                           f"(supported: {', '.join(SUPPORTED_TYPES)})")
    return config


def load_tokenizer(path: Path):
    """The folder's fast tokenizer (a BERT vocab.txt alone is converted to one), refused if it is slow only,
    lacks BERT's special tokens or pads with another id than 0 (the batcher pads every row with 0)."""
    from transformers import AutoTokenizer

    if not any((path / name).exists() for name in TOKENIZER_FILES):
        raise EncoderError(f"--encoder {path}: no tokenizer files ({' or '.join(TOKENIZER_FILES)}); save the "
                           "tokenizer with save_pretrained beside the model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; the user needs one message
        raise EncoderError(f"--encoder {path}: no tokenizer could be loaded ({type(exc).__name__}: {exc})") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise EncoderError(f"--encoder {path}: {type(tokenizer).__name__} is not a fast tokenizer; character "
                           "offsets need one (save a tokenizer.json, or a BERT vocab.txt that converts to one)")
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_NAMES if t not in vocab]
    if missing:
        raise EncoderError(f"--encoder {path}: the tokenizer lacks {missing}: a BERT-style vocabulary is needed "
                           "([PAD] [UNK] [CLS] [SEP] [MASK])")
    if vocab["[PAD]"] != 0:
        raise EncoderError(f"--encoder {path}: [PAD] is id {vocab['[PAD]']}, not 0: rows are padded with 0")
    encoded = tokenizer("检查 check", return_offsets_mapping=True)
    if not encoded["input_ids"] or encoded["input_ids"][0] != vocab["[CLS]"]:
        raise EncoderError(f"--encoder {path}: the tokenizer does not start a text with [CLS]")
    return tokenizer


class PretrainedEncoder(nn.Module):
    """A Hugging Face encoder as (B, T) ids -> (B, T, H), with the mask given as floats (1 = token, 0 = padding).

    The mask goes in as a 4-D boolean (B, 1, T, T): transformers' own mask helpers branch on the data
    (`mask.all()`), which neither torch.export nor make_fx can trace. Token types are all 0 (one segment)."""

    def __init__(self, model: nn.Module, info: EncoderInfo):
        super().__init__()
        self.model, self.info = model, info

    def embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, E) input embeddings: what Integrated Gradients attributes to."""
        return self.model.get_input_embeddings()(token_ids)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, E) input embeddings and (B, T) mask -> (B, T, H) last hidden states."""
        T = embeddings.shape[1]
        attention = (mask[:, None, None, :] > 0).expand(-1, 1, T, -1)
        types = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
        return self.model(inputs_embeds=embeddings, attention_mask=attention, token_type_ids=types).last_hidden_state

    def encode(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> hidden (B, T, H) and mask (B, T) as floats ([PAD] = 0 is masked out)."""
        mask = (token_ids != 0).float()
        return self(self.embeddings(token_ids), mask), mask


def load_encoder(path: str | Path) -> tuple[PretrainedEncoder, SubwordTokenizer, object]:
    """(encoder, serving-side tokenizer, transformers tokenizer) from a local folder; EncoderError if it cannot
    serve. Attention is the eager implementation: the one that exports and traces the same everywhere."""
    from transformers import AutoConfig, AutoModel

    path = Path(path)
    _check_folder(path)
    tokenizer = load_tokenizer(path)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    config._attn_implementation = "eager"
    try:
        model = AutoModel.from_pretrained(str(path), config=config, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EncoderError(f"--encoder {path}: the weights could not be loaded ({type(exc).__name__}: {exc})") from exc
    if len(tokenizer) > config.vocab_size:
        raise EncoderError(f"--encoder {path}: the tokenizer has {len(tokenizer)} tokens, the model's embedding "
                           f"table {config.vocab_size}")
    return _wrap(model, str(path)), SubwordTokenizer(tokenizer.backend_tokenizer), tokenizer


def build_encoder(config: dict) -> PretrainedEncoder:
    """An encoder of the architecture a Hugging Face config dict (config.json) describes, random weights: what a
    checkpoint's state dict is loaded into, without the original folder."""
    from transformers import AutoConfig, AutoModel

    settings = {k: v for k, v in config.items() if k != "model_type"}
    hf = AutoConfig.for_model(config["model_type"], **settings)
    hf._attn_implementation = "eager"
    return _wrap(AutoModel.from_config(hf), config.get("_name_or_path", ""))


def _wrap(model, path: str) -> PretrainedEncoder:
    if hasattr(model, "pooler"):
        model.pooler = None  # never read: token states only (and no unused weights in checkpoints)
    config = model.config
    info = EncoderInfo(path=path, model_type=config.model_type, hidden=config.hidden_size,
                       embedding_size=model.get_input_embeddings().weight.shape[1], layers=config.num_hidden_layers,
                       heads=config.num_attention_heads, max_positions=config.max_position_embeddings,
                       vocab_size=config.vocab_size)
    return PretrainedEncoder(model.eval(), info)


def save_tokenizer(tokenizer: SubwordTokenizer, folder: Path) -> Path:
    """Write tokenizer.json (what serving loads) into `folder`."""
    path = folder / TOKENIZER_FILE
    tokenizer.tokenizer.save(str(path))
    return path


class HiddenStage(nn.Module):
    """ONNX: token_ids (B, T) -> hidden (B, T, H): the plain encoder, for tasks that put their heads elsewhere."""

    def __init__(self, encoder: PretrainedEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(token_ids)[0]


def dynamic_axes(max_tokens: int) -> tuple[torch.export.Dim, torch.export.Dim]:
    """The batch and sequence dimensions every exported stage shares."""
    return torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=max_tokens)


def export_hidden(encoder: PretrainedEncoder, path: Path) -> float:
    """Export HiddenStage with dynamic batch and sequence axes (single file); returns the largest
    |onnxruntime - PyTorch| over the real tokens of a padded batch other than the one traced."""
    import numpy as np
    import onnxruntime as ort

    batch, seq = dynamic_axes(encoder.info.max_positions)
    ids = torch.randint(5, encoder.info.vocab_size, (3, 17))
    ids[1, 12:] = 0
    stage = HiddenStage(encoder).eval()
    torch.onnx.export(stage, (ids,), path, dynamo=True, external_data=False, input_names=["token_ids"],
                      output_names=["hidden"], dynamic_shapes={"token_ids": {0: batch, 1: seq}}, verbose=False)
    check = torch.randint(5, encoder.info.vocab_size, (2, 9))
    check[0, 6:] = 0
    with torch.no_grad():
        expected = stage(check).numpy()
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"token_ids": check.numpy()})
    return float(np.abs(got - expected)[(check != 0).numpy()].max())
