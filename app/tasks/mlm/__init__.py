"""/segment and /parse: Perturbed Masking on the project's BERT masked-LM encoder."""

from app.tasks.mlm.task import MLMTask

__all__ = ["MLMTask"]
