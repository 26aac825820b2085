"""DGCNN relation extractor in one file (after the 2019 LIC information-extraction entry).

characters -> embeddings (+ learned positions) -> 12 residual gated dilated 1-D convolutions
-> self-attention -> subject start/end pointers (sigmoid).
For one subject: its start and end vectors and every character's distance to them condition a
second head that gives, for every object label (predicate, slot), object start/end pointers.
P(s, p, o) = P(s) * P(o, p | s): the "half-pointer, half-tagging" probabilistic graph.

Shapes: B batch, T characters, H hidden size, C object labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from training.common.layers import GatedDilatedConv


@dataclass
class DGCNNConfig:
    vocab_size: int
    num_labels: int
    hidden: int = 128
    dilations: list[int] = field(default_factory=lambda: [1, 2, 5, 1, 2, 5, 1, 2, 5, 1, 1, 1])
    kernel_size: int = 3
    heads: int = 8
    max_len: int = 512
    max_distance: int = 64  # relative positions to the subject are clipped to +-max_distance
    dropout: float = 0.25
    pretrained_dim: int = 0  # >0: a frozen pretrained character table, projected and added to the embeddings

    def to_dict(self) -> dict:
        return asdict(self)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention over the unmasked characters."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (H // self.heads) ** 0.5  # (B, heads, T, T)
        scores = scores + (1.0 - mask.view(B, 1, 1, T)) * -1e4
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H)
        return self.out(y)


class DGCNNExtractor(nn.Module):
    def __init__(self, config: DGCNNConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.hidden, padding_idx=0)
        if c.pretrained_dim:
            # As in the 2019 entry: trainable random character embeddings plus frozen pretrained
            # vectors through a learned projection (zero at first, so training starts as without them).
            self.pretrained = nn.Embedding(c.vocab_size, c.pretrained_dim, padding_idx=0)
            self.pretrained.weight.requires_grad_(False)
            self.pretrained_proj = nn.Linear(c.pretrained_dim, c.hidden, bias=False)
            nn.init.zeros_(self.pretrained_proj.weight)
        self.position = nn.Embedding(c.max_len, c.hidden)
        self.convs = nn.ModuleList(GatedDilatedConv(c.hidden, c.kernel_size, d) for d in c.dilations)
        self.subject_attention = SelfAttention(c.hidden, c.heads)
        self.subject_conv = nn.Conv1d(2 * c.hidden, c.hidden, 3, padding=1)
        self.subject_head = nn.Linear(c.hidden, 2)
        self.distance = nn.Embedding(2 * c.max_distance + 1, c.hidden)
        self.object_attention = SelfAttention(c.hidden, c.heads)
        self.object_conv = nn.Conv1d(6 * c.hidden, c.hidden, 3, padding=1)
        self.object_head = nn.Linear(c.hidden, 2 * c.num_labels)
        # Positions and distances start small so that they do not drown the character vectors.
        nn.init.normal_(self.position.weight, std=0.02)
        nn.init.normal_(self.distance.weight, std=0.02)
        # Pointers are rare: start every probability near 0.02, not 0.5, so early decoding stays small.
        nn.init.constant_(self.subject_head.bias, -4.0)
        nn.init.constant_(self.object_head.bias, -4.0)

    def embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> character embeddings (B, T, H): what Integrated Gradients attributes to."""
        x = self.embed(token_ids)
        if self.config.pretrained_dim:
            x = x + self.pretrained_proj(self.pretrained(token_ids))
        return x

    def encode(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> hidden (B, T, H) and mask (B, T) as floats."""
        mask = (token_ids > 0).float()
        return self.encode_embeddings(self.embeddings(token_ids), mask), mask

    def encode_embeddings(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Character embeddings (B, T, H) and mask (B, T) -> hidden (B, T, H)."""
        positions = torch.arange(embeddings.shape[1], device=embeddings.device).clamp(max=self.config.max_len - 1)
        x = embeddings + self.position(positions)[None]
        x = F.dropout(x, self.config.dropout, self.training) * mask[..., None]
        for conv in self.convs:
            x = conv(x, mask[..., None])
        return x

    def subject_logits(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-> (B, T, 2): start and end logits of subjects."""
        # Zero the padding before the kernel-3 conv, or a text's last characters would see its neighbours'
        # padding and scores would depend on what the text was batched with.
        h = torch.cat([hidden, self.subject_attention(hidden, mask)], dim=-1) * mask[..., None]
        h = F.relu(self.subject_conv(h.transpose(1, 2)).transpose(1, 2))
        return self.subject_head(h)

    def object_logits(self, hidden: torch.Tensor, mask: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """subject (B, 2) inclusive [start, end] -> (B, T, C, 2): object start/end logits per label."""
        B, T, H = hidden.shape
        pooled = (hidden - (1.0 - mask[..., None]) * 1e4).amax(dim=1)  # (B, H) max over characters
        index = subject.clamp(min=0, max=T - 1)
        ends = torch.gather(hidden, 1, index[..., None].expand(B, 2, H))  # (B, 2, H)
        positions = torch.arange(T, device=hidden.device)[None, :, None] - subject[:, None, :]  # (B, T, 2)
        d = self.config.max_distance
        distance = self.distance(positions.clamp(-d, d) + d).sum(dim=2)  # (B, T, H)
        context = torch.cat([pooled[:, None], ends.reshape(B, 1, 2 * H)], dim=-1).expand(B, T, 3 * H)
        h = torch.cat([hidden, self.object_attention(hidden + distance, mask), context, distance], dim=-1)
        h = h * mask[..., None]  # as in subject_logits: padding must not reach the conv
        h = F.relu(self.object_conv(h.transpose(1, 2)).transpose(1, 2))
        return self.object_head(h).view(B, T, self.config.num_labels, 2)

    def forward(self, token_ids: torch.Tensor, subject: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, mask = self.encode(token_ids)
        return self.subject_logits(hidden, mask), self.object_logits(hidden, mask, subject)


class SubjectStage(nn.Module):
    """ONNX stage 1: token ids -> subject probabilities and the hidden states stage 2 needs."""

    def __init__(self, net: DGCNNExtractor):
        super().__init__()
        self.net = net

    def forward(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, mask = self.net.encode(token_ids)
        return torch.sigmoid(self.net.subject_logits(hidden, mask)), hidden


class ObjectStage(nn.Module):
    """ONNX stage 2: hidden states + one subject span per row -> object probabilities."""

    def __init__(self, net: DGCNNExtractor):
        super().__init__()
        self.net = net

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net.object_logits(hidden, mask, subject))
