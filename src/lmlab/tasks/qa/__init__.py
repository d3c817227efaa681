"""Extractive question answering: the task (task.py), the features it packs into segment ids
(features.py) and the sentence ranker those may use (ranker.py)."""

from lmlab.tasks.qa.task import TASK

__all__ = ["TASK"]
