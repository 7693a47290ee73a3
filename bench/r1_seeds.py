"""R1-Ranker's local recipe over seeds: does GRPO teach IRanker the ranking its cold start left out, on each family?

    python bench/r1_seeds.py [--seeds 0 1 2] [--out outputs/r1-seeds]
                             [--sft-steps N] [--grpo-steps N] [--test-items N] [--grpo-set key=value …]

Runs the cold-start SFT once (`--sft-config`, configs/sft-r1-tiny.yaml: the answer format only, on the
demo-scale Ranking-bench it generates), then per seed GRPO for IRanker (`--iranker-config`, independent
single elimination steps) and DRanker (`--dranker-config`, one-shot lists), both from the SFT export, and
evaluates the untrained model, the SFT model and both GRPO models on the test split (`--evaluate-config`:
greedy iterative elimination; DRanker and the SFT model's list column by one-shot ranking). Prints one row per
seed and family: MRR of the untrained model (iterative elimination), of the SFT model (elimination and list),
of IRanker and DRanker; IRanker's MRR against the SFT model's, paired per item, with its 95% CI and p; and
IRanker's step reward on GRPO's fixed held-out steps before and after training, each ± its standard error
over the held-out prompts. Then, per seed, the bar: IRanker above SFT with the CI above zero on at least two of
the three families, and above DRanker on the mean over families.

Every output goes under `--out` (the generated set, the tiny model, the cold-start set included); a rerun
resumes or refuses as the jobs do. `--sft-steps`, `--grpo-steps` and `--test-items` shorten the recipe (a smoke
run of the plumbing: `--sft-steps 20 --grpo-steps 2 --test-items 8`).
"""
from __future__ import annotations

import argparse
import time

MRR_DEPTH = 20  # at least every item's list: the MRR of the whole ranking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft-config", default="configs/sft-r1-tiny.yaml")
    parser.add_argument("--iranker-config", default="configs/grpo-iranker-tiny.yaml")
    parser.add_argument("--dranker-config", default="configs/grpo-dranker-tiny.yaml")
    parser.add_argument("--evaluate-config", default="configs/evaluate-r1-tiny.yaml")
    parser.add_argument("--out", default="outputs/r1-seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the GRPO runs' seed values")
    parser.add_argument("--sft-steps", type=int, help="train.max_steps of the cold start (default: its config's)")
    parser.add_argument("--grpo-steps", type=int, help="steps of each GRPO run (default: its config's)")
    parser.add_argument("--test-items", type=int, help="evaluate the first N test items only (default: all)")
    parser.add_argument("--grpo-set", dest="grpo_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of both GRPO configs")
    args = parser.parse_args()

    from jobs import evaluate, grpo, sft
    from jobs.common import parse_overrides
    from jobs.grpo_report import reward_change
    from reasonrank import storage

    started = time.perf_counter()
    out = args.out
    bench = storage.join(out, "bench")
    sft_summary = sft.run(args.sft_config, {
        "data.path": storage.join(out, "cold-start", "train.parquet"), "data.cold_start.bench_dir": bench,
        "model.path": storage.join(out, "tiny-model"), "output_dir": storage.join(out, "sft"),
        "storage.path": storage.join(out, "checkpoints"), "storage.name": "sft",
        **({"train.max_steps": args.sft_steps} if args.sft_steps else {})})
    sft_model = sft_summary["model"]
    test_data = {"data.path": bench, **({"data.limit": args.test_items} if args.test_items else {})}

    def evaluated(name: str, model: str, strategy: str, baseline: str | None = None) -> str:
        """The run.trec of `model` ranking the test items with `strategy`."""
        output = storage.join(out, f"evaluate-{name}")
        evaluate.run(args.evaluate_config, {**test_data, "engine.model": model, "strategy.name": strategy,
                                            "output_dir": output, "baseline_run": baseline})
        return storage.join(output, "run.trec")

    runs = {"untrained": evaluated("untrained", storage.join(out, "tiny-model"), "iterative_elimination"),
            "SFT": evaluated("SFT", sft_model, "iterative_elimination"),
            "SFT list": evaluated("SFT-list", sft_model, "one_shot")}
    seeds = []
    for seed in args.seeds:
        trained = {}
        for ranker, config, strategy in (("IRanker", args.iranker_config, "iterative_elimination"),
                                         ("DRanker", args.dranker_config, "one_shot")):
            name = f"{ranker.lower()}-seed{seed}"
            summary = grpo.run(config, {
                "model": sft_model, "data.path": bench, "seed": seed, "output_dir": storage.join(out, name),
                **({"steps": args.grpo_steps} if args.grpo_steps else {}), **parse_overrides(args.grpo_overrides)})
            baseline = runs["SFT"] if ranker == "IRanker" else runs["SFT list"]
            trained[ranker] = evaluated(name, summary["final_model"], strategy, baseline)
        evals = list(storage.read_jsonl(storage.join(out, f"iranker-seed{seed}", "evals.jsonl")))
        seeds.append((seed, trained, reward_change(evals)))
    _print_table(args, runs, seeds, (time.perf_counter() - started) / 60)


def _family_reciprocal_ranks(run_path: str, qrels, family_of: dict[str, str]) -> dict[str, dict[str, float]]:
    """family → qid → the reciprocal rank of the item's positive in the run."""
    from reasonrank.data.trec import read_run
    from reasonrank.metrics import per_query_metrics

    out: dict[str, dict[str, float]] = {}
    for qid, values in per_query_metrics(read_run(run_path), qrels, mrr_k=MRR_DEPTH).items():
        out.setdefault(family_of[qid], {})[qid] = values[f"mrr@{MRR_DEPTH}"]
    return out


def _print_table(args, runs: dict[str, str], seeds: list, minutes: float) -> None:
    from reasonrank import storage
    from reasonrank.config import DataConfig
    from reasonrank.significance import paired_difference
    from reasonrank.tasks.families import family_of

    data = DataConfig(source="ranking_bench", path=storage.join(args.out, "bench"), split="test",
                      limit=args.test_items).load()
    families = {q.qid: family_of(q.domain).name for q in data.queries}
    names = sorted(set(families.values()))

    def mrr(run_path: str) -> dict[str, dict[str, float]]:
        return _family_reciprocal_ranks(run_path, data.qrels, families)

    def mean(values: dict[str, float]) -> float:
        return sum(values.values()) / len(values)

    fixed = {name: mrr(path) for name, path in runs.items()}
    print(f"\nR1-Ranker's local recipe ({args.sft_config}, then {args.iranker_config} and {args.dranker_config}); "
          f"MRR on {len(families)} test items ({args.evaluate_config}); IRanker − SFT paired per item; step reward: "
          f"IRanker's fixed held-out steps, mean ± SE over prompts, before → after GRPO")
    header = (f"{'seed':<5}{'family':<16}{'items':>6}{'untrained':>10}{'SFT':>7}{'SFT list':>9}{'IRanker':>8}"
              f"{'DRanker':>8}   {'IRanker − SFT (95% CI), p':<36}step reward")
    print(header + "\n" + "-" * (len(header) + 30))
    verdicts = []
    for seed, trained, change in seeds:
        ranked = {ranker: mrr(path) for ranker, path in trained.items()}
        above = 0
        for family in names:
            d = paired_difference(fixed["SFT"][family], ranked["IRanker"][family], "mrr")
            above += d.ci_low > 0
            p = f"p {d.p_value:.3f}" if d.p_value >= 0.001 else "p < 0.001"
            reward = (f"{change.before:.3f} ± {change.before_se:.3f} → {change.after:.3f} ± {change.after_se:.3f}"
                      if family == names[0] else "")
            print(f"{seed:<5}{family:<16}{d.queries:>6}{mean(fixed['untrained'][family]):>10.3f}"
                  f"{d.baseline:>7.3f}{mean(fixed['SFT list'][family]):>9.3f}{d.system:>8.3f}"
                  f"{mean(ranked['DRanker'][family]):>8.3f}   "
                  f"{f'{d.difference:+.3f} ({d.ci_low:+.3f}, {d.ci_high:+.3f}), {p}':<36}{reward}")
        iranker = sum(mean(ranked["IRanker"][f]) for f in names) / len(names)
        dranker = sum(mean(ranked["DRanker"][f]) for f in names) / len(names)
        verdicts.append(f"seed {seed}: IRanker above SFT (CI above zero) on {above} of {len(names)} families; "
                        f"mean MRR over families IRanker {iranker:.3f} vs DRanker {dranker:.3f}; bar "
                        f"{'met' if above >= 2 and iranker > dranker else 'missed'}")
    print("\n".join(verdicts) + f"\nwall time {minutes:.1f} min")


if __name__ == "__main__":
    main()
