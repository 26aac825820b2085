"""/qa: DGCNN reading comprehension over question + passage windows, answers voted across passages."""

from app.tasks.qa.task import QATask

__all__ = ["QATask"]
