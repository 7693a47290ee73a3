"""Save and restore everything a training run needs to continue exactly: a DeepSpeed engine's model,
optimizer and LR schedule, each rank's random-number generators, and the trainer's own state (step, data
cursor, metric history …) as a plain dict this module does not interpret.

Every rank calls these (DeepSpeed's save and load are collective); each rank writes only its own files,
so per-rank folders can be merged into one checkpoint (what Ray Train does when every worker reports one).
Rank 0 also writes the checkpoint's layout (world size, ZeRO stage): a run resumed on another number of ranks
loads it through a universal checkpoint (`training/universal_checkpoint.py`).
"""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasonrank import storage

log = logging.getLogger(__name__)

TAG = "state"  # one DeepSpeed tag per checkpoint folder
LAYOUT = "layout.json"
_TRAINER_KEY = "trainer_state"


def _rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng_state_rank{rank}.pt"


def save_training_state(engine: Any, directory: str | Path, trainer_state: dict[str, Any]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory), tag=TAG, client_state={_TRAINER_KEY: trainer_state})
    if engine.global_rank == 0:
        layout = {"world_size": engine.dp_world_size, "zero_stage": engine.zero_optimization_stage()}
        (directory / LAYOUT).write_text(json.dumps(layout))
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, _rng_file(directory, engine.global_rank))


def saved_world_size(checkpoint: str) -> int:
    """The number of ranks that saved the checkpoint folder `checkpoint` (local or on object storage)."""
    with storage.open_file(storage.join(checkpoint, LAYOUT)) as f:
        return int(json.load(f)["world_size"])


def load_training_state(engine: Any, directory: str | Path) -> dict[str, Any]:
    """Restore `engine` (weights, optimizer, schedule) and this rank's RNGs; return the trainer state.

    A universal checkpoint (saved at another world size) carries no per-rank RNG states: the RNGs are left as
    they are (they only drive dropout)."""
    directory = Path(directory)
    path, client_state = engine.load_checkpoint(str(directory), tag=TAG, load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
    if path is None or not client_state or _TRAINER_KEY not in client_state:
        raise FileNotFoundError(f"{directory}: no training state saved under tag {TAG!r}")
    rng_file = _rng_file(directory, engine.global_rank)
    if engine.load_universal_checkpoint():
        log.info("rank %d: loaded a checkpoint of another world size; its random generators start afresh",
                 engine.global_rank)
        return client_state[_TRAINER_KEY]
    if not rng_file.exists():
        raise FileNotFoundError(f"{rng_file}: missing; was the checkpoint written with the same number of ranks?")
    rng = torch.load(rng_file, weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return client_state[_TRAINER_KEY]
