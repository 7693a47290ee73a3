"""Load a Hugging Face causal LM and wrap it in a DeepSpeed engine (optimizer + warmup schedule inside).

Used by every trainer: SFT's Ray Train workers now, the GRPO learner actors later. Expects
torch.distributed to be initialised already (Ray Train does it; `deepspeed.init_distributed` otherwise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from reasonrank.training.config import ModelConfig, OptimizerConfig


@dataclass
class LoadedModel:
    model: torch.nn.Module
    # ZeRO-3 partitions weights while they load, through this object; it must outlive the engine.
    hf_deepspeed_config: Any = None


def load_causal_lm(cfg: ModelConfig, ds_config: dict[str, Any]) -> LoadedModel:
    """The model at `cfg.path`, in the run's precision, with LoRA adapters / gradient checkpointing if asked."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = None
    if ds_config["zero_optimization"]["stage"] == 3:
        import deepspeed

        deepspeed.init_distributed()  # ZeRO-3 partitions while loading: its communicator must exist first
        keep_alive = HfDeepSpeedConfig(ds_config)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(cfg.path, **kwargs)
    return LoadedModel(configure_for_training(model, cfg), keep_alive)


def configure_for_training(model: torch.nn.Module, cfg: ModelConfig) -> torch.nn.Module:
    """`model` set up as `cfg` trains it: in training mode, no KV cache, gradient checkpointing and LoRA adapters
    if asked. from_pretrained hands models over in eval mode, where transformers skips gradient checkpointing:
    a 23K-token SFT row would keep every layer's activations."""
    model.train()
    model.config.use_cache = False  # no KV cache while training
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora is not None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, PeftLoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
    return model


def build_deepspeed_engine(model: torch.nn.Module, ds_config: dict[str, Any], optim: OptimizerConfig,
                           total_steps: int):
    """A DeepSpeed engine over the trainable parameters of `model`, with AdamW and a warmup schedule.

    The schedule counts optimizer steps (`engine.step()` at gradient-accumulation boundaries);
    it is part of the engine's checkpoints.
    """
    import deepspeed
    from transformers import get_scheduler

    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = math.ceil(optim.warmup_ratio * total_steps)

    def scheduler(optimizer):
        return get_scheduler(optim.schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)

    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config, lr_scheduler=scheduler)
    return engine
