"""Layers the DGCNN extractor and reader share."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GatedDilatedConv(nn.Module):
    """Residual gated convolution: x <- x * (1 - g) + conv(x) * g, g = sigmoid(gate)."""

    def __init__(self, hidden: int, kernel_size: int, dilation: int, gate_dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Conv1d(hidden, 2 * hidden, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)
        self.gate_dropout = gate_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, H), mask: (B, T, 1)
        h, g = self.conv(x.transpose(1, 2)).transpose(1, 2).chunk(2, dim=-1)
        g = torch.sigmoid(F.dropout(g, self.gate_dropout, self.training))
        return (x * (1 - g) + h * g) * mask
