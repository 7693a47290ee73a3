"""Config parts every trainer shares (SFT now, the GRPO learner later): model, LoRA, optimizer, DeepSpeed.

A job's own config model composes these; like every config they reject unknown keys.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from reasonrank.config import Strict
from reasonrank.training.attention import AttentionBackend

ALL_LINEAR_QWEN2 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraConfig(Strict):
    """peft LoRA adapters on the attention and MLP projections (the paper's 32B profile: r = 32)."""

    r: int = Field(32, ge=1)
    alpha: int = Field(64, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = ALL_LINEAR_QWEN2


class ModelConfig(Strict):
    path: str  # a Hugging Face model folder (or hub id where a hub is reachable)
    attn_implementation: AttentionBackend = None  # "sdpa" on GPUs; checked against what is installed
    gradient_checkpointing: bool = False  # trade compute for memory on long sequences
    lora: LoraConfig | None = None  # None: full fine-tune


class OptimizerConfig(Strict):
    """AdamW with warmup then a schedule (the paper's SFT: lr 5e-6, cosine, warmup 0.1)."""

    lr: float = Field(5e-6, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    schedule: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0.0)


class DeepSpeedConfig(Strict):
    """ZeRO stage 0 is plain data parallelism (DDP-style all-reduce); 1, 2, 3 shard more and more state."""

    zero_stage: Literal[0, 1, 2, 3] = 3
    offload_optimizer: bool = False  # optimizer state (and its step) on the CPU: ZeRO-Offload
    offload_params: bool = False  # parameters on the CPU too (ZeRO-3 only): ZeRO-Infinity style
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where CUDA is present, else fp32

    @model_validator(mode="after")
    def _offload_needs_zero(self):
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self

    def use_bf16(self) -> bool:
        if self.precision == "auto":
            import torch

            return torch.cuda.is_available()
        return self.precision == "bf16"
