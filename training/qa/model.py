"""DGCNN reading-comprehension model in one file (after the 2019 DGCNN entries for WebQA/SogouQA).

question -> embeddings -> gated dilated convs -> attention pooling: one question vector.
passage window -> embeddings + the question vector + "this character is in the question"
-> gated dilated convs -> attention over the question's characters -> more convs
-> sigmoid start/end pointers. A window without the answer should give low pointers everywhere:
the best span's score doubles as the "no answer" signal and is comparable across passages (voting).

Shapes: B batch, Q question characters (fixed, padded), T passage characters, H hidden size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from training.common.layers import GatedDilatedConv


@dataclass
class ReaderConfig:
    vocab_size: int
    hidden: int = 128
    question_length: int = 64  # questions are padded (or refused) to this many characters
    question_dilations: list[int] = field(default_factory=lambda: [1, 2, 1])
    dilations: list[int] = field(default_factory=lambda: [1, 2, 5, 1, 2, 5])
    top_dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 1])
    kernel_size: int = 3
    max_len: int = 512
    dropout: float = 0.2
    pretrained_dim: int = 0  # >0: a frozen pretrained character table, projected and added

    def to_dict(self) -> dict:
        return asdict(self)


class DGCNNReader(nn.Module):
    def __init__(self, config: ReaderConfig):
        super().__init__()
        c = self.config = config
        H = c.hidden
        self.embed = nn.Embedding(c.vocab_size, H, padding_idx=0)
        if c.pretrained_dim:
            self.pretrained = nn.Embedding(c.vocab_size, c.pretrained_dim, padding_idx=0)
            self.pretrained.weight.requires_grad_(False)
            self.pretrained_proj = nn.Linear(c.pretrained_dim, H, bias=False)
            nn.init.zeros_(self.pretrained_proj.weight)
        self.position = nn.Embedding(c.max_len, H)
        nn.init.normal_(self.position.weight, std=0.02)
        self.question_convs = nn.ModuleList(GatedDilatedConv(H, c.kernel_size, d) for d in c.question_dilations)
        self.question_pool = nn.Linear(H, 1)
        self.fuse = nn.Linear(2 * H + 1, H)
        self.convs = nn.ModuleList(GatedDilatedConv(H, c.kernel_size, d) for d in c.dilations)
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.fuse_attention = nn.Linear(3 * H, H)
        self.top_convs = nn.ModuleList(GatedDilatedConv(H, c.kernel_size, d) for d in c.top_dilations)
        self.pointer = nn.Linear(H, 2)
        nn.init.constant_(self.pointer.bias, -4.0)  # pointers are rare: start near 0.02

    def embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        if self.config.pretrained_dim:
            x = x + self.pretrained_proj(self.pretrained(ids))
        return x

    def _convs(self, x: torch.Tensor, mask: torch.Tensor, convs: nn.ModuleList) -> torch.Tensor:
        for conv in convs:
            x = conv(x, mask[..., None])
        return x

    def forward(self, question_ids: torch.Tensor, passage_ids: torch.Tensor) -> torch.Tensor:
        """-> (B, T, 2) start and end logits."""
        return self.from_embeddings(self.embeddings(question_ids), self.embeddings(passage_ids),
                                    *self.id_features(question_ids, passage_ids))

    @staticmethod
    def id_features(question_ids: torch.Tensor, passage_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the net reads from the ids besides their embeddings: the masks (B, Q), (B, T) and
        "this passage character is in the question" (B, T)."""
        q_mask, p_mask = (question_ids > 0).float(), (passage_ids > 0).float()
        in_question = ((passage_ids[:, :, None] == question_ids[:, None, :]).float() * q_mask[:, None, :]).amax(-1)
        return q_mask, p_mask, in_question

    def from_embeddings(self, q_embedded: torch.Tensor, p_embedded: torch.Tensor, q_mask: torch.Tensor,
                        p_mask: torch.Tensor, in_question: torch.Tensor) -> torch.Tensor:
        """Character embeddings (B, Q, H), (B, T, H) and the id features -> (B, T, 2) start and end logits
        (the entry point of the /explain gradient graph)."""
        drop = lambda x: F.dropout(x, self.config.dropout, self.training)  # noqa: E731
        Q, T = q_embedded.shape[1], p_embedded.shape[1]
        positions = self.position(torch.arange(max(Q, T), device=p_embedded.device).clamp(max=self.config.max_len - 1))

        q = drop(q_embedded + positions[None, :Q]) * q_mask[..., None]
        q = self._convs(q, q_mask, self.question_convs)
        weights = (self.question_pool(q).squeeze(-1) - (1.0 - q_mask) * 1e4).softmax(-1)  # (B, Q)
        q_vec = (weights[..., None] * q).sum(1)  # (B, H)

        p = p_embedded + positions[None, :T]
        p = torch.cat([p, q_vec[:, None].expand_as(p), in_question[..., None]], dim=-1)
        p = drop(self.fuse(p)) * p_mask[..., None]
        p = self._convs(p, p_mask, self.convs)

        # Each passage character reads the question characters most like it.
        scores = self.query(p) @ self.key(q).transpose(1, 2) / p.shape[-1] ** 0.5  # (B, T, Q)
        attended = (scores - (1.0 - q_mask[:, None, :]) * 1e4).softmax(-1) @ q  # (B, T, H)
        p = self.fuse_attention(torch.cat([p, attended, p * q_vec[:, None]], dim=-1)) * p_mask[..., None]
        p = self._convs(p, p_mask, self.top_convs)
        return self.pointer(p)


class ReaderStage(nn.Module):
    """The ONNX graph: question ids (B, Q) and passage window ids (B, T) -> pointer probabilities (B, T, 2)."""

    def __init__(self, net: DGCNNReader):
        super().__init__()
        self.net = net

    def forward(self, question_ids: torch.Tensor, passage_ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(question_ids, passage_ids))
