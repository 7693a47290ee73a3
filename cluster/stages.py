"""The stages a cluster runs as Ray jobs, each the module behind `python -m jobs.<stage>`."""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from enum import Enum


class Stage(str, Enum):
    synthesize = "synthesize"
    sft = "sft"
    grpo = "grpo"
    evaluate = "evaluate"

    @property
    def module(self) -> str:
        return f"jobs.{self.value}"

    @property
    def source(self) -> str:
        """The module's file, relative to the repository root."""
        return f"jobs/{self.value}.py"

    def entrypoint(self, config: str, overrides: Sequence[str] = (), python: str = "python") -> str:
        """The job's shell command; `overrides` are `key=value` strings passed on as `--set`."""
        parts = [python, "-m", self.module, "--config", config]
        for pair in overrides:
            parts += ["--set", pair]
        return shlex.join(parts)
