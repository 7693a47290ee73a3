"""The GRPO job's config: algorithm, rollout engines, learners, reference, reward, evaluation, storage (YAML in
configs/grpo-*.yaml)."""
from __future__ import annotations

import itertools
import math
import warnings
from typing import Literal

from pydantic import Field, model_validator

from reasonrank.config import DataConfig, EngineConfig, PromptConfig, Strict
from reasonrank.reward import RewardWeights
from reasonrank.rl.advantages import ADVANTAGE_ESTIMATORS
from reasonrank.rl.kl import KL_ESTIMATORS
from reasonrank.rl.losses import AGGREGATIONS
from reasonrank.training.attention import AttentionBackend
from reasonrank.training.config import DeepSpeedConfig, ModelConfig, OptimizerConfig

AdvantageName = Literal[tuple(ADVANTAGE_ESTIMATORS)]  # type: ignore[valid-type]
AggregationName = Literal[tuple(AGGREGATIONS)]  # type: ignore[valid-type]
KLName = Literal[tuple(KL_ESTIMATORS)]  # type: ignore[valid-type]

# The share of a GPU's memory its tenants may claim together; the rest holds each process's CUDA context (about
# 0.5 GiB) and the allocators' fragmentation.
SHARED_GPU_MEMORY = 0.95


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


class EpisodeConfig(Strict):
    """rl_task=elimination_episode: how a step plays IRanker's on-policy episodes (`reasonrank.rl.episodes`).
    A step still trains on `algorithm.prompts_per_step` groups (states), played in rounds."""

    parallel: int = Field(4, ge=1)  # episodes played side by side: each round samples their live states
    max_rounds: int | None = Field(None, ge=1)  # eliminations an episode makes at most; None: until one is left


class GRPOConfig(Strict):
    model: str = "outputs/sft-demo/final"  # the SFT export (Hugging Face folder): policy, reference, engines
    rl_set: str | None = None  # RLSample rows (.parquet/.jsonl, e.g. the synthesize job's rl.parquet)
    data: DataConfig = DataConfig(split="train", first_stage_depth=20)  # rl_set=None: gold set from the qrels
    # rl_set=None with data.source=ranking_bench: the R1-Ranker task the rows are made for (docs/r1-ranker.md);
    # None: listwise windows from the qrels; elimination_episode: IRanker steps on the policy's own episodes
    rl_task: Literal["one_shot_list", "elimination_step", "elimination_episode"] | None = None
    episodes: EpisodeConfig = EpisodeConfig()  # rl_task=elimination_episode only
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
        if self.rl_task is not None and self.data.source != "ranking_bench":
            raise ValueError(f"rl_task={self.rl_task} makes rows from Ranking-bench items: set data.source to "
                             f"ranking_bench, not {self.data.source}")
        if self.rl_task == "elimination_episode":
            if a.max_staleness:
                raise ValueError(f"rl_task=elimination_episode needs algorithm.max_staleness 0, not "
                                 f"{a.max_staleness}: a round's states come from the previous round's responses, "
                                 f"so a step cannot be sampled ahead of the weights that train it")
            if self.episodes.parallel > a.prompts_per_step:
                raise ValueError(f"episodes.parallel ({self.episodes.parallel}) exceeds "
                                 f"algorithm.prompts_per_step ({a.prompts_per_step}), the states a step trains on")
        elif "episodes" in self.model_fields_set:
            raise ValueError(f"episodes: only rl_task=elimination_episode plays episodes, not rl_task={self.rl_task}")
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

    @model_validator(mode="after")
    def _shared_gpus_fit(self):
        """Engines given a fraction of a GPU (`rollout.num_gpus` < 1) share it with each other, and with the
        learners and the reference actor Ray may place beside them. Each vLLM engine claims
        `gpu_memory_utilization` of the WHOLE GPU's memory and refuses to start when less is free; an actor
        beside the engines is left, at least, the share of the GPU it reserves (its `num_gpus`). So for every
        packing Ray can make of one GPU: engines × gpu_memory_utilization + the others' num_gpus ≤
        SHARED_GPU_MEMORY."""
        r, u = self.rollout, self.rollout.engine.gpu_memory_utilization
        if not 0 < r.num_gpus < 1:
            return self
        beside = []  # (key, GPU share, how many) of the other actors that may land on an engine's GPU
        if 0 < self.learner.num_gpus < 1 and not _exclusive(self.learner.node_labels, r.node_labels):
            beside.append(("learner.num_gpus", self.learner.num_gpus, self.learner.replicas))
        if self.algorithm.kl_coef and self.reference.placement == "actor" and 0 < self.reference.num_gpus < 1:
            beside.append(("reference.num_gpus", self.reference.num_gpus, 1))
        worst = None  # (memory claimed, engines, counts beside) of the packing that claims the most
        limit = 1.0  # the largest gpu_memory_utilization every packing fits
        for engines in range(1, min(r.replicas, _fits(r.num_gpus, 1.0)) + 1):
            room = 1.0 - engines * r.num_gpus
            for counts in itertools.product(*(range(min(n, _fits(share, room)) + 1) for _, share, n in beside)):
                others = sum(n * share for n, (_, share, _) in zip(counts, beside))
                if others > room + 1e-9 or (engines == 1 and not any(counts)):
                    continue
                limit = min(limit, (SHARED_GPU_MEMORY - others) / engines)
                claimed = engines * u + others
                if claimed > SHARED_GPU_MEMORY and (worst is None or claimed > worst[0]):
                    worst = (claimed, engines, counts)
        if worst is None:
            return self
        limit = math.floor(limit * 100 + 1e-9) / 100
        claimed, engines, counts = worst
        names = {"learner.num_gpus": "learner", "reference.num_gpus": "reference actor"}
        tenants = [f"{engines} engines (rollout.num_gpus = {r.num_gpus})" if engines > 1 else
                   f"1 engine (rollout.num_gpus = {r.num_gpus})"]
        tenants += [f"{n} {names[key]}{'s' * (n > 1)} ({key} = {share})"
                    for n, (key, share, _) in zip(counts, beside) if n]
        shares = [f"{engines} × {u}"] + [f"{n} × {share}" for n, (_, share, _) in zip(counts, beside) if n]
        remedies = [f"set rollout.engine.gpu_memory_utilization to at most {limit:.2f}"] if limit > 0 else []
        remedies.append("give each engine a larger share of a GPU (rollout.num_gpus)")
        if any(counts):
            remedies.append("keep the other actors off the engines' GPUs (e.g. learner.node_labels and "
                            "rollout.node_labels asking one label for different values)")
        raise ValueError(
            f"rollout.engine.gpu_memory_utilization = {u} does not fit a shared GPU: Ray may place "
            f"{' and '.join(tenants)} on one GPU, and they claim {' + '.join(shares)} = {claimed:.2f} of its "
            f"memory, more than {SHARED_GPU_MEMORY} (each vLLM engine claims gpu_memory_utilization of the WHOLE "
            f"GPU: one that finds less free refuses to start, one that starts first starves what comes after); "
            f"{', or '.join(remedies)}")

    def learner_model(self) -> ModelConfig:
        return ModelConfig(path=self.model, attn_implementation=self.learner.attn_implementation,
                           gradient_checkpointing=self.learner.gradient_checkpointing)


def _fits(share: float, room: float) -> int:
    """How many actors reserving `share` of a GPU Ray packs into `room` of it."""
    return math.floor(room / share + 1e-9)


def _exclusive(a: dict[str, str], b: dict[str, str]) -> bool:
    """No node can carry both label selectors: they ask one label for different values."""
    return any(key in b and b[key] != value for key, value in a.items())
