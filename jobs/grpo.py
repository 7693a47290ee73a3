"""GRPO on Ray actors: the SFT model and the RL set → a model trained with the multi-view ranking reward.

    python -m jobs.grpo --config configs/grpo-tiny.yaml [--set steps=20]      (or `reasonrank grpo …`)

Per step (`algorithm.max_staleness` = 0: on-policy, synchronous):
    1. the sampler takes `prompts_per_step` RL rows (a reshuffled pass per epoch, resumable cursor);
    2. rollout workers (vLLM) sample `group_size` responses per prompt with the current weights version;
    3. reward actors score each response (multi-view reward) — the reference actor, when there is one,
       scores the same tokens meanwhile;
    4. group-relative advantages; the learner group (DeepSpeed ZeRO) takes the clipped-loss + KL steps;
    5. the new weights are pushed to every engine as version step + 1, before the next rollouts.

Asynchronous (`max_staleness` = k ≥ 1): the batch of step s + k is submitted to the engines when step s
starts, with the weights they hold (version s), and is sampled while the learners train on batch s:

    engines   │ gen s+k (v s) ···│ push │ gen s+k+1 (v s+1) ···│ push │
    learners  │ score + train s ·│      │ score + train s+1 ···│      │

Before each push the driver waits for the batches in flight, so every batch is sampled by one version
(the engines also hold new requests and finish running ones around any load: `VLLMEngine`), batch s is
always sampled by version s − k, and a seeded run reproduces. The loss is decoupled PPO: the ratio against
the learner's recomputed log-probabilities, each token weighted by the truncated importance weight
π_prox/π_behav (`algorithm.is_cap`; `reasonrank/rl/losses.py`). Logged per step in either mode:
`staleness` (a histogram of versions behind, over the step's rollouts), `stale_dropped` (the share of
rollouts that came back older than allowed and were sampled again), `time_engines_busy` (seconds the
engines had a batch to sample); with k ≥ 1 also `is_weight_mean` (after truncation), `is_weight_max`
(before it) and `is_truncated` (the share of tokens cut).

Every `checkpoint_every` steps: learner state, optimizer, schedule, RNGs, step, data cursor, the batches
already sampled for later steps and the metric history under `<output_dir>/checkpoints/step-N` (a local
folder or a URI). A rerun with the same config resumes from the newest complete checkpoint: it loads it,
pushes those weights to the engines FIRST, and continues with the rows it had not reached (asynchronous:
trains on exactly what the uninterrupted run would have). Outputs: `metrics.jsonl` (one line per step:
reward mean/std, well-formed share, window NDCG/Recall/RBO, KL, loss, clip share, step time split,
`responses_sha256` of the sampled tokens for comparing reruns), `evals.jsonl` (with each evaluation
prompt's mean reward), `reward_curve.png`, `final/` (Hugging Face model) and `summary.json`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import statistics
import time
import warnings
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import ray
from pydantic import Field, model_validator

from jobs.common import init_ray, main
from jobs.progress import StageProgress
from reasonrank import fingerprint, storage
from reasonrank.config import DataConfig, EngineConfig, PromptConfig, Strict, load_config, save_prompt
from reasonrank.data.training_sets import RLSample
from reasonrank.engines.base import SamplingParams
from reasonrank.reward import RewardWeights
from reasonrank.rl.advantages import ADVANTAGE_ESTIMATORS, grouped_advantages
from reasonrank.rl.curves import plot_reward_curve
from reasonrank.rl.losses import AGGREGATIONS, GRPOLoss
from reasonrank.rl.kl import KL_ESTIMATORS
from reasonrank.rl.rollout import Rollout
from reasonrank.rl.sampler import PromptSampler, step_seed
from reasonrank.training.attention import AttentionBackend
from reasonrank.training.config import DeepSpeedConfig, ModelConfig, OptimizerConfig

if TYPE_CHECKING:
    from actors.rollout_worker import RolloutRequest

log = logging.getLogger("jobs.grpo")

AdvantageName = Literal[tuple(ADVANTAGE_ESTIMATORS)]  # type: ignore[valid-type]
AggregationName = Literal[tuple(AGGREGATIONS)]  # type: ignore[valid-type]
KLName = Literal[tuple(KL_ESTIMATORS)]  # type: ignore[valid-type]


class AlgorithmConfig(Strict):
    """ReasonRank's GRPO hyperparameters are the defaults."""

    group_size: int = Field(8, ge=2)  # responses per prompt
    prompts_per_step: int = Field(16, ge=1)
    updates_per_step: int = Field(1, ge=1)  # optimizer steps per rollout batch (>1: PPO-style mini-batches)
    advantage: AdvantageName = "grpo"
    loss_aggregation: AggregationName = "token_mean"
    kl_estimator: KLName = "k3"
    kl_coef: float = Field(0.001, ge=0.0)
    clip_eps: float = Field(0.2, gt=0.0)
    max_staleness: int = Field(0, ge=0)  # k: a batch is sampled by weights k steps old (0: on-policy, in lockstep)
    is_cap: float = Field(2.0, gt=0.0)  # truncation of the behaviour importance weight (max_staleness ≥ 1)


class RolloutConfig(PromptConfig):
    """The rollout engines and the prompt they answer (`window_size` passages per gold-set prompt; RL rows
    from a file bring their own lists), each passage cut to `passage_max_tokens`."""

    engine: EngineConfig = EngineConfig(backend="vllm", max_model_len=16384)  # `model` comes from the top level
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)  # per replica: engine.tensor_parallel_size on GPU clusters
    node_labels: dict[str, str] = {}  # engines only on nodes with these Ray labels (a KubeRay worker group)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(3072, ge=1)


class LearnerConfig(Strict):
    replicas: int = Field(1, ge=1)  # DeepSpeed data-parallel ranks
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    node_labels: dict[str, str] = {}  # all ranks on ONE node (strict packing) with these Ray labels
    micro_batch_size: int = Field(2, ge=1)  # responses per forward/backward
    gradient_checkpointing: bool = False
    attn_implementation: AttentionBackend = None  # "sdpa" on GPUs; checked against what is installed
    deepspeed: DeepSpeedConfig = DeepSpeedConfig(zero_stage=3)
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-6, warmup_ratio=0.0, schedule="constant_with_warmup")


class ReferenceConfig(Strict):
    placement: Literal["colocated", "actor"] = "colocated"
    offload: bool = False  # colocated: wait on the CPU between forward passes (GPU memory for the policy)
    num_cpus: float = Field(1.0, gt=0)  # placement=actor
    num_gpus: float = Field(0.0, ge=0)


class RewardConfig(Strict):
    weights: RewardWeights = RewardWeights()
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, gt=0)


class EvalConfig(Strict):
    """The fixed evaluation set: mean reward of `samples` responses per prompt, sampled with the same seed at
    every evaluation (common random numbers: the curve moves with the weights, not with the draw), or of the
    greedy response (temperature 0, one sample: what the evaluate job ranks with)."""

    rl_set: str | None = None  # RLSample rows (the first num_prompts); the training rl_set itself (the same file,
    # however named): those rows' queries, every copy, are held out of training; None: the gold set of `data`
    # restricted to `split`
    split: str = "test"
    num_prompts: int = Field(16, ge=1)
    samples: int = Field(4, ge=1)
    temperature: float = Field(1.0, ge=0.0)  # 0: greedy
    every: int = Field(0, ge=0)  # steps between evaluations; 0: before the first step and after the last
    seed: int = 1234

    @model_validator(mode="after")
    def _greedy_is_one_sample(self):
        if self.temperature == 0 and self.samples != 1:
            raise ValueError(f"eval.samples: greedy evaluation (temperature 0) gives one response per prompt, "
                             f"not {self.samples}")
        return self


class GRPOConfig(Strict):
    model: str = "outputs/sft-demo/final"  # the SFT export (Hugging Face folder): policy, reference, engines
    rl_set: str | None = None  # RLSample rows (.parquet/.jsonl, e.g. the synthesize job's rl.parquet)
    data: DataConfig = DataConfig(split="train", first_stage_depth=20)  # rl_set=None: gold set from the qrels
    steps: int = Field(100, ge=1)
    seed: int = 0
    algorithm: AlgorithmConfig = AlgorithmConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    reference: ReferenceConfig = ReferenceConfig()
    reward: RewardConfig = RewardConfig()
    eval: EvalConfig = EvalConfig()
    weight_sync: Literal["auto", "object_store", "nccl"] = "auto"
    checkpoint_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    export: bool = True  # write the final model to <output_dir>/final
    output_dir: str = "outputs/grpo"
    staging_dir: str | None = None  # checkpoints for object storage staged here; None: /data/staging or temp
    ray_num_cpus: int | None = 8  # logical CPUs of an embedded Ray (ignored on a cluster)

    @model_validator(mode="after")
    def _consistent(self):
        a, lr = self.algorithm, self.learner
        per_update = lr.replicas * lr.micro_batch_size * a.updates_per_step
        rollouts = a.prompts_per_step * a.group_size
        if rollouts % per_update:
            raise ValueError(
                f"algorithm.prompts_per_step × group_size = {rollouts} rollouts per step must divide evenly over "
                f"learner.replicas × learner.micro_batch_size × algorithm.updates_per_step = {per_update}")
        if "model" in self.rollout.engine.model_fields_set and self.rollout.engine.model != self.model:
            raise ValueError("rollout.engine.model: leave it out; the engines load `model` (the policy's start)")
        if a.max_staleness and self.rollout.temperature != 1.0:
            raise ValueError(f"algorithm.max_staleness={a.max_staleness} needs rollout.temperature 1.0, not "
                             f"{self.rollout.temperature}: the importance weight divides by the engine's "
                             f"log-probabilities, which vLLM reports before temperature")
        if self.rollout.engine.backend != "vllm":
            raise ValueError("rollout.engine.backend: rollouts need the vllm backend (weights pushed in place)")
        if self.learner.deepspeed.offload_params and self.weight_sync == "nccl":
            raise ValueError("weight_sync=nccl with offload_params: the broadcast needs the weights on the GPU")
        r = self.rollout
        if r.max_new_tokens >= r.engine.max_model_len:
            raise ValueError(f"rollout.max_new_tokens ({r.max_new_tokens}) leaves no room for a prompt within "
                             f"rollout.engine.max_model_len ({r.engine.max_model_len})")
        passages = None if r.passage_max_tokens is None else r.window_size * r.passage_max_tokens
        if passages is None or passages + r.max_new_tokens > r.engine.max_model_len:
            warnings.warn(f"prompts of {r.window_size} passages of up to {r.passage_max_tokens} tokens each plus "
                          f"{r.max_new_tokens} response tokens may exceed rollout.engine.max_model_len "
                          f"({r.engine.max_model_len}): such prompts get their passages cut further (logged, and "
                          f"counted per step as prompts_cut)", stacklevel=2)
        return self

    def learner_model(self) -> ModelConfig:
        return ModelConfig(path=self.model, attn_implementation=self.learner.attn_implementation,
                           gradient_checkpointing=self.learner.gradient_checkpointing)


def run(config_path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = load_config(config_path, GRPOConfig, overrides)
    init_ray(cfg.ray_num_cpus)
    with StageProgress("grpo", 0, "responses", cfg.output_dir) as progress:
        progress.status("starting the rollout engines and learners")
        trainer = GRPOTrainer(cfg)
        try:
            return trainer.train(progress)
        finally:
            trainer.close()


def load_rl_set(path: str | None, data: DataConfig, window: int) -> list[RLSample]:
    """RL rows from a table, or the gold set of `data` (relevance labels as the teacher)."""
    if path is not None:
        from reasonrank.data.tables import read_records

        rows = [RLSample.from_record(r) for r in read_records(path)]
        if not rows:
            raise ValueError(f"{path}: the RL set has no rows")
        return rows
    from reasonrank.rl.gold_set import gold_rl_samples

    return gold_rl_samples(data.load(), window)


def hold_out_queries(rows: list[RLSample], num_prompts: int) -> tuple[list[RLSample], list[RLSample]]:
    """(evaluation rows, training rows): the first `num_prompts` rows are evaluated, and every row of their
    queries is kept out of training — a query's shuffled copies never land on both sides of the cut."""
    evaluation = rows[:num_prompts]
    held = {r.qid for r in evaluation}
    return evaluation, [r for r in rows if r.qid not in held]


def results_fingerprint(cfg: GRPOConfig) -> dict[str, Any]:
    """What the trained model and its evaluations depend on (not where the actors run, nor how often the
    job checkpoints or evaluates)."""
    return fingerprint.fingerprint(cfg, ignore=(
        "checkpoint_every", "keep_checkpoints", "export", "weight_sync", "eval.every", "reference.placement",
        "reference.offload", "learner.gradient_checkpointing", "learner.deepspeed.offload_*", "learner.node_labels",
        "rollout.node_labels", "staging_dir"))


def rollout_params(cfg: GRPOConfig, step: int) -> SamplingParams:
    """How step `step` samples: G responses per prompt at the rollout temperature, with seeds of its own."""
    a = cfg.algorithm
    return SamplingParams(temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                          max_new_tokens=cfg.rollout.max_new_tokens, n=a.group_size,
                          seed=step_seed(cfg.seed, step, a.prompts_per_step * a.group_size), logprobs=True)


class GRPOTrainer:
    """The actors of one GRPO run and the loop that drives them."""

    def __init__(self, cfg: GRPOConfig):
        from transformers import AutoTokenizer

        from actors.learner import LearnerGroup, LearnerSpec
        from actors.reward_worker import RewardPool
        from actors.rollout_worker import RolloutGroup
        from actors.weight_sync import build_weight_sync

        self.cfg = cfg
        a = cfg.algorithm
        fingerprint.check_and_record(cfg.output_dir, "grpo", results_fingerprint(cfg))
        self.rl_set = load_rl_set(cfg.rl_set, cfg.data, cfg.rollout.window_size)
        if cfg.eval.rl_set is not None and cfg.rl_set is not None and storage.same_location(cfg.eval.rl_set, cfg.rl_set):
            self.eval_set, self.rl_set = hold_out_queries(self.rl_set, cfg.eval.num_prompts)
        else:
            eval_data = cfg.data.model_copy(update={"split": cfg.eval.split})
            self.eval_set = load_rl_set(cfg.eval.rl_set, eval_data, cfg.rollout.window_size)[: cfg.eval.num_prompts]
        self.sampler = PromptSampler(len(self.rl_set), cfg.seed)
        tokenizer = AutoTokenizer.from_pretrained(storage.local_dir(cfg.model, only=storage.TOKENIZER_FILES))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        log.info("RL set: %d prompts; eval set: %d prompts; %d steps of %d prompts × %d responses",
                 len(self.rl_set), len(self.eval_set), cfg.steps, a.prompts_per_step, a.group_size)

        self.rollouts = RolloutGroup(cfg.rollout.engine.model_copy(update={"model": cfg.model}),
                                     cfg.rollout.replicas, cfg.rollout.num_cpus, cfg.rollout.num_gpus,
                                     cfg.rollout.passage_max_tokens, cfg.rollout.node_labels)
        self.rewards = RewardPool(cfg.reward.weights, cfg.reward.replicas, cfg.reward.num_cpus)
        per_rank = a.prompts_per_step * a.group_size // cfg.learner.replicas
        spec = LearnerSpec(
            model=cfg.learner_model(), deepspeed=cfg.learner.deepspeed, optimizer=cfg.learner.optimizer,
            loss=GRPOLoss(a.clip_eps, a.kl_coef, a.kl_estimator, a.loss_aggregation,
                          is_cap=a.is_cap if a.max_staleness else None),
            micro_batch_size=cfg.learner.micro_batch_size,
            grad_accum=per_rank // (cfg.learner.micro_batch_size * a.updates_per_step),
            updates_per_step=a.updates_per_step, total_updates=cfg.steps * a.updates_per_step,
            temperature=cfg.rollout.temperature, pad_id=pad_id,
            reference="none" if a.kl_coef == 0 else cfg.reference.placement,
            reference_offload=cfg.reference.offload, staging_dir=cfg.staging_dir)
        self.learners = LearnerGroup(spec, cfg.learner.replicas, cfg.learner.num_cpus, cfg.learner.num_gpus,
                                     cfg.learner.node_labels)
        self.reference = None
        if spec.reference == "actor":
            from actors.reference import ReferenceWorker

            self.reference = ReferenceWorker.options(
                num_cpus=cfg.reference.num_cpus, num_gpus=cfg.reference.num_gpus).remote(
                cfg.model, cfg.learner.deepspeed, cfg.learner.micro_batch_size,  # precision resolved in the actor
                cfg.rollout.temperature, pad_id)
        ray.get(self.rollouts.ready() + self.learners.ready())  # all start-ups overlap
        self.sync = build_weight_sync(cfg.weight_sync, self.learners, self.rollouts)
        self.step = 0
        self.ahead: deque[Batch] = deque()  # batches of later steps, submitted or sampled (max_staleness ≥ 1)
        self.history: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []

    # --- the loop ---------------------------------------------------------------------------------------------

    def train(self, progress: StageProgress | None = None) -> dict[str, Any]:
        """Run the steps left; `progress` counts the responses generated (rollouts and evaluations)."""
        cfg = self.cfg
        resumed = self.resume()
        per_step = cfg.algorithm.prompts_per_step * cfg.algorithm.group_size
        per_eval = len(self.eval_set) * cfg.eval.samples
        evals = 2 + (len(range(cfg.eval.every, cfg.steps, cfg.eval.every)) if cfg.eval.every else 0)
        progress = progress or StageProgress("grpo", 0, "responses", cfg.output_dir)
        progress.set_total(cfg.steps * per_step + evals * per_eval,
                           done=self.step * per_step + len(self.evals) * per_eval)

        def evaluate() -> None:
            progress.status(f"evaluating at step {self.step}/{cfg.steps}")
            self.evaluate()
            progress.advance(per_eval, f"evaluated at step {self.step}/{cfg.steps}")

        if not self.evals:
            evaluate()
        while self.step < cfg.steps:
            metrics = self.train_step()
            progress.advance(per_step, f"step {self.step}/{cfg.steps}, reward {metrics['reward_mean']:.3f}")
            log.info("step %d/%d  reward %.3f±%.3f  well-formed %.0f%%  kl %.4f  loss %.4f  "
                     "time %.1fs (gen %.1f, reward %.1f, learn %.1f, push %.1f)",
                     self.step, cfg.steps, metrics["reward_mean"], metrics["reward_std"],
                     100 * metrics["well_formed"], metrics.get("kl", 0.0), metrics["loss"], metrics["time_step"],
                     metrics["time_generate"], metrics["time_reward"], metrics["time_learn"], metrics["time_push"])
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                evaluate()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
            self.write_reports()
        if self.evals[-1]["step"] != self.step:
            evaluate()
        progress.status("exporting the model")
        if cfg.export:
            self.learners.export(storage.join(cfg.output_dir, "final"))
            save_prompt(storage.join(cfg.output_dir, "final"), self.trained_prompt())
        return self.write_reports(resumed_from=resumed)

    def train_step(self) -> dict[str, Any]:
        cfg, a = self.cfg, self.cfg.algorithm
        started = time.perf_counter()
        busy_before = self.rollouts.busy_seconds()
        dropped_before = self.rollouts.stale_dropped
        batch = self.ahead.popleft() if self.ahead else self._submit(self.step)
        while len(self.ahead) < a.max_staleness and self.step + len(self.ahead) + 1 < cfg.steps:
            self.ahead.append(self._submit(self.step + len(self.ahead) + 1))  # sampled while this step trains
        t0 = time.perf_counter()
        rollouts = self._collect(batch)
        t1 = time.perf_counter()
        reference = self.reference.logprobs.remote(rollouts) if self.reference is not None else None
        self._score(rollouts, batch.samples)
        t2 = time.perf_counter()
        ref_logprobs = ray.get(reference) if reference is not None else None
        t3 = time.perf_counter()
        advantages = grouped_advantages(rollouts, a.group_size, len(batch.samples), ADVANTAGE_ESTIMATORS[a.advantage])
        for r, adv in zip(rollouts, advantages):
            r.advantage = adv
        learner_stats = self.learners.train_step(rollouts, ref_logprobs)
        t4 = time.perf_counter()
        for later in self.ahead:  # nothing in flight across a push: each batch is sampled by one version
            self._collect(later)
        t5 = time.perf_counter()
        self.step += 1
        self.sync.push(self.step)
        t6 = time.perf_counter()
        busy = [after - before for before, after in zip(busy_before, self.rollouts.busy_seconds())]
        dropped = self.rollouts.stale_dropped - dropped_before
        staleness = Counter(batch.step - r.weights_version for r in rollouts)
        metrics = {"step": self.step, "weights_version": min(r.weights_version for r in rollouts),
                   "prompts": [s.id for s in batch.samples], "rollouts": len(rollouts),
                   "responses_sha256": hashlib.sha256(json.dumps([r.response_ids for r in rollouts]).encode()).hexdigest(),
                   **_rollout_metrics(rollouts), **learner_stats,
                   "staleness": {str(k): staleness[k] for k in sorted(staleness)},
                   "stale_dropped": dropped / (dropped + len(rollouts)),
                   "time_sample": t0 - started, "time_generate": (t1 - t0) + (t5 - t4), "time_reward": t2 - t1,
                   "time_reference": t3 - t2, "time_learn": t4 - t3, "time_push": t6 - t5,
                   "time_step": t6 - started, "time_engines_busy": statistics.fmean(busy)}
        self.history.append(metrics)
        return metrics

    def _submit(self, step: int) -> Batch:
        """Draw step `step`'s rows and start sampling them with the weights the engines hold now."""
        indices = self.sampler.next_indices(self.cfg.algorithm.prompts_per_step)
        samples = [self.rl_set[i] for i in indices]
        return Batch(step, indices, samples, request=self.rollouts.submit(
            samples, rollout_params(self.cfg, step), self.sync.version))

    def _collect(self, batch: Batch) -> list[Rollout]:
        if batch.rollouts is None:
            batch.rollouts = self.rollouts.collect(batch.request, self.sync.refresh)
            batch.request = None
        return batch.rollouts

    def _score(self, rollouts: list[Rollout], samples: list[RLSample]) -> None:
        breakdowns = self.rewards.score([r.text for r in rollouts], [samples[r.group] for r in rollouts])
        for r, b in zip(rollouts, breakdowns):
            r.reward = b["reward"]
            r.reward_terms = {k: v for k, v in b.items() if k != "reward"}

    def evaluate(self) -> dict[str, Any]:
        """Mean reward over the fixed evaluation set with the current weights (same seeds every time), and per
        prompt (`prompt_rewards`: evaluations compare prompt by prompt)."""
        e = self.cfg.eval
        params = SamplingParams(temperature=e.temperature, top_p=self.cfg.rollout.top_p,
                                max_new_tokens=self.cfg.rollout.max_new_tokens, n=e.samples, seed=e.seed,
                                logprobs=True)
        rollouts = self.rollouts.generate(self.eval_set, params, self.sync.version, self.sync.refresh)
        self._score(rollouts, self.eval_set)
        per_prompt: dict[str, list[float]] = {}
        for r in rollouts:
            per_prompt.setdefault(r.sample_id, []).append(r.reward)
        result = {"step": self.step, **_rollout_metrics(rollouts),
                  "prompt_rewards": {p: statistics.fmean(v) for p, v in per_prompt.items()}}
        self.evals.append(result)
        log.info("eval at step %d: reward %.3f, well-formed %.0f%%, window NDCG@10 %.3f", self.step,
                 result["reward_mean"], 100 * result["well_formed"], result["ndcg"])
        return result

    def trained_prompt(self) -> PromptConfig:
        """The prompt settings the policy was trained with: passages per RL row, the rollouts' passage budget."""
        return PromptConfig(window_size=max(len(r.docids) for r in self.rl_set),
                            passage_max_tokens=self.cfg.rollout.passage_max_tokens)

    # --- checkpoints ------------------------------------------------------------------------------------------

    def _checkpoint_dir(self, step: int) -> str:
        return storage.join(self.cfg.output_dir, "checkpoints", f"step-{step:06d}")

    def save_checkpoint(self) -> None:
        path = self._checkpoint_dir(self.step)
        state = {"step": self.step, "sampler": self.sampler.state_dict(), "history": self.history,
                 "evals": self.evals}
        self.learners.save(path, state)
        storage.write_jsonl_atomic(storage.join(path, "ahead.jsonl"), [
            {"step": b.step, "indices": b.indices, "rollouts": [dataclasses.asdict(r) for r in self._collect(b)]}
            for b in self.ahead])
        # Written last: a checkpoint folder without it is incomplete (the job died while saving).
        storage.write_text_atomic(storage.join(path, "trainer_state.json"), json.dumps(state))
        log.info("checkpoint at step %d: %s", self.step, path)
        complete = _complete_checkpoints(self.cfg.output_dir)
        for old in complete[: -self.cfg.keep_checkpoints]:
            fs, root = storage.filesystem(self._checkpoint_dir(old))
            fs.rm(root, recursive=True)

    def resume(self) -> int | None:
        """Continue from the newest complete checkpoint, if any: learner state, cursor, history, then the
        weights pushed to the engines before any rollout. Returns the step resumed at."""
        complete = _complete_checkpoints(self.cfg.output_dir)
        if not complete:
            return None
        step = complete[-1]
        path = self._checkpoint_dir(step)
        state = self.learners.load(path)
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.history, self.evals = state["step"], state["history"], state["evals"]
        self.ahead = deque(Batch(b["step"], b["indices"], [self.rl_set[i] for i in b["indices"]],
                                 rollouts=[Rollout(**r) for r in b["rollouts"]])
                           for b in storage.read_jsonl(storage.join(path, "ahead.jsonl")))
        self.sync.push(self.step)
        log.info("resumed from %s at step %d (data epoch %d, position %d); engines hold weights version %d",
                 path, self.step, self.sampler.epoch, self.sampler.position, self.sync.version)
        return step

    # --- reports ----------------------------------------------------------------------------------------------

    def write_reports(self, resumed_from: int | None = None) -> dict[str, Any]:
        out = self.cfg.output_dir
        storage.write_jsonl_atomic(storage.join(out, "metrics.jsonl"), self.history)
        storage.write_jsonl_atomic(storage.join(out, "evals.jsonl"), self.evals)
        with storage.writing(storage.join(out, "reward_curve.png")) as png:
            plot_reward_curve([m["weights_version"] for m in self.history], [m["reward_mean"] for m in self.history],
                              [m["reward_std"] for m in self.history], [e["step"] for e in self.evals],
                              [e["reward_mean"] for e in self.evals], png,
                              f"GRPO · {os.path.basename(self.cfg.model.rstrip('/'))}")
        summary = {"steps": self.step, "resumed_from": resumed_from, "model": self.cfg.model,
                   "eval_before": self.evals[0] if self.evals else None,
                   "eval_after": self.evals[-1] if self.evals else None,
                   "rollout_restarts": self.rollouts.restarts,
                   "final_model": storage.join(out, "final") if self.cfg.export else None}
        storage.write_text_atomic(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
        return summary

    def close(self) -> None:
        for part in ("sync", "rollouts", "rewards", "learners"):
            if hasattr(self, part):
                getattr(self, part).close()
        if getattr(self, "reference", None) is not None:
            ray.kill(self.reference)


@dataclass
class Batch:
    """The rows of one step and their rollouts: in flight (`request`) until collected (`rollouts`)."""

    step: int  # the step that trains on it (its sampling seeds are this step's)
    indices: list[int]  # the rows' places in the RL set
    samples: list[RLSample]
    request: RolloutRequest | None = None  # while the engines sample it
    rollouts: list[Rollout] | None = None


def _complete_checkpoints(output_dir: str) -> list[int]:
    """Steps of the checkpoints whose saving finished, oldest first."""
    root = storage.join(output_dir, "checkpoints")
    steps = []
    for name in storage.listdir(root):
        if name.startswith("step-") and storage.exists(storage.join(root, name, "trainer_state.json")):
            steps.append(int(name.removeprefix("step-")))
    return sorted(steps)


def _rollout_metrics(rollouts: list[Rollout]) -> dict[str, float]:
    rewards = [r.reward for r in rollouts]
    n = len(rollouts)

    def mean_term(name: str) -> float:
        return sum(float(r.reward_terms.get(name, 0.0)) for r in rollouts) / n

    return {
        "reward_mean": statistics.fmean(rewards),
        "reward_std": statistics.pstdev(rewards),
        "well_formed": sum(r.reward_terms.get("outcome") == "scored" for r in rollouts) / n,
        "malformed": sum(r.reward_terms.get("outcome") == "malformed" for r in rollouts) / n,
        "ndcg": mean_term("ndcg"), "recall": mean_term("recall"), "rbo": mean_term("rbo"),
        "response_tokens": statistics.fmean(len(r.response_ids) for r in rollouts),
        "truncated": sum(r.finish_reason == "length" for r in rollouts) / n,
        "prompts_cut": len({r.sample_id for r in rollouts if r.passages_cut_to is not None}),
    }


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
