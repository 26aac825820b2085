"""A pretrained encoder (`--encoder DIR`) under the same probabilistic-graph heads as the DGCNN extractor,
after bert4keras' relation-extraction example (examples/task_relation_extraction.py):

word pieces -> encoder hidden states -> subject start/end pointers (sigmoid);
for one subject: its start and end vectors condition a layer normalisation of every token's hidden state
(gamma and beta shifted by learned, zero-initialised projections of [h_start; h_end]), then, for every object
label (predicate, slot), object start/end pointers.

Same interface as DGCNNExtractor (embeddings, encode, encode_embeddings, subject_logits, object_logits), so the
ONNX stages (model.SubjectStage, model.ObjectStage), the gradient graph (gradient.py), training, evaluation
and serving are shared. Shapes: B batch, T tokens, E input-embedding size, H hidden size, C object labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.common.encoder import PretrainedEncoder, build_encoder, load_encoder


@dataclass
class BertExtractorConfig:
    encoder: dict  # the encoder's Hugging Face config (config.json): rebuilds the net without the folder
    num_labels: int
    max_len: int  # tokens a row may hold ([CLS] and [SEP] included): the encoder's position table
    source: str = ""  # the --encoder folder it was fine-tuned from (provenance only)

    @property
    def hidden(self) -> int:
        return self.encoder["hidden_size"]

    @property
    def vocab_size(self) -> int:
        return self.encoder["vocab_size"]

    def to_dict(self) -> dict:
        return asdict(self)


class ConditionalLayerNorm(nn.Module):
    """LayerNorm whose gain and bias depend on a condition vector (bert4keras LayerNormalization(conditional=True));
    the condition's projections start at zero, so training starts from a plain LayerNorm."""

    def __init__(self, hidden: int, condition: int, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        self.weight, self.bias = nn.Parameter(torch.ones(hidden)), nn.Parameter(torch.zeros(hidden))
        self.to_weight = nn.Linear(condition, hidden, bias=False)
        self.to_bias = nn.Linear(condition, hidden, bias=False)
        nn.init.zeros_(self.to_weight.weight)
        nn.init.zeros_(self.to_bias.weight)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """x (B, T, H), condition (B, K) -> (B, T, H)."""
        mean = x.mean(-1, keepdim=True)
        centred = x - mean
        normed = centred / torch.sqrt((centred * centred).mean(-1, keepdim=True) + self.eps)
        gain = self.weight + self.to_weight(condition)[:, None]
        return normed * gain + (self.bias + self.to_bias(condition)[:, None])


class BertExtractor(nn.Module):
    def __init__(self, config: BertExtractorConfig, encoder: PretrainedEncoder | None = None):
        super().__init__()
        c = self.config = config
        self.encoder = encoder if encoder is not None else build_encoder(c.encoder)
        self.subject_head = nn.Linear(c.hidden, 2)
        self.object_norm = ConditionalLayerNorm(c.hidden, 2 * c.hidden)
        self.object_head = nn.Linear(c.hidden, 2 * c.num_labels)
        # Pointers are rare: start every probability near 0.02, not 0.5 (as in the DGCNN).
        nn.init.constant_(self.subject_head.bias, -4.0)
        nn.init.constant_(self.object_head.bias, -4.0)

    @classmethod
    def from_pretrained(cls, folder: str, num_labels: int) -> tuple[BertExtractor, object]:
        """(net with the folder's pretrained encoder and fresh heads, its SubwordTokenizer)."""
        encoder, tokenizer, _ = load_encoder(folder)
        config = BertExtractorConfig(encoder.model.config.to_dict(), num_labels, encoder.info.max_positions,
                                     source=str(folder))
        return cls(config, encoder), tokenizer

    @property
    def max_tokens(self) -> int:
        """The longest row the encoder takes: its position table (the DGCNN has no such limit)."""
        return self.config.max_len

    def embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, E) input embeddings: what Integrated Gradients attributes to."""
        return self.encoder.embeddings(token_ids)

    def encode(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> hidden (B, T, H) and mask (B, T) as floats."""
        return self.encoder.encode(token_ids)

    def encode_embeddings(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(embeddings, mask)

    def subject_logits(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-> (B, T, 2): start and end logits of subjects."""
        return self.subject_head(hidden)

    def object_logits(self, hidden: torch.Tensor, mask: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """subject (B, 2) inclusive token [start, end] -> (B, T, C, 2): object start/end logits per label."""
        B, T, H = hidden.shape
        index = subject.clamp(min=0, max=T - 1)
        ends = torch.gather(hidden, 1, index[..., None].expand(B, 2, H)).reshape(B, 2 * H)  # [h_start; h_end]
        return self.object_head(self.object_norm(hidden, ends)).view(B, T, self.config.num_labels, 2)

    def forward(self, token_ids: torch.Tensor, subject: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, mask = self.encode(token_ids)
        return self.subject_logits(hidden, mask), self.object_logits(hidden, mask, subject)
