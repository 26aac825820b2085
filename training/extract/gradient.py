"""The /extract model's target score and its gradient with respect to the character embeddings,
exported to ONNX so that Integrated Gradients runs in onnxruntime, without PyTorch.

torch.onnx.export cannot export torch.autograd.grad inside forward. The route that works (see
DESIGN.md): trace torch.func.grad with make_fx (symbolic shapes), export that graph with the dynamo
exporter, and translate aten.convolution_backward (only the input gradient is needed) as ConvTranspose.
It rests on private torch APIs: tests/test_explain.py compares the result with autograd.

Graph inputs:  embeddings (B, T, H) f32, mask (B, T) f32, subject (B, 2) i64, object (B, 2) i64,
               label (B,) i64, use_object (B,) f32
Graph outputs: score (B,) f32, gradient (B, T, H) f32
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from training.common.gradient import export_traced, with_matmul_linears
from training.extract.model import DGCNNExtractor

# The extractors this works for (DGCNNExtractor, bert_model.BertExtractor) share one interface; BERT's linears,
# layer norms and attention trace through the same route (no convolution there).


class TripleScore(nn.Module):
    """log P(subject start) + log P(subject end) [+ log P(object start | s, label) + log P(object end | s, label)],
    the pointer log-probabilities the probabilistic graph multiplies into a triple's score."""

    def __init__(self, net: DGCNNExtractor):
        super().__init__()
        self.net = with_matmul_linears(net).eval()

    def forward(self, embeddings, mask, subject, obj, label, use_object):
        net = self.net
        hidden = net.encode_embeddings(embeddings, mask)
        s_logits = net.subject_logits(hidden, mask)  # (B, T, 2)
        o_logits = net.object_logits(hidden, mask, subject)  # (B, T, C, 2)
        B, T, C, _ = o_logits.shape
        # Gathers on flattened logits: slicing ([..., 0]) would trace to as_strided_scatter, which ONNX lacks.
        s_flat, o_flat = s_logits.reshape(B, T * 2), o_logits.reshape(B, T * C * 2)
        s_start, s_end = torch.gather(s_flat, 1, subject * 2 + torch.tensor([0, 1])).unbind(1)
        o_index = (obj * C + label[:, None]) * 2 + torch.tensor([0, 1])
        o_start, o_end = torch.gather(o_flat, 1, o_index).unbind(1)
        subject_score = F.logsigmoid(s_start) + F.logsigmoid(s_end)
        return subject_score + use_object * (F.logsigmoid(o_start) + F.logsigmoid(o_end))


def gradient_function(score: TripleScore):
    """(embeddings, ...) -> (score per row, d score / d embeddings): rows are independent, so the
    gradient of the summed score is every row's own gradient."""

    def summed(embeddings, mask, subject, obj, label, use_object):
        rows = score(embeddings, mask, subject, obj, label, use_object)
        return rows.sum(), rows

    grad = torch.func.grad(summed, has_aux=True)

    def both(embeddings, mask, subject, obj, label, use_object):
        gradient, rows = grad(embeddings, mask, subject, obj, label, use_object)
        return rows, gradient

    return both


def embedding_size(net) -> int:
    """E: the width of the embeddings the graph takes (the DGCNN's hidden size; ALBERT's is smaller than H)."""
    with torch.no_grad():
        return net.embeddings(torch.zeros(1, 1, dtype=torch.long)).shape[-1]


def example_inputs(net: DGCNNExtractor, batch: int = 3, length: int = 17):
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(batch, length, embedding_size(net), generator=g) * 0.1
    mask = torch.ones(batch, length)
    subject = torch.tensor([[1, 3], [0, 0], [5, 9]])[:batch]
    obj = torch.tensor([[6, 8], [2, 4], [0, 1]])[:batch]
    label = torch.tensor([0, 1, 2])[:batch]
    use_object = torch.tensor([1.0, 1.0, 0.0])[:batch]
    return embeddings, mask, subject, obj, label, use_object


def export_gradient(net: DGCNNExtractor, path: Path) -> None:
    net = net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=net.config.max_len)
    names = ["embeddings", "mask", "subject", "object", "label", "use_object"]
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch}, {0: batch}, {0: batch}, {0: batch})
    export_traced(gradient_function(TripleScore(net)), example_inputs(net), path, names, ["score", "gradient"],
                  dynamic)


def gradient_stage_spec(hidden: int, num_labels: int, max_len: int) -> dict:
    """`hidden`: the embedding width E the graph takes and gives gradients for."""
    f32, i64 = "float32", "int64"
    return {"file": "gradient.onnx", "max_length": max_len,
            "inputs": {"embeddings": {"dtype": f32, "shape": ["batch", "seq", hidden]},
                       "mask": {"dtype": f32, "shape": ["batch", "seq"]},
                       "subject": {"dtype": i64, "shape": ["batch", 2], "bound": "seq"},
                       "object": {"dtype": i64, "shape": ["batch", 2], "bound": "seq"},
                       "label": {"dtype": i64, "shape": ["batch"], "bound": num_labels},
                       "use_object": {"dtype": f32, "shape": ["batch"]}},
            "outputs": {"score": {"dtype": f32, "shape": ["batch"]},
                        "gradient": {"dtype": f32, "shape": ["batch", "seq", hidden]}},
            # All interpolation steps of a request are one batch: let it through whole.
            "batching": {"max_batch_size": 256, "max_batch_tokens": 65536}}


def export_gradient_stage(net: DGCNNExtractor, out_dir: Path) -> dict:
    """gradient.onnx + embeddings.npy (the character table IG interpolates in) into a version folder."""
    import numpy as np

    export_gradient(net, out_dir / "gradient.onnx")
    with torch.no_grad():
        table = net.embeddings(torch.arange(net.config.vocab_size)[None])[0].numpy()
    np.save(out_dir / "embeddings.npy", table.astype(np.float16))  # the checkpoint's weights are fp16 already
    return gradient_stage_spec(table.shape[1], net.config.num_labels, net.config.max_len)
