"""Optional experiment tracking of the per-step training records: TensorBoard event files."""
from __future__ import annotations

from typing import Any

TRACKED = ("loss", "lr", "tokens_per_s", "step_time_s")


class TensorBoardLog:
    """Scalars `train/<name>` per optimizer step, written with tensorboardX (no TensorFlow needed)."""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=logdir)

    def log(self, record: dict[str, Any]) -> None:
        for name in TRACKED:
            self.writer.add_scalar(f"train/{name}", record[name], record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
