"""A reward and the terms it was made of, as every task's reward returns it and the step log reports it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskReward:
    """`outcome`: "scored" for a well-formed answer, "malformed" for a broken format (the step log counts both),
    or a task's own word for the rest (e.g. "no_candidate")."""

    reward: float
    outcome: str
    terms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | str]:
        return {"reward": self.reward, "outcome": self.outcome, **self.terms}
