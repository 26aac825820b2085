"""Trees from a word-level impact matrix: dependency heads by Eisner's algorithm (projective, one root)
and a constituency tree by top-down best split (MART). numpy only."""

from __future__ import annotations

import numpy as np


def eisner(scores: np.ndarray, root: np.ndarray) -> list[int]:
    """Best projective tree with exactly one word under the root.

    scores[h, d]: score of word h heading word d (0-based words); root[d]: score of d being the root.
    Returns heads, 1-based as in CoNLL-U (0 = root).
    """
    n = len(root)
    neg = -np.inf
    # complete[s, t, dir] / incomplete[s, t, dir]: best span s..t headed at t (dir 0) or at s (dir 1).
    complete = np.full((n, n, 2), neg)
    incomplete = np.full((n, n, 2), neg)
    complete_bp = np.zeros((n, n, 2), int)
    incomplete_bp = np.zeros((n, n, 2), int)
    for i in range(n):
        complete[i, i] = 0.0
    for width in range(1, n):
        for s in range(n - width):
            t = s + width
            # an arc between s and t over the split r: complete(s..r, head s) + complete(r+1..t, head t)
            both = complete[s, s:t, 1] + complete[s + 1:t + 1, t, 0]
            r = int(np.argmax(both))
            incomplete[s, t, 0] = both[r] + scores[t, s]  # t heads s
            incomplete[s, t, 1] = both[r] + scores[s, t]  # s heads t
            incomplete_bp[s, t] = s + r
            left = complete[s, s:t, 0] + incomplete[s:t, t, 0]
            r = int(np.argmax(left))
            complete[s, t, 0], complete_bp[s, t, 0] = left[r], s + r
            right = incomplete[s, s + 1:t + 1, 1] + complete[s + 1:t + 1, t, 1]
            r = int(np.argmax(right))
            complete[s, t, 1], complete_bp[s, t, 1] = right[r], s + 1 + r
    totals = complete[0, :, 0] + complete[:, n - 1, 1] + root
    top = int(np.argmax(totals))
    heads = [0] * n

    def walk(s: int, t: int, direction: int, is_complete: bool) -> None:
        if s == t:
            return
        if is_complete:
            r = complete_bp[s, t, direction]
            if direction == 0:
                walk(s, r, 0, True)
                walk(r, t, 0, False)
            else:
                walk(s, r, 1, False)
                walk(r, t, 1, True)
        else:
            r = incomplete_bp[s, t, direction]
            if direction == 0:
                heads[s] = t + 1
            else:
                heads[t] = s + 1
            walk(s, r, 1, True)
            walk(r + 1, t, 0, True)

    walk(0, top, 0, True)
    walk(top, n - 1, 1, True)
    heads[top] = 0
    return heads


def mart(matrix: np.ndarray, words: list[str]) -> str:
    """Top-down: split each span where the halves hang together most and affect each other least."""
    def build(s: int, t: int) -> str:
        if t - s == 1:
            return words[s]
        if t - s == 2:
            return f"({words[s]} {words[s + 1]})"
        best, split = -np.inf, s + 1
        for k in range(s + 1, t):
            inside = (matrix[s:k, s:k].sum() + matrix[k:t, k:t].sum()) / max((k - s) ** 2 + (t - k) ** 2 - (t - s), 1)
            cross = (matrix[s:k, k:t].sum() + matrix[k:t, s:k].sum()) / (2 * (k - s) * (t - k))
            if inside - cross > best:
                best, split = inside - cross, k
        return f"({build(s, split)} {build(split, t)})"

    return build(0, len(words))
