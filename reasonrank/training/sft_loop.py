"""The supervised fine-tuning loop of one data-parallel rank, free of any cluster framework.

Data arrives as an iterator of micro-batches per epoch (the caller's: Ray Data shards in `jobs/sft.py`).
The position in the data is part of the state: `(epoch, step_in_epoch)`. A resumed run skips the
micro-batches already trained in the current epoch, so with the same per-epoch order it continues exactly
where it stopped. The loop yields after each optimizer step; the caller logs and checkpoints.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from reasonrank.training.chat_tokenize import collate


@dataclass(frozen=True)
class MicroBatch:
    ids: list[str]  # sample ids, for the data-order record
    input_ids: list[Sequence[int]]
    loss_mask: list[Sequence[int]]  # from the data path: int8 numpy rows, as the tokenized Parquet column holds them


@dataclass(frozen=True)
class TrainPlan:
    total_steps: int  # optimizer steps: the schedule's length
    steps_per_epoch: int
    grad_accum: int  # micro-batches per optimizer step (per rank)
    pause_at_step: int | None = None  # this run stops here; a later run continues the same schedule

    def __post_init__(self):
        if min(self.total_steps, self.steps_per_epoch, self.grad_accum) < 1:
            raise ValueError(f"a plan needs at least one step, epoch step and micro-batch: {self}")

    @property
    def last_step(self) -> int:
        """The step this run ends at."""
        return min(self.total_steps, self.pause_at_step or self.total_steps)

    @property
    def pauses(self) -> bool:
        return self.last_step < self.total_steps


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps done within `epoch`: the data cursor
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainState":
        return TrainState(d["step"], d["epoch"], d["step_in_epoch"], list(d["history"]))


def batch_digest(ids_per_rank: list[list[str]]) -> str:
    """A short fingerprint of which samples one step trained on, rank by rank."""
    return hashlib.sha1("|".join(",".join(ids) for ids in ids_per_rank).encode()).hexdigest()[:12]


def _sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all ranks. The tensor lives on the model's `device`: NCCL (Ray Train's backend on
    GPUs) reduces CUDA tensors only."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _gather_ids(ids: list[str]) -> list[list[str]]:
    if not dist.is_initialized():
        return [ids]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, ids)
    return out


def _one_step(engine: Any, micro_batches: list[MicroBatch], pad_id: int, device: torch.device,
              epoch: int, step: int) -> dict[str, Any]:
    start = time.perf_counter()
    lr = engine.get_lr()[0]  # the rate this step applies
    losses, tokens, trained = [], 0, 0
    for mb in micro_batches:
        cpu_batch = collate(mb.input_ids, mb.loss_mask, pad_id)
        tokens += sum(len(ids) for ids in mb.input_ids)
        trained += sum(int(np.count_nonzero(mask)) for mask in mb.loss_mask)  # int8 rows: a plain sum wraps
        on_device = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in cpu_batch.items()}
        loss = engine(**on_device).loss  # mean over its trained tokens
        engine.backward(loss)
        engine.step()  # DeepSpeed steps the optimizer only at the accumulation boundary
        losses.append(loss.item())
    loss_sum, n, tokens_all, trained_all = _sum_across_ranks([sum(losses), len(losses), tokens, trained], device)
    step_time = time.perf_counter() - start  # the all-reduce waited for the slowest rank
    ids = _gather_ids([i for mb in micro_batches for i in mb.ids])
    return {"step": step, "epoch": epoch, "loss": loss_sum / n, "lr": lr, "tokens": int(tokens_all),
            "trained_tokens": int(trained_all), "step_time_s": step_time, "tokens_per_s": tokens_all / step_time,
            "batch": batch_digest(ids), "samples": [i for rank_ids in ids for i in rank_ids]}


def sft_steps(engine: Any, plan: TrainPlan, state: TrainState,
              epoch_batches: Callable[[int], Iterator[MicroBatch]], pad_id: int) -> Iterator[dict[str, Any]]:
    """Train from `state` up to `plan.last_step`, updating `state` and yielding each step's record."""
    device = engine.device
    while state.step < plan.last_step:
        batches = iter(epoch_batches(state.epoch))
        for _ in range(state.step_in_epoch * plan.grad_accum):  # already trained before a resume
            next(batches)
        while state.step_in_epoch < plan.steps_per_epoch and state.step < plan.last_step:
            micro = [next(batches) for _ in range(plan.grad_accum)]
            record = _one_step(engine, micro, pad_id, device, state.epoch, state.step + 1)
            state.step += 1
            state.step_in_epoch += 1
            state.history.append({k: v for k, v in record.items() if k != "samples"})
            yield record
        if state.step_in_epoch >= plan.steps_per_epoch:
            for _ in batches:  # the epoch's remainder (less than a step): every rank ends the epoch together
                pass
            state.epoch += 1
            state.step_in_epoch = 0
