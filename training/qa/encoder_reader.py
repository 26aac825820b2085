"""The reader on a user's pretrained encoder (`zhserve train qa --encoder DIR`): span extraction over
[CLS] question [SEP] passage window [SEP] (app/tasks/qa/pairs.py builds the rows for training and serving).

The head is the DGCNN reader's: independent sigmoid start/end pointers per token, so a window without
the answer learns low pointers everywhere, the best span's score is the "no answer" signal and scores
compare across windows and passages (voting), exactly as app/tasks/qa/decode.py expects.

Shapes: B batch, T tokens (question and window), H the encoder's hidden size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.tasks.qa import pairs
from app.tasks.qa.decode import Candidate, vote, windows
from app.text.subword import SubwordTokenizer
from training.common.device import device_of, to_device
from training.qa.data import Question


@dataclass
class EncoderReaderConfig:
    encoder: dict  # EncoderInfo (training/common/encoder.py): what model.json records
    encoder_config: dict  # the transformers config, to rebuild the net from a checkpoint alone
    question_tokens: int  # [CLS] question [SEP], at most
    max_tokens: int  # a whole row, at most (the encoder's position table)

    def to_dict(self) -> dict:
        return asdict(self)


class EncoderReader(nn.Module):
    def __init__(self, model: nn.Module, config: EncoderReaderConfig):
        super().__init__()
        self.model, self.config = model, config
        self.pointer = nn.Linear(model.config.hidden_size, 2)
        nn.init.normal_(self.pointer.weight, std=0.02)
        nn.init.constant_(self.pointer.bias, -4.0)  # pointers are rare: start near 0.02

    def forward(self, token_ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and token types -> (B, T, 2) start and end logits. The mask goes in 4-D and boolean,
        as in training/common/encoder.py, so that the graph exports with dynamic axes."""
        T = token_ids.shape[1]
        attention = (token_ids != 0)[:, None, None, :].expand(-1, 1, T, -1)
        hidden = self.model(input_ids=token_ids, attention_mask=attention, token_type_ids=type_ids).last_hidden_state
        return self.pointer(hidden)


class EncoderReaderStage(nn.Module):
    """The ONNX graph: token_ids and type_ids (B, T) -> pointer probabilities (B, T, 2)."""

    def __init__(self, net: EncoderReader):
        super().__init__()
        self.net = net

    def forward(self, token_ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(token_ids, type_ids))


def build(folder: str | Path, question_tokens: int) -> tuple[EncoderReader, SubwordTokenizer]:
    """A fresh reader on the encoder in `folder` (EncoderError if it cannot serve)."""
    from training.common.encoder import load_encoder

    encoder, tokenizer, _ = load_encoder(folder)
    model = encoder.model
    config = EncoderReaderConfig(encoder.info.to_dict(), model.config.to_dict(), question_tokens,
                                 encoder.info.max_positions)
    return EncoderReader(model, config), tokenizer


def from_checkpoint(config: dict) -> EncoderReader:
    """An EncoderReader of `config` (weights not loaded), without the original folder."""
    from transformers import AutoConfig, AutoModel

    cfg = EncoderReaderConfig(**config)
    hf = dict(cfg.encoder_config)
    hf_config = AutoConfig.for_model(hf.pop("model_type"), **hf)
    hf_config._attn_implementation = "eager"
    model = AutoModel.from_config(hf_config)
    if hasattr(model, "pooler"):
        model.pooler = None
    return EncoderReader(model, cfg)


def batch_arrays(rows: list[pairs.PairRow]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r.token_ids) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    types = np.zeros((len(rows), width), np.int64)
    for b, r in enumerate(rows):
        ids[b, : len(r.token_ids)], types[b, : len(r.type_ids)] = r.token_ids, r.type_ids
    return torch.from_numpy(ids), torch.from_numpy(types)


def training_batch(chosen: list[tuple[str, str, list[tuple[int, int]]]], tokenizer: SubwordTokenizer,
                   config: EncoderReaderConfig):
    """(question, window text, answer spans in the window) per row -> ids, types and (B, T, 2) targets on the
    tokens that hold each answer's first and last character."""
    rows = [pairs.pair_row(pairs.question_ids(tokenizer, q, config.question_tokens), e, config.max_tokens)
            for (q, _, _), e in zip(chosen, tokenizer.encode_batch([t for _, t, _ in chosen]), strict=True)]
    ids, types = batch_arrays(rows)
    target = torch.zeros(ids.shape + (2,))
    for b, ((_, _, spans), row) in enumerate(zip(chosen, rows, strict=True)):
        for s, e in spans:
            if (held := pairs.covering_tokens(row.offsets, s, e)) is not None:
                target[b, held[0], 0] = target[b, held[1], 1] = 1
    return ids, types, target


class EncoderTorchReader:
    """Runs an EncoderReader over questions' passage windows in batches; decodes as serving does."""

    def __init__(self, net: EncoderReader, tokenizer: SubwordTokenizer, window: int, stride: int, max_answer: int,
                 batch_size: int = 32):
        self.net, self.tokenizer = net.eval(), tokenizer
        self.window, self.stride, self.max_answer, self.batch_size = window, stride, max_answer, batch_size

    def candidates(self, questions: list[Question]) -> list[list[Candidate]]:
        c = self.net.config
        jobs = []  # (question index, window, row)
        for k, q in enumerate(questions):
            q_ids = pairs.question_ids(self.tokenizer, q.question, c.question_tokens)
            spans = windows([len(p) for p in q.passages], self.window, self.stride)
            encoded = self.tokenizer.encode_batch([q.passages[w.passage][w.offset : w.offset + w.length]
                                                   for w in spans])
            jobs += [(k, w, pairs.pair_row(q_ids, e, c.max_tokens)) for w, e in zip(spans, encoded, strict=True)]
        jobs.sort(key=lambda j: len(j[2].token_ids))
        found: list[list] = [[] for _ in questions]
        for i in range(0, len(jobs), self.batch_size):
            chunk = jobs[i : i + self.batch_size]
            with torch.no_grad():
                batch = to_device(batch_arrays([r for _, _, r in chunk]), device_of(self.net))
                probs = torch.sigmoid(self.net(*batch)).cpu().numpy()
            for b, (k, w, row) in enumerate(chunk):
                found[k].append((w, pairs.char_probs(probs[b, : len(row.token_ids)], row.offsets, w.length)))
        return [vote(q.passages, f, self.max_answer) for q, f in zip(questions, found, strict=True)]


def export_onnx(net: EncoderReader, path: Path) -> None:
    from training.common.encoder import dynamic_axes

    batch, seq = dynamic_axes(net.config.max_tokens)
    ids = torch.randint(5, net.config.encoder["vocab_size"], (3, 17))
    ids[1, 12:] = 0
    types = torch.zeros_like(ids)
    types[:, 8:] = 1
    torch.onnx.export(EncoderReaderStage(net).eval(), (ids, types), path, dynamo=True, external_data=False,
                      input_names=["token_ids", "type_ids"], output_names=["probs"],
                      dynamic_shapes={"token_ids": {0: batch, 1: seq}, "type_ids": {0: batch, 1: seq}}, verbose=False)


def parity(net: EncoderReader, path: Path, tokenizer: SubwordTokenizer, questions: list[Question],
           window: int) -> float:
    """Largest |onnxruntime - PyTorch| pointer probability over the real tokens of real rows."""
    import onnxruntime as ort

    c = net.config
    rows = [pairs.pair_row(pairs.question_ids(tokenizer, q.question, c.question_tokens),
                           tokenizer.encode(q.passages[0][:window]), c.max_tokens) for q in questions]
    ids, types = batch_arrays(rows)
    with torch.no_grad():
        expected = EncoderReaderStage(net.eval())(ids, types).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"token_ids": ids.numpy(), "type_ids": types.numpy()})
    return float(np.abs(got - expected)[(ids != 0).numpy()].max())
