"""Where a GRPO step's time goes, synchronous (max_staleness 0) against asynchronous (max_staleness k ≥ 1).

    python bench/bench_grpo.py [--steps 5] [--staleness 0 1] [--model PATH] [--config configs/grpo-tiny.yaml]
                               [--set key=value …]

Runs a short GRPO job per staleness bound, each from the same starting model over the same prompts (the
tiny model built on the demo data when --model is not given), and prints per run the mean of each phase of
a step (the first step left out: warm-up), samples per second, and how much of a step each side waits:
the learners are idle whenever they are not training (waiting for rollouts, rewards, the weight push); the
rollout engines are idle whenever they have no batch to sample (each worker's own clock). Synchronous, the
two sides take turns; with k ≥ 1 the engines sample the next batch while the learners train.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile

COLUMNS = (("step s", 8), ("samples/s", 11), ("speed-up", 10), ("wait gen", 10), ("reward", 8), ("learn", 8),
           ("push", 7), ("learner idle", 14), ("engines idle", 14), ("staleness", 11))


def row(history: list[dict], baseline: float | None) -> tuple[list[str], float]:
    """The table's cells for one run (its speed-up against a step of `baseline` seconds; None: this run is the
    baseline), and its mean step time."""
    rows = history[1:] or history

    def mean(key: str) -> float:
        return statistics.fmean(m[key] for m in rows)

    step = mean("time_step")
    learner_idle = statistics.fmean(1 - m["time_learn"] / m["time_step"] for m in rows)
    engines_idle = statistics.fmean(1 - m["time_engines_busy"] / m["time_step"] for m in rows)
    behind = sum(int(v) * n for m in rows for v, n in m["staleness"].items()) / sum(m["rollouts"] for m in rows)
    cells = [f"{step:.2f}", f"{rows[0]['rollouts'] / step:.2f}", f"{(baseline or step) / step:.2f}×",
             f"{mean('time_generate'):.2f}", f"{mean('time_reward'):.2f}", f"{mean('time_learn'):.2f}",
             f"{mean('time_push'):.2f}", f"{learner_idle:.1%}", f"{engines_idle:.1%}", f"{behind:.2f}"]
    return cells, step


def table(runs: dict[int, list[dict]]) -> str:
    header = f"{'k':<4}" + "".join(f"{name:>{width}}" for name, width in COLUMNS)
    lines = [header, "-" * len(header)]
    baseline = None
    for k, history in runs.items():
        cells, step = row(history, baseline)
        baseline = baseline or step
        lines.append(f"{k:<4}" + "".join(f"{c:>{w}}" for c, (_, w) in zip(cells, COLUMNS)))
    first = next(iter(runs.values()))
    lines.append(f"steps measured: {len(first) - 1 or 1} (of {len(first)}); rollouts per step: {first[0]['rollouts']}; "
                 "times in seconds, means per step")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/grpo-tiny.yaml")
    parser.add_argument("--model", help="a Hugging Face model folder (default: the untrained tiny model)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1], help="max_staleness of each run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from jobs.common import init_ray, parse_overrides
    from jobs.grpo import GRPOTrainer
    from jobs.grpo_config import GRPOConfig
    from reasonrank.config import load_config
    from reasonrank.data.demo import ensure_demo_dataset
    from reasonrank.tiny_model import ensure_tiny_model

    runs: dict[int, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        demo = ensure_demo_dataset(os.path.join(tmp, "demo"))
        model = args.model or str(ensure_tiny_model(os.path.join(tmp, "tiny"), demo.texts()))
        for k in args.staleness:
            overrides = {"model": model, "data.demo_dir": str(demo.root), "steps": args.steps,
                         "output_dir": os.path.join(tmp, f"out-k{k}"), "checkpoint_every": 10_000, "eval.every": 0,
                         "eval.num_prompts": 4, "eval.samples": 2,  # the evaluations are not part of a step
                         "export": False, **parse_overrides(args.overrides), "algorithm.max_staleness": k}
            cfg = load_config(args.config, GRPOConfig, overrides)
            init_ray(cfg.ray_num_cpus)
            trainer = GRPOTrainer(cfg)
            try:
                for _ in range(cfg.steps):
                    trainer.train_step()
            finally:
                trainer.close()
            runs[k] = trainer.history
    a = cfg.algorithm
    print(f"\nGRPO step time on {os.path.basename(model.rstrip('/'))}: {a.prompts_per_step} prompts × {a.group_size} "
          f"responses, {cfg.learner.replicas} learner(s) ZeRO-{cfg.learner.deepspeed.zero_stage}, "
          f"{cfg.rollout.replicas} rollout engine(s), weight sync {cfg.weight_sync}; k = algorithm.max_staleness")
    print(table(runs))


if __name__ == "__main__":
    main()
