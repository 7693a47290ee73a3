"""Which samples each rank trains on at each optimizer step, whatever the number of ranks.

The unit of data is the global batch: `global_batch_size` samples per optimizer step, all ranks together.
Each epoch has one deterministic sample order (shuffled with a per-epoch seed); step `s` of the epoch trains
on the order's positions `[s·G, (s+1)·G)`, cut into micro-batches of `micro_batch_size` consecutive samples,
and rank `r` of `W` takes the micro-batches `r·A … (r+1)·A - 1` where `A = G / (micro_batch_size · W)` is its
gradient accumulation. Every world size trains the same micro-batches at the same step, so the data cursor
is global (the optimizer step within the epoch): after a resize the rest of the epoch is shared among the
new ranks, with no sample repeated or skipped, and DeepSpeed's average over ranks × accumulation steps is the
same gradient.
"""
from __future__ import annotations

import numpy as np


def accumulation_steps(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches each rank accumulates per optimizer step; refuses a world size that cannot split the batch."""
    per_pass = micro_batch_size * world_size
    if world_size < 1 or global_batch_size % per_pass:
        raise ValueError(f"train.global_batch_size={global_batch_size} cannot be split over {world_size} worker(s) "
                         f"of train.micro_batch_size={micro_batch_size}: it must be a multiple of "
                         f"micro_batch_size × workers = {per_pass}")
    return global_batch_size // per_pass


def epoch_order(num_samples: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """The sample indices in the order epoch `epoch` trains them (the same on every rank and every attempt)."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def rank_micro_batches(order: np.ndarray, step_in_epoch: int, global_batch_size: int, micro_batch_size: int,
                       rank: int, world_size: int) -> list[np.ndarray]:
    """The sample indices of each micro-batch rank `rank` trains at optimizer step `step_in_epoch` of the epoch."""
    per_rank = accumulation_steps(global_batch_size, micro_batch_size, world_size) * micro_batch_size
    start = step_in_epoch * global_batch_size + rank * per_rank
    if start + per_rank > len(order):
        raise IndexError(f"step {step_in_epoch} of an epoch of {len(order)} samples is past its last full batch")
    mine = order[start:start + per_rank]
    return [mine[i:i + micro_batch_size] for i in range(0, per_rank, micro_batch_size)]
