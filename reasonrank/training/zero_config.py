"""The DeepSpeed config dict for a run, from the typed config parts.

On CPUs the optimizer is torch's AdamW (`torch_adam`): DeepSpeed's own CPU/fused Adam would JIT-compile an
op first (about 40 s). ZeRO-Offload is the exception: DeepSpeed insists on its CPU Adam there.
"""
from __future__ import annotations

from typing import Any

from reasonrank.training.config import DeepSpeedConfig, OptimizerConfig

_NO_PRINT = 10**9  # DeepSpeed's own periodic log lines; the jobs log their own metrics


def build_ds_config(ds: DeepSpeedConfig, optim: OptimizerConfig, *, micro_batch_size: int,
                    grad_accum: int, world_size: int, load_universal: bool = False) -> dict[str, Any]:
    """A complete DeepSpeed config for `world_size` data-parallel ranks; `load_universal`: the engine loads a
    universal checkpoint (one saved at another world size, converted)."""
    if micro_batch_size < 1 or grad_accum < 1 or world_size < 1:
        raise ValueError(f"micro_batch_size, grad_accum and world_size must be >= 1, got "
                         f"{micro_batch_size}, {grad_accum}, {world_size}")
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 1:
        zero.update(contiguous_gradients=True, overlap_comm=False, reduce_bucket_size=int(5e7))
    if ds.zero_stage == 3:
        # the HF export gathers full 16-bit weights on rank 0 (`_zero3_consolidated_16bit_state_dict`)
        zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_prefetch_bucket_size=int(5e7),
                    stage3_param_persistence_threshold=int(1e5))
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": optim.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.use_bf16()},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": optim.lr, "betas": list(optim.betas), "eps": optim.eps,
                       "weight_decay": optim.weight_decay, "torch_adam": not ds.offload_optimizer},
        },
        "steps_per_print": _NO_PRINT,
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": load_universal},
    }
