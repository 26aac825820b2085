"""/extract and /explain: DGCNN relation extraction decoded as a probabilistic graph (subjects, then objects)."""

from app.tasks.extract.task import ExtractTask

__all__ = ["ExtractTask"]
