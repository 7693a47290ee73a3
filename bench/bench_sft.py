"""Benchmark: SFT tokens/s and peak memory per worker for DDP, ZeRO-1 and ZeRO-3 on gloo (CPU).

    python bench/bench_sft.py [--steps 8] [--workers 2] [--hidden 128] [--layers 4]

Each setting trains the same tiny model on the same demo SFT samples with Ray Train workers on gloo, through
the engine builder and SFT loop `jobs/sft.py` uses ("DDP" is DeepSpeed's ZeRO stage 0: plain data-parallel
all-reduce). Throughput is the median over the steps after the first two; memory is each worker's peak
resident memory, and how much of it training added over the worker's footprint before loading the model.
Ratios are against DDP in this one run; absolute numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETTINGS = {"DDP (ZeRO-0)": 0, "ZeRO-1": 1, "ZeRO-3": 3}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(job: dict) -> None:
    import ray.train
    import torch.distributed as dist

    from reasonrank.training.config import DeepSpeedConfig, ModelConfig, OptimizerConfig
    from reasonrank.training.deepspeed_engine import build_deepspeed_engine, load_causal_lm
    from reasonrank.training.sft_loop import MicroBatch, TrainPlan, TrainState, sft_steps
    from reasonrank.training.zero_config import build_ds_config

    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    before = _rss_mib()
    optim = OptimizerConfig(lr=1e-3, warmup_ratio=0.0)
    ds_config = build_ds_config(DeepSpeedConfig(zero_stage=job["stage"], precision="fp32"), optim,
                                micro_batch_size=job["micro"], grad_accum=1, world_size=world)
    engine = build_deepspeed_engine(load_causal_lm(ModelConfig(path=job["model"]), ds_config).model, ds_config,
                                    optim, job["steps"])
    samples = job["samples"][rank::world]
    micro = [MicroBatch([str(i)] * job["micro"], [s[0] for s in samples[i:i + job["micro"]]],
                        [s[1] for s in samples[i:i + job["micro"]]])
             for i in range(0, job["micro"] * job["steps"], job["micro"])]
    plan = TrainPlan(total_steps=job["steps"], steps_per_epoch=job["steps"], global_batch_size=job["micro"] * world,
                     micro_batch_size=job["micro"])
    records = list(sft_steps(engine, plan, TrainState(), lambda _epoch, step: [micro[step]], job["pad_id"]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    memory = [None] * world
    dist.all_gather_object(memory, (peak, peak - before))
    warm = records[2:] or records
    if rank == 0:  # Ray Train keeps metrics only with checkpoints: the driver reads this file instead
        Path(job["result"]).write_text(json.dumps({
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in warm),
            "step_time_s": statistics.median(r["step_time_s"] for r in warm),
            "peak_mib": max(m[0] for m in memory), "added_mib": max(m[1] for m in memory)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parent.parent / ".cache" /
                                                      "torch_extensions"))

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer
    from transformers import AutoTokenizer

    from reasonrank.data.demo import write_demo_dataset
    from reasonrank.prompt import PassageTruncator
    from reasonrank.reporting import metrics_table
    from reasonrank.tiny_model import build_tiny_model
    from reasonrank.training.chat_tokenize import tokenize_chat
    from reasonrank.training.demo_set import demo_sft_samples

    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        demo = write_demo_dataset(Path(tmp) / "demo")
        model = build_tiny_model(Path(tmp) / "model", demo.texts(), hidden_size=args.hidden,
                                 num_layers=args.layers, num_heads=max(args.hidden // 64, 1))
        tok = AutoTokenizer.from_pretrained(model)
        need = args.steps * args.micro_batch * args.workers
        chats = [tokenize_chat(tok, s.messages) for s in
                 demo_sft_samples(demo.load(), truncate=PassageTruncator(tok, 64))[:need]]
        samples = [(c.input_ids, c.loss_mask) for c in chats]
        ray.init(num_cpus=max(args.workers, 2), include_dashboard=False,
                 runtime_env={"env_vars": {"TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"]}})
        results = {}
        try:
            for name, stage in SETTINGS.items():
                print(f"running {name} …", flush=True)
                trainer = TorchTrainer(
                    _worker, train_loop_config={"stage": stage, "model": str(model), "samples": samples,
                                                "steps": args.steps, "micro": args.micro_batch,
                                                "pad_id": tok.pad_token_id,
                                                "result": str(Path(tmp) / f"result-{stage}.json")},
                    scaling_config=ray.train.ScalingConfig(num_workers=args.workers),
                    run_config=ray.train.RunConfig(name=f"bench-{stage}", storage_path=str(Path(tmp) / "runs")))
                trainer.fit()
                results[name] = json.loads((Path(tmp) / f"result-{stage}.json").read_text())
        finally:
            ray.shutdown()
    base = results["DDP (ZeRO-0)"]
    columns = {name: {"tokens/s": m["tokens_per_s"], "tokens/s ratio": m["tokens_per_s"] / base["tokens_per_s"],
                      "step time s": m["step_time_s"], "peak MiB/worker": m["peak_mib"],
                      "peak ratio": m["peak_mib"] / base["peak_mib"], "training MiB/worker": m["added_mib"],
                      "training ratio": m["added_mib"] / base["added_mib"]}
               for name, m in results.items()}
    print(f"\nSFT on gloo: {args.workers} workers, tiny Qwen2 (hidden {args.hidden}, {args.layers} layers), "
          f"micro-batch {args.micro_batch}, {args.steps} steps")
    print(metrics_table(columns))


if __name__ == "__main__":
    main()
