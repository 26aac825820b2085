"""Integrated Gradients (Sundararajan et al. 2017) over a model's character embeddings, in numpy,
with the score and its gradient from the model's exported gradient graph (no PyTorch).

attribution_i = sum_h (x - x')_ih * integral_0^1 dF(x' + a (x - x')) / dx_ih da, which sums to
F(x) - F(x') (completeness); the integral is a quadrature whose nodes all go through the batcher as
one batch of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.runtime.errors import InvalidInput

METHODS = ("trapezoid", "gauss-legendre")


def checked_steps(steps: int | None, method: str, default_steps: int, max_steps: int) -> int:
    """The number of interpolation steps a request asks for (its default when None), with its method checked."""
    steps = default_steps if steps is None else steps
    if not 1 <= steps <= max_steps:
        raise InvalidInput(f"steps: {steps} is outside 1..{max_steps}")
    if method not in METHODS:
        raise InvalidInput(f"method: {method!r} is not one of {', '.join(METHODS)}")
    return steps


def quadrature(steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes a in [0, 1] and weights; 0 and 1 are always among the nodes (weight 0 where the rule
    does not use them) so that F(x') and F(x) come from the same batch."""
    if method == "trapezoid":
        alphas = np.linspace(0.0, 1.0, steps + 1)
        weights = np.full(steps + 1, 1.0 / steps)
        weights[[0, -1]] /= 2
        return alphas, weights
    if method == "gauss-legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return np.concatenate([[0.0], (x + 1) / 2, [1.0]]), np.concatenate([[0.0], w / 2, [0.0]])
    raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")


@dataclass
class Attribution:
    attributions: np.ndarray  # (T,) signed, summed over embedding dimensions
    score: float  # F(x)
    baseline_score: float  # F(x')

    @property
    def delta(self) -> float:
        """Completeness error: sum of attributions minus F(x) - F(x')."""
        return float(self.attributions.sum() - (self.score - self.baseline_score))

    @property
    def normalized(self) -> np.ndarray:
        """Attributions scaled into [-1, 1] by the largest magnitude."""
        top = np.abs(self.attributions).max()
        return self.attributions / top if top > 0 else self.attributions


def interpolate(inputs: np.ndarray, baseline: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """(T, H) input and baseline -> (K, T, H) points along the straight path."""
    return (baseline[None] + alphas[:, None, None] * (inputs - baseline)[None]).astype(np.float32)


def integrate(inputs: np.ndarray, baseline: np.ndarray, weights: np.ndarray, gradients: np.ndarray,
              scores: np.ndarray) -> Attribution:
    """gradients (K, T, H) and scores (K,) at the nodes -> per-character attributions."""
    path_gradient = np.tensordot(weights, gradients.astype(np.float64), axes=1)  # (T, H)
    per_dim = (inputs - baseline).astype(np.float64) * path_gradient
    return Attribution(per_dim.sum(axis=1), float(scores[-1]), float(scores[0]))
