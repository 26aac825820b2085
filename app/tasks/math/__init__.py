"""/solve_math: UniLM seq2seq over number slots, grammar-constrained beam search, exact safe evaluation."""

from app.tasks.math.task import MathTask

__all__ = ["MathTask"]
