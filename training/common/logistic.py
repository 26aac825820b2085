"""Logistic and softmax regression by L-BFGS, for the small decision rules fitted on top of the models
(the segmentation gap rule, the math answer reranker, the /parse word tagger)."""

from __future__ import annotations

import numpy as np


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-4) -> np.ndarray:
    """Weights of a logistic regression (column 0 the bias) by L-BFGS on the mean log-loss. The features are
    standardised while fitting, so one penalty suits them all; the weights returned apply to raw features."""
    from scipy.optimize import minimize

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    mean[0], scale[0] = 0.0, 1.0
    z = (x - mean) / scale
    penalised = np.r_[0.0, np.ones(x.shape[1] - 1)]

    def loss(w):
        logits = z @ w
        p = 1 / (1 + np.exp(-np.clip(logits, -30, 30)))
        value = np.mean(np.logaddexp(0, logits) - y * logits) + l2 * (penalised * w) @ w
        return value, z.T @ (p - y) / len(y) + 2 * l2 * penalised * w

    v = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 3000}).x
    weights = v / scale
    weights[0] = v[0] - (v[1:] * mean[1:] / scale[1:]).sum()
    return weights


def fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(weights (features, classes), bias (classes,)) of a softmax regression on the summed log-loss, features
    standardised while fitting (as in fit_logistic); the weights returned apply to raw features."""
    from scipy.optimize import minimize

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    onehot = np.eye(classes)[y]
    f = x.shape[1]

    def loss(v):
        w, b = v[: f * classes].reshape(f, classes), v[f * classes:]
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        value = -np.log((p * onehot).sum(axis=1) + 1e-12).sum() + l2 * (w * w).sum()
        g = p - onehot
        return value, np.concatenate([(z.T @ g + 2 * l2 * w).ravel(), g.sum(axis=0)])

    v = minimize(loss, np.zeros((f + 1) * classes), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    w, b = v[: f * classes].reshape(f, classes), v[f * classes:]
    return w / scale[:, None], b - (mean / scale) @ w
