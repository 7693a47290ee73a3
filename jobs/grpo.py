"""GRPO on Ray actors: the SFT model and the RL set → a model trained with the multi-view ranking reward.

    python -m jobs.grpo --config configs/grpo-tiny.yaml [--set steps=20]      (or `reasonrank grpo …`)

Per step (`algorithm.max_staleness` = 0: on-policy, synchronous):
    1. the sampler takes `prompts_per_step` RL rows (a reshuffled pass per epoch, resumable cursor);
    2. rollout workers (vLLM) sample `group_size` responses per prompt with the current weights version;
    3. reward actors score each response (multi-view reward) — the reference actor, when there is one,
       scores the same tokens meanwhile;
    4. group-relative advantages; the learner group (DeepSpeed ZeRO) takes the clipped-loss + KL steps;
    5. the new weights are pushed to every engine as version step + 1, before the next rollouts.

With `rl_task: elimination_episode` (IRanker's on-policy episodes, `reasonrank/rl/episodes.py`), steps 1–2 are
rounds: the step's `prompts_per_step` groups are states of episodes that start at items' full lists, each
round sampling the live states in one generate call and the policy's own eliminations building the next
round's states; `episodes` in the step log counts rounds, states, episode ends by cause and states per list size.

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

The config is `jobs/grpo_config.py`, the checkpoint layout `jobs/grpo_checkpoint.py`, the reports
`jobs/grpo_report.py`; this module is the loop.
"""
from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from jobs import grpo_checkpoint, grpo_report
from jobs.common import init_ray, main
from jobs.grpo_config import GRPOConfig
from jobs.progress import StageProgress
from reasonrank import fingerprint, storage
from reasonrank.config import DataConfig, PromptConfig, load_config, save_prompt
from reasonrank.data.training_sets import RLSample
from reasonrank.engines.base import SamplingParams
from reasonrank.rl.advantages import ADVANTAGE_ESTIMATORS, grouped_advantages
from reasonrank.rl.episodes import EpisodeStep
from reasonrank.rl.losses import GRPOLoss
from reasonrank.rl.rollout import Rollout
from reasonrank.rl.sampler import PromptSampler, step_seed

if TYPE_CHECKING:
    from actors.rollout_worker import RolloutRequest

log = logging.getLogger("jobs.grpo")
EPISODE_TASK = "elimination_episode"  # rows start episodes (reasonrank/rl/episodes.py); evaluated as single steps


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


def load_rl_set(path: str | None, data: DataConfig, window: int, task: str | None = None,
                seed: int = 0) -> list[RLSample]:
    """RL rows from a table; else `task`'s rows made from Ranking-bench items (`data`); else the gold set of
    `data` (relevance labels as the teacher)."""
    if path is not None:
        from reasonrank.data.tables import read_records

        rows = [RLSample.from_record(r) for r in read_records(path)]
        if not rows:
            raise ValueError(f"{path}: the RL set has no rows")
        return rows
    if task is not None:
        from reasonrank.data.ranking_bench import rl_rows

        return rl_rows(data.ranking_bench_items(), task, seed)
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
        self.rl_set = load_rl_set(cfg.rl_set, cfg.data, cfg.rollout.window_size, cfg.rl_task, cfg.seed)
        if cfg.eval.rl_set is not None and cfg.rl_set is not None and storage.same_location(cfg.eval.rl_set, cfg.rl_set):
            self.eval_set, self.rl_set = hold_out_queries(self.rl_set, cfg.eval.num_prompts)
        else:
            eval_data = cfg.data.model_copy(update={"split": cfg.eval.split})
            eval_task = "elimination_step" if cfg.rl_task == EPISODE_TASK else cfg.rl_task
            self.eval_set = load_rl_set(cfg.eval.rl_set, eval_data, cfg.rollout.window_size, eval_task,
                                        cfg.seed)[: cfg.eval.num_prompts]
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
        episodes = None
        if cfg.rl_task == EPISODE_TASK:
            t0 = time.perf_counter()
            batch, episodes = self._play_episodes(self.step)
        else:
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
                   **grpo_report.rollout_metrics(rollouts), **learner_stats,
                   "staleness": {str(k): staleness[k] for k in sorted(staleness)},
                   "stale_dropped": dropped / (dropped + len(rollouts)),
                   "time_sample": t0 - started, "time_generate": (t1 - t0) + (t5 - t4), "time_reward": t2 - t1,
                   "time_reference": t3 - t2, "time_learn": t4 - t3, "time_push": t6 - t5,
                   "time_step": t6 - started, "time_engines_busy": statistics.fmean(busy)}
        if episodes is not None:
            metrics["episodes"] = episodes.stats()
        self.history.append(metrics)
        return metrics

    def _submit(self, step: int) -> Batch:
        """Draw step `step`'s rows and start sampling them with the weights the engines hold now."""
        indices = self.sampler.next_indices(self.cfg.algorithm.prompts_per_step)
        samples = [self.rl_set[i] for i in indices]
        return Batch(step, indices, samples, request=self.rollouts.submit(
            samples, rollout_params(self.cfg, step), self.sync.version))

    def _play_episodes(self, step: int) -> tuple[Batch, EpisodeStep]:
        """Step `step`'s states, sampled round by round with the weights the engines hold now: each round one
        generate call over the live episodes' states, whose responses build the next round's states. The
        rollouts come back numbered by state (group) over the whole step, as one batch's would."""
        cfg = self.cfg
        indices: list[int] = []

        def draw() -> RLSample:
            indices.extend(self.sampler.next_indices(1))
            return self.rl_set[indices[-1]]

        play = EpisodeStep(cfg.algorithm.prompts_per_step, cfg.episodes.parallel, cfg.episodes.max_rounds, draw)
        params = rollout_params(cfg, step)
        samples: list[RLSample] = []
        rollouts: list[Rollout] = []
        while states := play.next_round():
            offset = len(samples)
            samples.extend(s.row for s in states)
            got = sorted(self.rollouts.generate(samples[offset:], params.from_prompt(offset), self.sync.version,
                                                self.sync.refresh), key=lambda r: r.key)
            for r in got:
                r.group += offset
            rollouts.extend(got)
            play.record([[r.text for r in got[i * params.n: (i + 1) * params.n]] for i in range(len(states))])
        return Batch(step, indices, samples, rollouts=rollouts), play

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
        result = {"step": self.step, **grpo_report.rollout_metrics(rollouts),
                  "prompt_rewards": {p: statistics.fmean(v) for p, v in per_prompt.items()}}
        self.evals.append(result)
        log.info("eval at step %d: reward %.3f, well-formed %.0f%%, window NDCG@10 %.3f", self.step,
                 result["reward_mean"], 100 * result["well_formed"], result["ndcg"])
        return result

    def trained_prompt(self) -> PromptConfig:
        """The prompt settings the policy was trained with: passages per RL row, the rollouts' passage budget."""
        return PromptConfig(window_size=max(len(r.docids) for r in self.rl_set),
                            passage_max_tokens=self.cfg.rollout.passage_max_tokens)

    # --- checkpoints and reports ------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        state = {"step": self.step, "sampler": self.sampler.state_dict(), "history": self.history,
                 "evals": self.evals}
        ahead = [grpo_checkpoint.SampledBatch(b.step, b.indices, self._collect(b)) for b in self.ahead]
        path = grpo_checkpoint.save(self.cfg.output_dir, self.learners, state, ahead, self.cfg.keep_checkpoints)
        log.info("checkpoint at step %d: %s", self.step, path)

    def resume(self) -> int | None:
        """Continue from the newest complete checkpoint, if any: learner state, cursor, history, then the
        weights pushed to the engines before any rollout. Returns the step resumed at."""
        loaded = grpo_checkpoint.load_newest(self.cfg.output_dir, self.learners)
        if loaded is None:
            return None
        path, state, ahead = loaded
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.history, self.evals = state["step"], state["history"], state["evals"]
        self.ahead = deque(Batch(b.step, b.indices, [self.rl_set[i] for i in b.indices], rollouts=b.rollouts)
                           for b in ahead)
        self.sync.push(self.step)
        log.info("resumed from %s at step %d (data epoch %d, position %d); engines hold weights version %d",
                 path, self.step, self.sampler.epoch, self.sampler.position, self.sync.version)
        return self.step

    def write_reports(self, resumed_from: int | None = None) -> dict[str, Any]:
        out = self.cfg.output_dir
        return grpo_report.write(out, self.cfg.model, self.step, self.history, self.evals, self.rollouts.restarts,
                             storage.join(out, "final") if self.cfg.export else None, resumed_from)

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


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
