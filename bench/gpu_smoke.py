"""The GPU smoke run: the GPU code paths, each on a tiny model, on a machine with one CUDA GPU, in minutes.

    bench/gpu_smoke.sh          (installs the wheels it needs, then runs this)

One line per part, `PASS`, `FAIL` (the traceback follows on stderr) or `skipped: <why>`:
    sft          SFT steps with DeepSpeed ZeRO-3 in bf16 over NCCL (world size 1): the shared training code and
                 the SFT loop, its statistics all-reduced on the GPU
    grpo         a GRPO learner update (ZeRO-3, bf16: clipped loss, k3 KL, token-mean over the update) and a
                 checkpoint saved and restored on the GPU, the weights compared after the restore
    hf_engine    the transformers engine generating in bf16
    vllm         the vLLM engine in bf16, a whole-state-dict weight push, and its greedy output against a fresh
                 engine on the pushed checkpoint (needs vllm)
    ray          actors that share the one GPU report CUDA, and the weight sync picks the object store for them
                 (NCCL allows one rank per GPU) (needs ray)
Exit status: 0 when every part that ran passed, 1 when one failed, 3 when there is no CUDA GPU.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TEXTS = [f"passage {i}: zorvium was isolated by chemist {i % 7} in year {1800 + i}; the answer is [{i % 5 + 1}]"
         for i in range(400)]


def _world_of_one() -> None:
    """torch.distributed over NCCL with one rank, as Ray Train and the learner actors set it up."""
    import deepspeed

    from reasonrank.ports import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")  # ZeRO-3's partitioning reads LOCAL_RANK again as the model loads
    deepspeed.init_distributed(dist_backend="nccl")


def _zero3_engine(model_dir: Path, micro_batch_size: int, grad_accum: int, total_steps: int):
    from reasonrank.training.config import DeepSpeedConfig, ModelConfig, OptimizerConfig
    from reasonrank.training.deepspeed_engine import build_deepspeed_engine, load_causal_lm
    from reasonrank.training.zero_config import build_ds_config

    optimizer = OptimizerConfig(lr=1e-3, warmup_ratio=0.0, schedule="constant_with_warmup")
    ds_config = build_ds_config(DeepSpeedConfig(zero_stage=3, precision="bf16"), optimizer,
                                micro_batch_size=micro_batch_size, grad_accum=grad_accum, world_size=1)
    loaded = load_causal_lm(ModelConfig(path=str(model_dir), attn_implementation="sdpa"), ds_config)
    return build_deepspeed_engine(loaded.model, ds_config, optimizer, total_steps), loaded


def part_sft(model_dir: Path, work: Path) -> str:
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from reasonrank.training.sft_loop import MicroBatch, TrainPlan, TrainState, sft_steps

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine, _keep = _zero3_engine(model_dir, micro_batch_size=2, grad_accum=2, total_steps=6)
    ids = [tokenizer(t)["input_ids"] for t in TEXTS[:24]]
    micro = [MicroBatch([f"s{i}", f"s{i + 1}"], ids[i: i + 2], [[1] * len(x) for x in ids[i: i + 2]])
             for i in range(0, 24, 2)]
    records = list(sft_steps(engine, TrainPlan(6, 6, 4, 2), TrainState(),
                             lambda epoch, step: micro[2 * step:2 * step + 2],
                             tokenizer.pad_token_id))
    assert dist.get_backend() == "nccl" and engine.bfloat16_enabled() and engine.zero_optimization_stage() == 3
    first, last = records[0]["loss"], records[-1]["loss"]
    assert last < first, f"the loss did not fall: {first:.3f} → {last:.3f}"
    return f"6 steps ZeRO-3 bf16 over NCCL, loss {first:.3f} → {last:.3f}"


def part_grpo(model_dir: Path, work: Path) -> str:
    import deepspeed
    import torch

    from reasonrank.rl.batch import engine_logprob_gap, pack, response_logits, token_logprobs
    from reasonrank.rl.losses import GRPOLoss
    from reasonrank.training.checkpoint import load_training_state, save_training_state

    engine, _keep = _zero3_engine(model_dir, micro_batch_size=2, grad_accum=2, total_steps=4)
    generator = torch.Generator().manual_seed(0)
    batches = [pack([torch.randint(10, 400, (12,), generator=generator).tolist() for _ in range(2)],
                    [torch.randint(10, 400, (n,), generator=generator).tolist() for n in (5 + 3 * i, 9)], pad_id=0)
               for i in range(2)]
    tokens = sum(float(b.response_mask.sum()) for b in batches) / 2  # token-mean over the update (2 micro-batches)
    loss_fn = GRPOLoss(kl_coef=0.001)

    def update() -> float:
        for batch in batches:
            on_gpu = batch.to(engine.device)
            logits = response_logits(engine, on_gpu)
            logprobs = token_logprobs(logits, on_gpu.response_ids, 0.7)  # sampled at temperature 0.7
            raw = token_logprobs(logits.detach(), on_gpu.response_ids).cpu()  # what vLLM would report
            assert engine_logprob_gap(logits, batch, raw) < 1e-4
            loss, stats = loss_fn(logprobs, logprobs.detach(), logprobs.detach() - 0.01,
                                  torch.tensor([1.0, -1.0], device=engine.device), on_gpu.response_mask, tokens=tokens)
            engine.backward(loss)
            engine.step()
        return stats["loss"]

    def weights() -> torch.Tensor:
        params = list(engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params):
            return torch.cat([p.detach().float().flatten().cpu() for p in params])

    before = weights()
    loss = update()
    after_one = weights()
    assert not torch.equal(before, after_one), "the update did not change the weights"
    save_training_state(engine, work / "checkpoint", {"step": 1})
    update()
    assert not torch.equal(weights(), after_one)
    state = load_training_state(engine, work / "checkpoint")
    assert state == {"step": 1} and torch.equal(weights(), after_one), "the restore did not bring the weights back"
    return f"ZeRO-3 bf16 update (loss {loss:.4f}), checkpoint saved, moved on, restored to the saved weights"


def _listwise_batch():
    from reasonrank.prompt import listwise_messages

    return [listwise_messages("who first isolated zorvium", ["zorvium was isolated by chemist 3", "a lazy dog"]),
            listwise_messages("what is the answer", ["the answer is [2]", "towns", "one more passage"])]


def part_hf_engine(model_dir: Path, work: Path) -> str:
    import torch

    from reasonrank.config import EngineConfig
    from reasonrank.engines import build_engine
    from reasonrank.engines.base import SamplingParams

    engine = build_engine(EngineConfig(backend="transformers", model=str(model_dir), dtype="bfloat16"))
    try:
        assert engine.model.dtype == torch.bfloat16 and engine.model.device.type == "cuda"
        gens = engine.generate(_listwise_batch(), SamplingParams(max_new_tokens=16, logprobs=True))
    finally:
        engine.close()
    assert len(gens) == 2 and all(g.completion_tokens > 0 for g in gens)
    return f"bf16 on {torch.cuda.get_device_name()}: {sum(g.completion_tokens for g in gens)} tokens for 2 prompts"


def part_vllm(model_dir: Path, work: Path) -> str:
    from transformers import AutoModelForCausalLM

    from reasonrank.config import EngineConfig
    from reasonrank.engines import build_engine
    from reasonrank.engines.base import SamplingParams
    from reasonrank.tiny_model import build_tiny_model

    other = build_tiny_model(work / "tiny-seed1", TEXTS, seed=1)
    greedy = SamplingParams(max_new_tokens=16, logprobs=True)

    def config(path: Path) -> EngineConfig:
        return EngineConfig(backend="vllm", model=str(path), dtype="bfloat16", max_model_len=2048,
                            gpu_memory_utilization=0.3, enforce_eager=True)

    engine = build_engine(config(model_dir))
    try:
        engine.generate(_listwise_batch(), greedy)
        state = AutoModelForCausalLM.from_pretrained(other).state_dict()
        started = time.perf_counter()
        engine.update_weights({k: v for k, v in state.items() if k != "lm_head.weight"}, version=1)
        push_s = time.perf_counter() - started
        pushed = [g.token_ids for g in engine.generate(_listwise_batch(), greedy)]
    finally:
        engine.close()
    fresh = build_engine(config(other))
    try:
        expected = [g.token_ids for g in fresh.generate(_listwise_batch(), greedy)]
    finally:
        fresh.close()
    assert pushed == expected, "after the push the engine does not answer as a fresh engine on those weights"
    return f"bf16 engine, weight push in {push_s:.2f} s, greedy output equals a fresh engine's on the pushed weights"


def part_ray(model_dir: Path, work: Path) -> str:
    import ray

    from actors.devices import DeviceReport, held_gpus
    from actors.weight_sync import choose_backend

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        @ray.remote(num_gpus=0.5)
        def report() -> DeviceReport:
            import torch

            return DeviceReport("cuda" if torch.cuda.is_available() else "cpu", held_gpus())

        learner, engine = ray.get([report.remote(), report.remote()])
    finally:
        ray.shutdown()
    assert learner.device == engine.device == "cuda" and learner.gpus == engine.gpus, (learner, engine)
    backend = choose_backend("auto", learner, [engine])
    assert backend == "object_store", backend
    return f"actors report cuda on GPU {learner.gpus[0]}; sharing it, auto picks {backend}"


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


PARTS: list[tuple[str, Callable[[Path, Path], str], str | None]] = [
    ("sft", part_sft, None), ("grpo", part_grpo, None), ("hf_engine", part_hf_engine, None),
    ("vllm", part_vllm, "vllm"), ("ray", part_ray, "ray"),
]
NAMES = {"vllm": "vLLM", "ray": "Ray"}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu-smoke: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was run")
        return 3
    from reasonrank.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    print(f"gpu-smoke: {torch.cuda.get_device_name()}, torch {torch.__version__}; work folder {work}")
    model_dir = build_tiny_model(work / "tiny", TEXTS)
    _world_of_one()
    failed = False
    for name, run, needs in PARTS:
        if needs and not _installed(needs):
            print(f"{name:<10} skipped: {NAMES[needs]} not installed", flush=True)
            continue
        started = time.perf_counter()
        try:
            detail = run(model_dir, work / name)
            print(f"{name:<10} PASS  {detail} ({time.perf_counter() - started:.1f} s)", flush=True)
        except Exception as e:
            failed = True
            print(f"{name:<10} FAIL  {type(e).__name__}: {e} ({time.perf_counter() - started:.1f} s)", flush=True)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
