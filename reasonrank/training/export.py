"""Export a trained DeepSpeed engine as a plain Hugging Face model folder (weights + tokenizer + chat
template) that transformers, vLLM and the evaluate job load directly, on a local path or an s3:// / gs:// URI.

LoRA runs are exported merged into the base weights, so the result loads like any full model.
Every rank must call `export_hf` (gathering ZeRO-3 partitions is collective); only rank 0 writes.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem

from reasonrank import storage


def _full_state_dict(engine: Any, lora: bool) -> dict[str, torch.Tensor] | None:
    """Rank 0: the full state dict (only the adapter weights for LoRA); other ranks: None."""
    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=lora)
    if engine.global_rank != 0:
        return None
    module = engine.module
    if lora:
        return {k: v for k, v in module.state_dict().items() if "lora_" in k}
    return module.state_dict()


@contextmanager
def _without_zero3_loading():
    """Load a model whole on this rank alone: transformers would otherwise partition it (a collective)."""
    from transformers.integrations import deepspeed as hf_ds

    ref = hf_ds._hf_deepspeed_config_weak_ref
    active = ref() if ref is not None else None
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if active is not None:
            hf_ds.set_hf_deepspeed_config(active)


def _merged_lora_model(trained: Any, adapter_state: dict[str, torch.Tensor], base_path: str):
    """A fresh copy of the base model with the trained adapters merged in (on the CPU)."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    adapters = get_peft_model_state_dict(trained, state_dict=adapter_state)
    dtype = next(iter(adapter_state.values())).dtype
    with _without_zero3_loading():
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    fresh = get_peft_model(base, trained.peft_config["default"])
    result = set_peft_model_state_dict(fresh, adapters)
    if result.unexpected_keys:
        raise RuntimeError(f"LoRA export: adapter keys not in the model: {result.unexpected_keys[:5]}")
    return fresh.merge_and_unload()


def export_hf(engine: Any, tokenizer: Any, out: str, *, lora_base_path: str | None = None) -> None:
    """Write the engine's model to `out` (local folder or URI). `lora_base_path`: set for LoRA runs."""
    import torch.distributed as dist

    state = _full_state_dict(engine, lora=lora_base_path is not None)
    if engine.global_rank == 0:
        fs, root = storage.filesystem(out)
        local = Path(root) if isinstance(fs, LocalFileSystem) else Path(tempfile.mkdtemp(prefix="hf-export-"))
        if local.exists():
            shutil.rmtree(local)
        local.mkdir(parents=True)
        model = (_merged_lora_model(engine.module, state, lora_base_path) if lora_base_path is not None
                 else engine.module)
        model.config.use_cache = True  # trained without a KV cache; served with one
        model.save_pretrained(str(local), state_dict=None if lora_base_path else state, safe_serialization=True)
        tokenizer.save_pretrained(str(local))
        if not isinstance(fs, LocalFileSystem):
            for file in local.iterdir():  # save_pretrained writes a flat folder
                storage.put_file(str(file), storage.join(out, file.name))
            shutil.rmtree(local)
    if dist.is_initialized():
        dist.barrier()
