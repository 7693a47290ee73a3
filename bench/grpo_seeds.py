"""Does GRPO learn, on every seed, synchronous and asynchronous? Reward curves and the paired test against SFT.

    python bench/grpo_seeds.py [--seeds 0 1 2] [--staleness 0 1] [--set key=value …] [--no-evaluate]

Needs what `make demo` built under `--demo` (outputs/demo-pipeline): its SFT model, RL set and SFT evaluation.
For each staleness bound k and seed, runs the GRPO job (`--config`, the demo's configs/grpo-tiny.yaml) from
the SFT model with the demo's RL set, then the evaluate job on the GRPO model compared query by query with
the SFT model's run. Prints one row per run: the fixed evaluation set's mean reward at each evaluation (the
same prompts and sampling seeds every time), the change from before the first step with its 95% CI and
standard error (paired over the evaluation prompts), the run's wall time, and greedy NDCG@10 against SFT.
Outputs go under `--out`; a rerun resumes or refuses as the jobs do.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default="outputs/demo-pipeline", help="the output_dir of `make demo`")
    parser.add_argument("--config", default="configs/grpo-tiny.yaml")
    parser.add_argument("--evaluate-config", default="configs/evaluate-tiny.yaml")
    parser.add_argument("--out", default="outputs/grpo-seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1], help="algorithm.max_staleness values")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false", help="skip the NDCG comparison")
    args = parser.parse_args()

    from jobs import evaluate, grpo
    from jobs.common import parse_overrides
    from jobs.grpo_report import reward_change
    from reasonrank import storage

    sft = storage.join(args.demo, "sft", "final")
    sft_run = storage.join(args.demo, "evaluate-SFT", "run.trec")
    for needed in (sft, storage.join(args.demo, "synthesize", "rl.parquet"), sft_run):
        if not storage.exists(needed):
            raise SystemExit(f"{needed} is missing: run `make demo` first (or pass --demo)")
    rows = []
    for k in args.staleness:
        for seed in args.seeds:
            name = f"k{k}-seed{seed}"
            started = time.perf_counter()
            summary = grpo.run(args.config, {
                "model": sft, "rl_set": storage.join(args.demo, "synthesize", "rl.parquet"),
                "output_dir": storage.join(args.out, name), "seed": seed, **parse_overrides(args.overrides),
                "algorithm.max_staleness": k})
            minutes = (time.perf_counter() - started) / 60
            evals = list(storage.read_jsonl(storage.join(args.out, name, "evals.jsonl")))
            compared = None
            if args.evaluate:
                result = evaluate.run(args.evaluate_config, {
                    "engine.model": summary["final_model"], "baseline_run": sft_run,
                    "output_dir": storage.join(args.out, f"evaluate-{name}")})
                compared = result["vs_baseline"]["ndcg@10"]
            rows.append((k, seed, evals, reward_change(evals), minutes, compared))
    print(f"\nGRPO from {sft} ({args.config}, {' '.join(args.overrides) or 'as configured'}); eval reward: mean over "
          f"the fixed evaluation set at each evaluation step; Δ: last − first, paired over its prompts")
    steps = [e["step"] for e in rows[0][2]]
    header = (f"{'k':<3}{'seed':<6}" + "".join(f"{'@' + str(s):>8}" for s in steps)
              + f"{'Δ reward':>10}{'SE':>7}{'95% CI':>18}{'Δ/SE':>7}{'min':>6}   NDCG@10 vs SFT")
    print(header + "\n" + "-" * (len(header) + 30))
    for k, seed, evals, change, minutes, compared in rows:
        ndcg = ("" if compared is None else
                f"{compared['system']:.4f} vs {compared['baseline']:.4f}: {compared['difference']:+.4f} "
                f"({compared['ci_low']:+.4f}, {compared['ci_high']:+.4f}), p {compared['p_value']:.3f}")
        print(f"{k:<3}{seed:<6}" + "".join(f"{e['reward_mean']:>8.3f}" for e in evals)
              + f"{change.difference:>+10.3f}{change.se:>7.3f}{f'({change.ci_low:+.3f}, {change.ci_high:+.3f})':>18}"
              f"{change.difference / change.se:>7.1f}{minutes:>6.1f}   {ndcg}")


if __name__ == "__main__":
    main()
