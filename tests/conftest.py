"""Shared fixtures: the demo dataset, the tiny model and one embedded Ray cluster, each built once a session.

Everything here is real: the tiny model is a Qwen2-architecture model with a tokenizer trained locally, the
Ray cluster is a real local cluster. Only what cannot exist on a CPU machine (GPUs, NCCL) is ever mocked,
and the tests that do so say so.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Engines and compiled ops need these before they are imported.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (NCCL / vLLM CUDA / bf16 ZeRO-3); this machine has none")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The bundled demo dataset (queries, corpus, qrels, BM25 run), generated deterministically."""
    from reasonrank.data.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, demo_data):
    """An untrained tiny Qwen2 model + locally trained tokenizer, in Hugging Face format."""
    from reasonrank.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), demo_data.texts())


@pytest.fixture(scope="session")
def ray_cluster():
    """One embedded Ray cluster for the session (logical CPUs over-declared to fit small actors)."""
    import ray

    ray.init(num_cpus=8, include_dashboard=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def briefly_tuned_model(tmp_path_factory, demo_data, tiny_model_dir):
    """The tiny model after 80 AdamW steps on the demo's SFT windows of 5 passages (plain torch over the shared
    chat tokenisation): it writes the `<think>…</think><answer>…</answer>` format only some of the time, so
    GRPO's rewards vary within a group and there is room for them to rise."""
    import random

    from transformers import AutoTokenizer

    from reasonrank.prompt import PassageTruncator
    from reasonrank.training.chat_tokenize import tokenize_chat
    from reasonrank.training.demo_set import demo_sft_samples
    from tests.brief_tuning import briefly_tune

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    samples = demo_sft_samples(demo_data.load(), window_size=5, step=5, shuffled_windows=2,
                               truncate=PassageTruncator(tokenizer, 64))
    chats = [tokenize_chat(tokenizer, s.messages) for s in samples]
    return briefly_tune(tiny_model_dir, tokenizer, chats, 80, random.Random(0),
                        tmp_path_factory.mktemp("briefly-tuned"))
