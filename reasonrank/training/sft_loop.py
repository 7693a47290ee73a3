"""The supervised fine-tuning loop of one data-parallel rank, free of any cluster framework.

Data arrives as this rank's micro-batches for one optimizer step (the caller's: `jobs/sft.py` selects them by
`training/global_batch.py`). The position in the data is part of the state: `(epoch, step_in_epoch)`, counted
in optimizer steps of the global batch, so it means the same at every world size: a run resumed on more or
fewer ranks continues exactly where it stopped. The loop yields after each optimizer step; the caller logs
and checkpoints.
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
    global_batch_size: int  # samples per optimizer step, all ranks together
    micro_batch_size: int  # samples per forward pass of one rank
    pause_at_step: int | None = None  # this run stops here; a later run continues the same schedule

    def __post_init__(self):
        if min(self.total_steps, self.steps_per_epoch, self.global_batch_size, self.micro_batch_size) < 1:
            raise ValueError(f"a plan needs at least one step, epoch step and sample: {self}")

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
    step_in_epoch: int = 0  # optimizer steps done within `epoch`: the data cursor, global (any world size)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainState":
        return TrainState(d["step"], d["epoch"], d["step_in_epoch"], list(d["history"]))


def batch_digest(ids: list[str]) -> str:
    """A short fingerprint of which samples one step trained on, in the global batch's order."""
    return hashlib.sha1(",".join(ids).encode()).hexdigest()[:12]


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
    ids = [i for rank_ids in _gather_ids([i for mb in micro_batches for i in mb.ids]) for i in rank_ids]
    return {"step": step, "epoch": epoch, "loss": loss_sum / n, "lr": lr, "tokens": int(tokens_all),
            "trained_tokens": int(trained_all), "step_time_s": step_time, "tokens_per_s": tokens_all / step_time,
            "world_size": dist.get_world_size() if dist.is_initialized() else 1, "batch": batch_digest(ids),
            "samples": ids}


def sft_steps(engine: Any, plan: TrainPlan, state: TrainState,
              step_batches: Callable[[int, int], list[MicroBatch]], pad_id: int) -> Iterator[dict[str, Any]]:
    """Train from `state` up to `plan.last_step`, updating `state` and yielding each step's record.

    `step_batches(epoch, step_in_epoch)` gives this rank's micro-batches of that optimizer step."""
    device = engine.device
    while state.step < plan.last_step:
        if state.step_in_epoch >= plan.steps_per_epoch:
            state.epoch += 1
            state.step_in_epoch = 0
        micro = step_batches(state.epoch, state.step_in_epoch)
        record = _one_step(engine, micro, pad_id, device, state.epoch, state.step + 1)
        state.step += 1
        state.step_in_epoch += 1
        state.history.append({k: v for k, v in record.items() if k != "samples"})
        yield record
