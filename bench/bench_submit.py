"""What submitting a stage through the Ray Jobs API costs over running its module directly.

    python bench/bench_submit.py [--queries 20] [--backend transformers]

Both run the evaluate stage (configs/evaluate-tiny.yaml) on the demo data and the tiny model, built once
under outputs/bench/submit/ beforehand. Direct: `python -m jobs.evaluate` here, which starts an embedded Ray.
Submitted: `reasonrank submit evaluate` to a `ray start --head` on 127.0.0.1 (cluster.local_head), started
once before (its start-up is reported on its own row); the job's own timestamps split the submitted run
into packaging + upload (`reasonrank` start to the job's creation) and the job itself (creation to end).
Prints seconds and the submitted/direct ratio from this one run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "outputs" / "bench" / "submit"


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command[:4])} … failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return time.perf_counter() - started, result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    args = parser.parse_args()

    from cluster.local_head import BIN, local_head
    from reasonrank.data.demo import ensure_demo_dataset
    from reasonrank.tiny_model import ensure_tiny_model

    demo = ensure_demo_dataset(OUT / "demo")
    model = ensure_tiny_model(OUT / "tiny-model", demo.texts())
    overrides = [f"data.demo_dir={demo.root}", f"engine.model={model}", f"data.limit={args.queries}",
                 f"engine.backend={args.backend}", "sampling.max_new_tokens=32"]
    sets = [a for pair in overrides for a in ("--set", pair)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)

    direct_s, _ = _timed([sys.executable, "-m", "jobs.evaluate", "--config", "configs/evaluate-tiny.yaml",
                          *sets, "--set", f"output_dir={OUT / 'direct'}"], env)

    runtime = OUT / "submit.yaml"
    started = time.perf_counter()
    with local_head() as head:
        head_s = time.perf_counter() - started
        runtime.write_text(json.dumps({"address": head.address, "working_dir": str(REPO),
                                       "env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}, "poll_interval_s": 0.2}))
        submitted_at = time.time()
        submit_s, stdout = _timed([str(BIN / "reasonrank"), "submit", "evaluate", "--config",
                                   "configs/evaluate-tiny.yaml", "--runtime", str(runtime), *sets,
                                   "--set", f"output_dir={OUT / 'submitted'}"], {**env, **head.env})
        summary = json.loads(stdout[stdout.rindex("{\n"):])
        info = head.client().get_job_info(summary["submission_id"])
    upload_s = info.start_time / 1000 - submitted_at  # Ray's job times are in ms since the epoch
    rows = [("ray start --head (once per cluster)", head_s, None),
            ("direct: python -m jobs.evaluate", direct_s, 1.0),
            ("submitted: reasonrank submit evaluate", submit_s, submit_s / direct_s),
            ("  of which package + upload + create", upload_s, None),
            ("  of which the job, created to ended", (info.end_time - info.start_time) / 1000, None)]
    print(f"evaluate, {args.queries} queries, {args.backend} backend, tiny model; one run")
    print(f"{'':42s} {'seconds':>8s} {'ratio':>6s}")
    for name, seconds, ratio in rows:
        print(f"{name:42s} {seconds:8.1f} {'' if ratio is None else f'{ratio:6.2f}'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
