"""Where a GRPO step's time goes, on the tiny model (CPU here; the same code on GPUs).

    python bench/bench_grpo.py [--steps 5] [--model PATH] [--config configs/grpo-tiny.yaml] [--set key=value …]

Runs a short GRPO job (the tiny model built on the demo data when --model is not given) and prints, per
phase, the mean time of a step (the first step left out: warm-up) and its share of the step, then how much
of a step each side waits for the other: the rollout engines are idle while rewards, reference, learner
update and weight push run; the learners are idle during generation and reward scoring. The loop is
synchronous (on-policy), so those waits are the price of exactness, and the target of any overlap.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile

PHASES = (("generate", "time_generate"), ("reward", "time_reward"), ("reference", "time_reference"),
          ("learner update", "time_learn"), ("weight push", "time_push"), ("other", None))


def table(history: list[dict]) -> str:
    rows = history[1:] or history
    step = statistics.fmean(m["time_step"] for m in rows)
    lines = [f"{'phase':<16}{'mean s':>9}{'share':>8}", "-" * 33]
    accounted = 0.0
    for name, key in PHASES:
        value = statistics.fmean(m[key] for m in rows) if key else step - accounted
        accounted += value if key else 0.0
        lines.append(f"{name:<16}{value:>9.2f}{value / step:>8.1%}")
    lines.append(f"{'step':<16}{step:>9.2f}{1:>8.1%}")
    engines_idle = statistics.fmean((m["time_step"] - m["time_generate"]) / m["time_step"] for m in rows)
    learners_idle = statistics.fmean((m["time_generate"] + m["time_reward"] + m["time_sample"]) / m["time_step"]
                                     for m in rows)
    lines += ["", f"rollout engines wait for the learners: {engines_idle:.1%} of a step",
              f"learners wait for the rollout engines and rewards: {learners_idle:.1%} of a step",
              f"steps measured: {len(rows)} (of {len(history)}); rollouts per step: {history[0]['rollouts']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/grpo-tiny.yaml")
    parser.add_argument("--model", help="a Hugging Face model folder (default: the untrained tiny model)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from jobs.common import init_ray, parse_overrides
    from jobs.grpo import GRPOConfig, GRPOTrainer
    from reasonrank.config import load_config
    from reasonrank.data.demo import ensure_demo_dataset
    from reasonrank.tiny_model import ensure_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        demo = ensure_demo_dataset(os.path.join(tmp, "demo"))
        model = args.model or str(ensure_tiny_model(os.path.join(tmp, "tiny"), demo.texts()))
        overrides = {"model": model, "data.demo_dir": str(demo.root), "steps": args.steps,
                     "output_dir": os.path.join(tmp, "out"), "checkpoint_every": 10_000, "eval.every": 0,
                     "eval.num_prompts": 4, "eval.samples": 2,  # the evaluations are not part of a step
                     "export": False, **parse_overrides(args.overrides)}
        cfg = load_config(args.config, GRPOConfig, overrides)
        init_ray(cfg.ray_num_cpus)
        trainer = GRPOTrainer(cfg)
        try:
            for _ in range(cfg.steps):
                trainer.train_step()
        finally:
            trainer.close()
    a = cfg.algorithm
    print(f"\nGRPO step time on {os.path.basename(model.rstrip('/'))}: {a.prompts_per_step} prompts × {a.group_size} "
          f"responses, {cfg.learner.replicas} learner(s) ZeRO-{cfg.learner.deepspeed.zero_stage}, "
          f"{cfg.rollout.replicas} rollout engine(s), weight sync {cfg.weight_sync}")
    print(table(trainer.history))


if __name__ == "__main__":
    main()
