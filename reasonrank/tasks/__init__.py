"""The tasks a training row can be (`RLSample.task`), by name: ReasonRank's listwise window (the default),
DRanker's one-shot list, IRanker's elimination step. See `reasonrank.tasks.base` for what a task says."""
from __future__ import annotations

from typing import Any

from reasonrank.tasks.base import Task
from reasonrank.tasks.elimination_step import EliminationStep
from reasonrank.tasks.listwise_window import ListwiseWindow
from reasonrank.tasks.one_shot_list import OneShotList

TASKS: dict[str, type[Task]] = {t.name: t for t in (ListwiseWindow, OneShotList, EliminationStep)}
DEFAULT_TASK = ListwiseWindow.name


def task_named(name: str, weights: Any = None) -> Task:
    """The task `name` with its reward `weights` (the task's defaults when None)."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
    return cls(weights)


__all__ = ["DEFAULT_TASK", "TASKS", "Task", "task_named"]
