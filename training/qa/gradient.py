"""The /qa reader's answer score and its Integrated-Gradients terms, exported to ONNX (runs without PyTorch).

The score is log P(start) + log P(end) of the answer span: the pointers are sigmoids, so each term is the
log-sigmoid of its logit. The graph takes ids, not embeddings, so that the model folder needs no separate
embedding table: it looks the characters up, walks to the point alpha of the straight path from the baseline
(`baseline_scale` x the embedding of `baseline_id`: 0 for the zero baseline), and returns the score there and
gradient . (x - x') per character, the quantity IG integrates over alpha. The "this passage character is in
the question" feature and the masks come from the ids and stay fixed along the path.

Graph inputs:  question_ids (B, Q) i64, passage_ids (B, T) i64, span (B, 2) i64 [start, end] (end inclusive),
               alpha (B,) f32, baseline_id (B,) i64, baseline_scale (B,) f32
Graph outputs: score (B,) f32, question_terms (B, Q) f32, passage_terms (B, T) f32
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from training.common.gradient import export_traced, with_matmul_linears
from training.qa.model import DGCNNReader

INPUTS = ["question_ids", "passage_ids", "span", "alpha", "baseline_id", "baseline_scale"]
OUTPUTS = ["score", "question_terms", "passage_terms"]


class AnswerScore(nn.Module):
    """log P(start) + log P(end) of a span, from the characters' embeddings."""

    def __init__(self, net: DGCNNReader):
        super().__init__()
        self.net = with_matmul_linears(net).eval()

    def forward(self, q_embedded, p_embedded, q_mask, p_mask, in_question, span):
        logits = self.net.from_embeddings(q_embedded, p_embedded, q_mask, p_mask, in_question)  # (B, T, 2)
        B, T, _ = logits.shape
        span = span.clamp(0, T - 1)  # the graph is also served raw (/v2): an index past the passage is no crash
        # A gather on flattened logits: slicing ([..., 0]) would trace to as_strided_scatter, which ONNX lacks.
        start, end = torch.gather(logits.reshape(B, T * 2), 1, span * 2 + torch.tensor([0, 1])).unbind(1)
        return F.logsigmoid(start) + F.logsigmoid(end)


def ig_terms(net: DGCNNReader):
    """(question_ids, passage_ids, span, alpha, baseline_id, baseline_scale) -> (score, question_terms,
    passage_terms) at the path point alpha; rows are independent, so the gradient of the summed score is
    every row's own gradient."""
    score = AnswerScore(net)
    table = net.embed.weight

    def summed(q_point, p_point, q_mask, p_mask, in_question, span):
        rows = score(q_point, p_point, q_mask, p_mask, in_question, span)
        return rows.sum(), rows

    grad = torch.func.grad(summed, argnums=(0, 1), has_aux=True)

    def terms(question_ids, passage_ids, span, alpha, baseline_id, baseline_scale):
        q_mask, p_mask, in_question = DGCNNReader.id_features(question_ids, passage_ids)
        xq, xp = F.embedding(question_ids, table), F.embedding(passage_ids, table)
        base = (F.embedding(baseline_id, table) * baseline_scale[:, None])[:, None]  # (B, 1, H)
        a = alpha[:, None, None]
        (gq, gp), rows = grad(base + a * (xq - base), base + a * (xp - base), q_mask, p_mask, in_question, span)
        return rows, (gq * (xq - base)).sum(-1), (gp * (xp - base)).sum(-1)

    return terms


def example_inputs(net: DGCNNReader, batch: int = 3, length: int = 17):
    g = torch.Generator().manual_seed(0)
    q = torch.randint(5, net.config.vocab_size, (batch, net.config.question_length), generator=g)
    q[:, 10:] = 0  # padded questions, as served
    p = torch.randint(5, net.config.vocab_size, (batch, length), generator=g)
    p[0, 3:6] = q[0, :3]  # some passage characters in the question
    span = torch.tensor([[1, 3], [0, 0], [5, 9]])[:batch]
    alpha = torch.tensor([0.0, 0.5, 1.0])[:batch]
    baseline_id = torch.tensor([0, 0, 1])[:batch]
    baseline_scale = torch.tensor([0.0, 1.0, 1.0])[:batch]
    return q, p, span, alpha, baseline_id, baseline_scale


def export_gradient(net: DGCNNReader, path: Path) -> None:
    net = net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if net.config.pretrained_dim:
        raise ValueError("fold the pretrained table first (training.common.export.fold_pretrained)")
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=net.config.max_len)
    dynamic = ({0: batch}, {0: batch, 1: seq}, {0: batch}, {0: batch}, {0: batch}, {0: batch})
    export_traced(ig_terms(net), example_inputs(net), path, INPUTS, OUTPUTS, dynamic)


def gradient_stage_spec(question_length: int, vocab_size: int, max_len: int) -> dict:
    f32, i64 = "float32", "int64"
    return {"file": "gradient.onnx", "max_length": max_len,
            "inputs": {"question_ids": {"dtype": i64, "shape": ["batch", question_length], "bound": vocab_size},
                       "passage_ids": {"dtype": i64, "shape": ["batch", "seq"], "bound": vocab_size},
                       "span": {"dtype": i64, "shape": ["batch", 2]},
                       "alpha": {"dtype": f32, "shape": ["batch"]},
                       "baseline_id": {"dtype": i64, "shape": ["batch"], "bound": vocab_size},
                       "baseline_scale": {"dtype": f32, "shape": ["batch"]}},
            "outputs": {"score": {"dtype": f32, "shape": ["batch"]},
                        "question_terms": {"dtype": f32, "shape": ["batch", question_length]},
                        "passage_terms": {"dtype": f32, "shape": ["batch", "seq"]}},
            # All interpolation steps of a request are one batch: let it through whole.
            "batching": {"max_batch_size": 256, "max_batch_tokens": 65536}}
