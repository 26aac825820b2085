"""The UniLM solver split for decoding with a key/value cache, as two ONNX graphs over the same weights.

encoder: the question ([CLS] ... [SEP], type 0, bidirectional) -> the first token's log-probabilities and
         every layer's keys and values of the question.
step:    one new expression token (type 1) at `position`, attending to the cached keys/values (the
         question and the expression so far, `past_mask` marking real entries) and to itself ->
         its log-probabilities and its own keys and values, which the server appends to the cache.

Without a cache every beam step reruns the whole row; with it a step costs one token. Both run the
Hugging Face BertLayer modules' own weights, layer by layer, so they equal the full model (tested).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:  # (B, T, H*d) -> (B, H, T, d)
    b, t, _ = x.shape
    return x.view(b, t, n, -1).transpose(1, 2)


def _layer(layer, x: torch.Tensor, allowed: torch.Tensor, n_heads: int, past_k=None, past_v=None):
    """One BertLayer on x (B, T, H); allowed (B, 1, T, S) over [past; x]. Returns (out, k, v) of x."""
    att = layer.attention.self
    q, k, v = (_heads(f(x), n_heads) for f in (att.query, att.key, att.value))
    keys = k if past_k is None else torch.cat([past_k, k], dim=2)
    values = v if past_v is None else torch.cat([past_v, v], dim=2)
    scores = q @ keys.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    context = (scores.softmax(-1) @ values).transpose(1, 2).reshape(x.shape)
    h = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + x)
    out = layer.output.LayerNorm(layer.output.dense(layer.intermediate(h)) + h)
    return out, k, v


def _embed(bert, ids: torch.Tensor, positions: torch.Tensor, type_id: int) -> torch.Tensor:
    e = bert.embeddings
    types = torch.full_like(ids, type_id)
    return e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(positions) + e.token_type_embeddings(types))


class CachedEncoder(nn.Module):
    """token_ids (B, T) -> log_probs (B, V) after the last real token, keys and values (B, L, H, T, d)."""

    def __init__(self, model, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model.eval(), pad_id
        self.n_heads = model.config.num_attention_heads

    def forward(self, token_ids: torch.Tensor):
        bert = self.model.bert
        valid = token_ids != self.pad_id
        positions = torch.arange(token_ids.shape[1], device=token_ids.device).expand_as(token_ids)
        x = _embed(bert, token_ids, positions, 0)
        allowed = valid[:, None, None, :]
        keys, values = [], []
        for layer in bert.encoder.layer:
            x, k, v = _layer(layer, x, allowed, self.n_heads)
            keys.append(k)
            values.append(v)
        last = valid.sum(1) - 1
        picked = x[torch.arange(token_ids.shape[0]), last]
        log_probs = torch.log_softmax(self.model.cls(picked), dim=-1)
        return log_probs, torch.stack(keys, 1), torch.stack(values, 1)


class CachedStep(nn.Module):
    """token (B,), position (B,), past_keys/past_values (B, L, H, S, d), past_mask (B, S) ->
    log_probs (B, V), key and value (B, L, H, d) of the new token."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        self.n_heads = model.config.num_attention_heads

    def forward(self, token, position, past_keys, past_values, past_mask):
        bert = self.model.bert
        x = _embed(bert, token[:, None], position[:, None], 1)
        itself = torch.ones_like(past_mask[:, :1], dtype=torch.bool)
        allowed = torch.cat([past_mask.bool(), itself], dim=1)[:, None, None, :]
        keys, values = [], []
        for i, layer in enumerate(bert.encoder.layer):
            x, k, v = _layer(layer, x, allowed, self.n_heads, past_keys[:, i], past_values[:, i])
            keys.append(k[:, :, 0])
            values.append(v[:, :, 0])
        log_probs = torch.log_softmax(self.model.cls(x[:, 0]), dim=-1)
        return log_probs, torch.stack(keys, 1), torch.stack(values, 1)
