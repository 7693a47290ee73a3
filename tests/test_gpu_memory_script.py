"""The memory run (bench/gpu_memory.py) at toy sizes on the CPU: its padded-vs-alone log-probability check, its
extrapolation arithmetic and its table. The GPU's memory reading cannot exist here: the table test stands in
for `torch.cuda.max_memory_allocated` with given numbers, and says so."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
TOY = ["--device", "cpu", "--dtype", "float32", "--hidden", "32", "--intermediate", "64", "--heads", "2",
       "--kv-heads", "1", "--vocab", "128", "--sft-tokens", "60", "--sft-trained", "12", "--prompts", "14", "9",
       "--responses", "6", "4", "--layers", "1", "2", "--target-layers", "3"]


@pytest.fixture(scope="module")
def gpu_memory():
    spec = importlib.util.spec_from_file_location("gpu_memory", REPO / "bench" / "gpu_memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_memory"] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_memory"]


def _toy_model(gm, layers: int = 2):
    from reasonrank.training.config import ModelConfig

    shape = gm.ModelShape(hidden=32, intermediate=64, heads=2, kv_heads=1, vocab=128, layers=layers)
    config = ModelConfig(path="random", attn_implementation="sdpa", gradient_checkpointing=True)
    return shape, gm.build_model(shape, layers, config, torch.float32, torch.device("cpu"))


def test_a_padded_row_matches_the_rollout_alone_and_a_dropped_attention_mask_fails(gpu_memory):
    gm = gpu_memory
    shape, model = _toy_model(gm)
    pad_id = shape.vocab - 1
    prompts, responses = gm.rollouts((30, 18), (8, 5), shape.vocab)
    batch = gm.pack(prompts, responses, pad_id)
    tolerance = gm.TOLERANCE["float32"]

    gaps = gm.padded_vs_alone(model, batch, prompts, responses, pad_id)
    assert [(g.prompt, g.response, g.left_pad) for g in gaps] == [(30, 8, 0), (18, 5, 12)]
    assert all(g.passed(tolerance) for g in gaps), gaps

    # the pads attended to: what the batch's attention mask guards against
    broken = gm.padded_vs_alone(model, gm.without_attention_mask(batch), prompts, responses, pad_id)
    assert broken[0].passed(tolerance)  # the longest prompt has no left pads: unchanged
    assert not broken[1].passed(tolerance) and broken[1].max_abs > 100 * tolerance, broken


def test_the_extrapolation_and_the_zero3_share_on_given_numbers(gpu_memory):
    from reasonrank.training.config import DeepSpeedConfig

    gm = gpu_memory
    fit = gm.extrapolate((2, 10e9), (4, 14e9))
    assert (fit.base, fit.per_layer, fit.at(28)) == (6e9, 2e9, 62e9)
    params = gm.extrapolate((2, 1_557_000_000), (4, 2_023_000_000)).at(28)  # 233M a layer, 1.091B outside them
    assert params == pytest.approx(7_615_000_000)

    # 62 GB whole - 14 GB bf16 weights + 14/4 kept + 1B gathered × 2 bytes + 12 bytes × 7B / 4 of AdamW state
    zero3 = DeepSpeedConfig(zero_stage=3)
    assert gm.zero3_per_gpu(62e9, 7e9, 1e9, 2, 4, zero3) == pytest.approx(62e9 - 14e9 + 3.5e9 + 2e9 + 21e9)
    offloaded = DeepSpeedConfig(zero_stage=3, offload_optimizer=True)
    assert gm.zero3_per_gpu(62e9, 7e9, 1e9, 2, 4, offloaded) == pytest.approx(62e9 - 14e9 + 3.5e9 + 2e9)
    both = DeepSpeedConfig(zero_stage=3, offload_optimizer=True, offload_params=True)
    assert gm.zero3_per_gpu(62e9, 7e9, 1e9, 2, 4, both) == pytest.approx(62e9 - 14e9 + 2e9)


def test_the_toy_run_on_the_cpu_passes_its_log_probability_check_and_says_na_for_memory(gpu_memory, capsys):
    gm = gpu_memory
    assert gm.peak_bytes(torch.device("cpu")) is None
    assert gm.main(TOY) == 0
    out = capsys.readouterr().out
    assert out.count("gradient checkpointing active") == 4  # sft and grpo at 1 and 2 layers
    rows = [r for r in map(str.split, out.splitlines()) if r and r[0].isdigit() and r[-1] in ("PASS", "FAIL")]
    assert [(r[0], r[1], r[2], r[3], r[-1]) for r in rows] == [
        ("1", "14", "6", "0", "PASS"), ("1", "9", "4", "5", "PASS"),
        ("2", "14", "6", "0", "PASS"), ("2", "9", "4", "5", "PASS")]
    controls = [r for r in map(str.split, out.splitlines()) if r and r[0].isdigit() and r[-1] == "caught"]
    assert [(r[0], r[1], r[3]) for r in controls] == [("1", "9", "5"), ("2", "9", "5")]  # the padded row, caught
    table = {line.split()[0]: line for line in out.splitlines() if line.startswith(("  sft ", "  grpo "))}
    assert set(table) == {"sft", "grpo"}
    assert all("n/a (no GPU memory reading on this device)" in line for line in table.values())


def test_the_table_extrapolates_measured_peaks_and_judges_the_zero3_share(gpu_memory, capsys, monkeypatch):
    """No GPU here: the peak readings are given numbers, in the order the run takes them."""
    gm = gpu_memory
    readings = iter([10e9, 20e9, 12e9, 25e9])  # sft 1 layer, grpo 1 layer, sft 2 layers, grpo 2 layers
    monkeypatch.setattr(gm, "peak_bytes", lambda device: next(readings))
    assert gm.main(TOY + ["--budget-gb", "20"]) == 1
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("  sft ", "  grpo "))}
    # toy parameters weigh nothing at this precision: the ZeRO-3 share is the 3-layer figure
    assert table["sft"] == ["sft", "10.00", "12.00", "2.00", "8.00", "14.00", "14.00", "on", "8", "GPUs", "PASS"]
    assert table["grpo"] == ["grpo", "20.00", "25.00", "5.00", "15.00", "30.00", "30.00", "on", "4", "GPUs", "FAIL"]


def test_a_model_loaded_for_training_recomputes_its_layers_in_the_backward_pass(tmp_path):
    """from_pretrained returns eval mode, where transformers skips gradient checkpointing: the SFT job's model
    must come out of `load_causal_lm` in training mode for its 23K-token rows to fit."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from reasonrank.training.config import ModelConfig
    from reasonrank.training.deepspeed_engine import load_causal_lm

    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    stage0 = {"zero_optimization": {"stage": 0}, "bf16": {"enabled": False}}
    model = load_causal_lm(ModelConfig(path=str(tmp_path), gradient_checkpointing=True), stage0).model
    mlp, calls = model.model.layers[0].mlp, []
    forward = mlp.forward
    mlp.forward = lambda *args: calls.append(1) or forward(*args)  # the recomputation runs no module hooks
    ids = torch.arange(1, 20).unsqueeze(0)
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.training and len(calls) == 2  # the forward, and again in the backward
