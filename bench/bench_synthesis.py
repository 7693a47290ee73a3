"""The synthesis driver's memory and throughput at two data sizes, against the simulated teacher.

    python bench/bench_synthesis.py [--labels 12000 120000] [--queries 1000] [--baseline-repo DIR]

Each size is one fresh job (`jobs.synthesize` on configs/synthesize-demo.yaml, its own output folder, an
embedded Ray) in a child process whose own thread samples its RSS every 0.1 s. The queries are the same at
every size (`--queries` of the demo data, 10 candidates each); the labels grow through the shuffled lists per
query (12 labels a query: 10 pointwise, 2 lists; 120: 10 and 110), so what grows is only what the driver
should not hold. "growth" is the peak RSS minus the RSS after imports and Ray's start, before the job.
The simulated teacher answers at once without faults, so the job's own costs dominate (it runs in the
driver process, as in every simulated run). `--baseline-repo` runs the same sizes with the job of another
checkout (e.g. a `git worktree` of an earlier commit) for comparison. Prints a table and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WINDOW = 10


def _child(args: argparse.Namespace) -> None:
    import psutil

    from jobs.common import init_ray
    from jobs.synthesize import run

    process = psutil.Process()
    init_ray(4, include_dashboard=False)
    baseline = process.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lists = args.labels[0] // args.queries - WINDOW
    start = time.perf_counter()
    summary = run(str(REPO / "configs" / "synthesize-demo.yaml"), {
        "output_dir": args.out, "data.demo_dir": args.demo, "data.limit": args.queries,
        "teacher.window_size": WINDOW, "shuffled_lists": lists - 1, "batch_size": 64,
        "teacher.engine.max_concurrency": 128, "teacher.simulation.latency_s": 0.0,
        "teacher.simulation.fault_rate": 0.0})
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    print("RESULT " + json.dumps({"labels": summary["labelled"], "kept": summary["kept"], "seconds": seconds,
                                  "peak_mb": peak[0] / 2**20, "growth_mb": (peak[0] - baseline) / 2**20}))


def _measure(repo: Path, labels: int, queries: int, demo: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--labels", str(labels),
               "--queries", str(queries), "--demo", demo, "--out", out]
        env = {**os.environ, "PYTHONPATH": str(repo), "RAY_ADDRESS": ""}
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not results:
        raise SystemExit(f"the job failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(results[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[12_000, 120_000])
    parser.add_argument("--queries", type=int, default=1000, help="demo queries (at most 1250)")
    parser.add_argument("--baseline-repo", type=Path, help="another checkout whose job to measure too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--demo", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    from reasonrank.data.demo import write_demo_dataset

    paths = [("this checkout", REPO)] + ([("baseline", args.baseline_repo.resolve())] if args.baseline_repo else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo = str(write_demo_dataset(Path(tmp) / "demo").root)
        for name, repo in paths:
            for labels in args.labels:
                load = os.getloadavg()[0]
                result = _measure(repo, labels, args.queries, demo)
                rows.append({"path": name, **result, "labels_per_s": result["labels"] / result["seconds"],
                             "load_1min": load})
                print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr)
    print(f"{'path':<14}{'labels':>9}{'kept':>8}{'seconds':>9}{'labels/s':>10}{'peak RSS MB':>13}"
          f"{'growth MB':>11}{'load':>6}")
    for r in rows:
        print(f"{r['path']:<14}{r['labels']:>9}{r['kept']:>8}{r['seconds']:>9.0f}{r['labels_per_s']:>10.0f}"
              f"{r['peak_mb']:>13.0f}{r['growth_mb']:>11.0f}{r['load_1min']:>6.1f}")
    print(f"cores: {os.cpu_count()}, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
