"""Does the demo's SFT recipe learn the answer format on every data order? Well-formed share and NDCG@10 per seed.

    python bench/sft_seeds.py [--seeds 0 1 2 3 4] [--epochs 3] [--set key=value …]

Needs the demo's synthesized SFT set (`make demo`, or its synthesize stage, wrote `<--demo>/synthesize`). For
each `data.shuffle_seed`, runs the SFT job (`--config`, the demo's configs/sft-tiny.yaml, for the demo's
`--epochs`) on that set, then the evaluate job (`--evaluate-config`) on the held-out demo queries, compared
query by query with BM25. Prints one row per seed (well-formed share of the windows, NDCG@10, the paired
difference with BM25 and its 95% CI, minutes) and a summary against the bar: every seed at least `--bar`
well-formed. `--set` overrides the SFT config (a recipe to compare). Outputs go under `--out`; a rerun resumes
or refuses as the jobs do.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default="outputs/demo-pipeline", help="the output_dir of `make demo`")
    parser.add_argument("--config", default="configs/sft-tiny.yaml")
    parser.add_argument("--evaluate-config", default="configs/evaluate-tiny.yaml")
    parser.add_argument("--out", default="outputs/sft-seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="data.shuffle_seed values")
    parser.add_argument("--epochs", type=int, default=3, help="train.epochs (the demo's sft_epochs)")
    parser.add_argument("--bar", type=float, default=0.9, help="the well-formed share every seed must reach")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from jobs import evaluate, sft
    from jobs.common import parse_overrides
    from reasonrank import storage
    from reasonrank.config import load_config
    from reasonrank.data.demo import ensure_demo_dataset
    from reasonrank.significance import PairedDifference

    sft_set = storage.join(args.demo, "synthesize", "sft.parquet")
    if not storage.exists(sft_set):
        raise SystemExit(f"{sft_set} is missing: run `make demo` first (or pass --demo)")
    evaluate_cfg = load_config(args.evaluate_config, evaluate.EvaluateConfig)
    bm25 = str(ensure_demo_dataset(evaluate_cfg.data.demo_dir).run_path)
    rows = []
    for seed in args.seeds:
        name = f"shuffle{seed}"
        started = time.perf_counter()
        trained = sft.run(args.config, {
            "data.path": sft_set, "data.shuffle_seed": seed, "train.epochs": args.epochs,
            "output_dir": storage.join(args.out, name), "storage.path": storage.join(args.out, "checkpoints"),
            "storage.name": name,
            **parse_overrides(args.overrides)})
        summary = evaluate.run(args.evaluate_config, {"engine.model": trained["model"], "baseline_run": bm25,
                                                      "output_dir": storage.join(args.out, f"evaluate-{name}")})
        rows.append((seed, summary, (time.perf_counter() - started) / 60))

    print(f"\nSFT on {sft_set} ({args.config}, {args.epochs} epochs, {' '.join(args.overrides) or 'as configured'}); "
          f"evaluated on the held-out demo queries ({args.evaluate_config})")
    header = f"{'shuffle_seed':<13}{'well-formed':>12}{'NDCG@10':>9}{'min':>6}   vs BM25"
    print(header + "\n" + "-" * 100)
    for seed, summary, minutes in rows:
        vs = PairedDifference.from_dict(summary["vs_baseline"]["ndcg@10"]).describe()
        share = summary["well_formed_rate"]
        print(f"{seed:<13}{share:>12.1%}{summary['after']['ndcg@10']:>9.4f}{minutes:>6.1f}   {vs}")
    formed = [summary["well_formed_rate"] for _, summary, _ in rows]
    below = [seed for seed, summary, _ in rows if summary["well_formed_rate"] < args.bar]
    print(f"well-formed: min {min(formed):.1%}, mean {sum(formed) / len(formed):.1%}; bar {args.bar:.0%} on every "
          f"seed: {'met' if not below else 'missed on seeds ' + ', '.join(map(str, below))}")


if __name__ == "__main__":
    main()
