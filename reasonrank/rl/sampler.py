"""Which RL rows each step trains on: a reshuffled pass over the set per epoch, with a resumable cursor.

The order of epoch e is a permutation seeded by (seed, e), so the cursor (epoch, position) alone says
where a resumed run continues: the rows it had not yet seen, in the order it would have seen them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class PromptSampler:
    num_rows: int
    seed: int = 0
    epoch: int = 0
    position: int = 0

    def __post_init__(self):
        if self.num_rows < 1:
            raise ValueError("the RL set is empty")

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.num_rows))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next_indices(self, count: int) -> list[int]:
        """The next `count` row indices, crossing into a freshly shuffled epoch when one runs out."""
        out: list[int] = []
        while len(out) < count:
            order = self._order(self.epoch)
            take = min(count - len(out), self.num_rows - self.position)
            out.extend(order[self.position: self.position + take])
            self.position += take
            if self.position == self.num_rows:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"num_rows": self.num_rows, "seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_rows"] != self.num_rows or state["seed"] != self.seed:
            raise ValueError(f"the checkpoint's data cursor is for {state['num_rows']} rows with seed {state['seed']}, "
                             f"this run has {self.num_rows} rows with seed {self.seed}: not the same RL set")
        self.epoch, self.position = state["epoch"], state["position"]


def step_seed(run_seed: int, step: int, rollouts_per_step: int) -> int:
    """The first sampling seed of `step`; its rollouts take this seed + 0 … rollouts_per_step - 1, so steps
    are spaced by at least the rollouts of a step and never share a seed. (Spacing 1000 when a step has
    fewer rollouts, as runs made before the spacing followed the step size had it: they reproduce.)"""
    return run_seed * 1_000_003 + step * max(1_000, rollouts_per_step)
