"""Generation engines behind one interface (`Engine`); `build_engine` picks the backend named in the config.

Backends are imported only when built, so using one never requires another's packages (vLLM, openai).
"""
from __future__ import annotations

from reasonrank.config import EngineConfig
from reasonrank.engines.base import Engine, Generation, Messages, SamplingParams


def build_engine(config: EngineConfig) -> Engine:
    """A running engine for `config.backend`: "vllm", "transformers" or "openai"."""
    if config.backend == "vllm":
        from reasonrank.engines.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    if config.backend == "transformers":
        from reasonrank.engines.hf_engine import TransformersEngine

        return TransformersEngine(config)
    if config.backend == "openai":
        from reasonrank.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(config)
    raise ValueError(f"unknown engine backend {config.backend!r}; known: vllm, transformers, openai")


def load_tokenizer(config: EngineConfig):
    """The model's tokenizer for local backends (passage truncation); None for remote endpoints."""
    if config.backend == "openai":
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(config.model)


__all__ = ["Engine", "Generation", "Messages", "SamplingParams", "build_engine", "load_tokenizer"]
