"""The memory run: one SFT step and one GRPO update at the paper's lengths on a Qwen2.5-7B-shaped model cut to
2 and 4 layers, extrapolated to its 28 layers, and the padded GRPO batch's log-probabilities checked against
each rollout alone. Random bf16 weights, nothing downloaded; one H100 in a few minutes.

    bench/gpu_memory.sh               (installs the wheels it needs, then runs this; docs/gpu-memory.md)
    python bench/gpu_memory.py --device cpu --dtype float32 --hidden 64 ...   (toy sizes, no GPU)

The model is set up for training as the GPU configs say (configs/sft-qwen2.5-7b.yaml and
configs/grpo-qwen2.5-7b.yaml: attention backend, gradient checkpointing) through the project's own set-up,
and the step and the update go through the project's code: the SFT loop (`sft_steps`: collate, the model's
loss on the assistant tokens) and the learner's log-probabilities and GRPO loss (`pack`, `response_logits`,
`token_logprobs`, `engine_logprob_gap`, `GRPOLoss`). DeepSpeed is not used: the model is whole on one GPU,
without an optimizer; the ZeRO-3 share per GPU is then worked out from the measured peak (see `zero3_per_gpu`).
Exit status: 0 when every check that ran passed, 1 when one failed.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reasonrank.rl.batch import (  # noqa: E402
    TokenBatch, engine_logprob_gap, pack, response_logits, response_logprobs, token_logprobs)
from reasonrank.rl.losses import GRPOLoss  # noqa: E402
from reasonrank.training.config import DeepSpeedConfig, ModelConfig  # noqa: E402

GB = 1e9  # memory is reported in GB of 10^9 bytes, the unit of "80 GB"
ADAM_BYTES_PER_PARAM = 12  # fp32 master weights + AdamW's two fp32 moments: DeepSpeed's optimizer state
# max |padded − alone| log-probability allowed. bf16 keeps 8 bits of mantissa: a log-probability near
# ln(152064) ≈ 12 moves by 0.05 a rounding, and the padded and the lone forward round differently (other kernels,
# other shapes). Attending to the pads moves it by about 1.6 (the control row), so the two stay far apart.
TOLERANCE = {"bfloat16": 0.25, "float32": 1e-4}


@dataclass(frozen=True)
class TrainingProfile:
    """What a GPU config says about one stage's training step."""

    model: ModelConfig  # attention backend and gradient checkpointing
    deepspeed: DeepSpeedConfig
    ranks: int  # data-parallel ranks the ZeRO-3 state is sharded over


@dataclass(frozen=True)
class GRPOProfile(TrainingProfile):
    loss: GRPOLoss = GRPOLoss()
    temperature: float = 1.0
    micro_batch_size: int = 2


def read_profiles(sft_yaml: Path, grpo_yaml: Path) -> tuple[TrainingProfile, GRPOProfile]:
    """The SFT and GRPO learner settings of the GPU configs (the GRPO job's config model imports Ray, which this
    run does without, so its learner section is read into the shared config parts)."""
    import yaml

    from jobs.sft_config import SFTConfig
    from reasonrank.config import load_config

    sft = load_config(sft_yaml, SFTConfig)
    raw = yaml.safe_load(grpo_yaml.read_text())
    learner, algorithm = raw["learner"], raw["algorithm"]
    return (TrainingProfile(sft.model, sft.deepspeed, max(sft.scaling.world_sizes)),
            GRPOProfile(ModelConfig(path=raw["model"], attn_implementation=learner.get("attn_implementation"),
                                    gradient_checkpointing=learner.get("gradient_checkpointing", False)),
                        DeepSpeedConfig(**learner.get("deepspeed", {})), learner["replicas"],
                        GRPOLoss(clip_eps=algorithm["clip_eps"], kl_coef=algorithm["kl_coef"],
                                 kl_estimator=algorithm["kl_estimator"], aggregation=algorithm["loss_aggregation"]),
                        raw["rollout"]["temperature"], learner["micro_batch_size"]))


@dataclass(frozen=True)
class ModelShape:
    hidden: int = 3584  # Qwen2.5-7B(-Instruct)'s config.json
    intermediate: int = 18944
    heads: int = 28
    kv_heads: int = 4
    vocab: int = 152064
    layers: int = 28


def build_model(shape: ModelShape, layers: int, model_cfg: ModelConfig, dtype: torch.dtype,
                device: torch.device, seed: int = 0) -> torch.nn.Module:
    """Random weights in `shape` cut to `layers`, set up for training by the project's `configure_for_training`."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from reasonrank.training.deepspeed_engine import configure_for_training

    config = Qwen2Config(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False, use_sliding_window=False)
    torch.manual_seed(seed)
    kwargs = {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}
    with device:  # initialised where it runs: seconds on a GPU for a few billion parameters
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    model.eval()  # as from_pretrained hands a model over: the training set-up must switch it to training mode
    return configure_for_training(model, model_cfg)


class WholeModelEngine:
    """What the SFT loop and the learner drive (a DeepSpeed engine) for a model whole on one device, without an
    optimizer: the forward, `loss.backward()`, and a step that frees the gradients."""

    def __init__(self, model: torch.nn.Module):
        self.module = model
        self.device = next(model.parameters()).device

    def __call__(self, **inputs):
        return self.module(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        self.module.zero_grad(set_to_none=True)

    def get_lr(self) -> list[float]:
        return [0.0]


def random_ids(n: int, vocab: int, generator: torch.Generator) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=generator).tolist()


def sft_step(engine: WholeModelEngine, tokens: int, trained: int, vocab: int, pad_id: int, seed: int = 1) -> float:
    """One SFT step on one row of `tokens` tokens whose last `trained` carry the loss (the assistant turn)."""
    import numpy as np

    from reasonrank.training.sft_loop import MicroBatch, TrainPlan, TrainState, sft_steps

    row = random_ids(tokens, vocab, torch.Generator().manual_seed(seed))
    mask = np.zeros(tokens, dtype=np.int8)
    mask[tokens - trained:] = 1
    micro = MicroBatch(["row"], [row], [mask])
    (record,) = sft_steps(engine, TrainPlan(1, 1, 1, 1), TrainState(), lambda epoch, step: [micro], pad_id)
    return record["loss"]


def rollouts(prompts: Sequence[int], responses: Sequence[int], vocab: int,
             seed: int = 2) -> tuple[list[list[int]], list[list[int]]]:
    generator = torch.Generator().manual_seed(seed)
    return [random_ids(n, vocab, generator) for n in prompts], [random_ids(n, vocab, generator) for n in responses]


def grpo_update(engine: WholeModelEngine, batch: TokenBatch, profile: GRPOProfile) -> float:
    """One micro-batch of the learner's update: its forward, mismatch statistic, GRPO loss and backward."""
    on_device = batch.to(engine.device)
    logits = response_logits(engine, on_device)
    logprobs = token_logprobs(logits, on_device.response_ids, profile.temperature)
    engine_logprob_gap(logits, batch, logprobs.detach().cpu())  # the learner takes it on every micro-batch
    advantages = torch.linspace(1.0, -1.0, len(batch), device=engine.device)
    loss, stats = profile.loss(logprobs, logprobs.detach(), logprobs.detach() - 0.01, advantages,
                               on_device.response_mask, tokens=float(batch.response_mask.sum()))
    engine.backward(loss)
    engine.step()
    return stats["loss"]


@dataclass(frozen=True)
class RowGap:
    prompt: int
    response: int
    left_pad: int
    max_abs: float
    mean_abs: float

    def passed(self, tolerance: float) -> bool:
        return self.max_abs <= tolerance


@torch.no_grad()
def padded_vs_alone(model: torch.nn.Module, batch: TokenBatch, prompts: Sequence[Sequence[int]],
                    responses: Sequence[Sequence[int]], pad_id: int) -> list[RowGap]:
    """|log-probability in `batch` − the same rollout packed alone| over each row's response tokens.

    `batch` is the rollouts packed together (left-padded prompts, right-padded responses); a row's
    log-probabilities must not depend on what it was packed with."""
    device = next(model.parameters()).device
    padded = response_logprobs(model, batch.to(device)).cpu()
    prompt_width = batch.input_ids.shape[1] - batch.response_len
    gaps = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        alone = response_logprobs(model, pack([prompt], [response], pad_id).to(device)).cpu()[0]
        diff = (padded[i, : len(response)] - alone[: len(response)]).abs()
        gaps.append(RowGap(len(prompt), len(response), prompt_width - len(prompt), float(diff.max()),
                           float(diff.mean())))
    return gaps


def without_attention_mask(batch: TokenBatch) -> TokenBatch:
    """`batch` with its pads attended to: the mistake the batch's attention mask guards against (a constant
    shift of a row's position ids is no mistake for rotary embeddings, which see only relative positions)."""
    return dataclasses.replace(batch, attention_mask=torch.ones_like(batch.attention_mask))


@dataclass(frozen=True)
class Extrapolation:
    """A quantity linear in the layer count: base + layers × per_layer."""

    base: float
    per_layer: float

    def at(self, layers: int) -> float:
        return self.base + layers * self.per_layer


def extrapolate(small: tuple[int, float], large: tuple[int, float]) -> Extrapolation:
    """From (layers, value) at two layer counts: per layer = difference / layer difference."""
    (layers_small, small_value), (layers_large, large_value) = small, large
    per_layer = (large_value - small_value) / (layers_large - layers_small)
    return Extrapolation(small_value - layers_small * per_layer, per_layer)


def zero3_per_gpu(whole_peak: float, params: float, gathered_params: float, weight_bytes: int,
                  ranks: int, deepspeed: DeepSpeedConfig) -> float:
    """The measured whole-model peak as ZeRO-3 over `ranks` GPUs would hold it, an upper bound:

    weights: 1/ranks of them kept (none when offloaded), plus `gathered_params` gathered for the layer at work;
    gradients: left as measured, whole (ZeRO-3 keeps 1/ranks of them: the bound's slack);
    optimizer: fp32 master weights and AdamW moments, 12 bytes a parameter / ranks (none when offloaded).
    """
    weights = params * weight_bytes
    kept = 0.0 if deepspeed.offload_params else weights / ranks
    optimizer = 0.0 if deepspeed.offload_optimizer else ADAM_BYTES_PER_PARAM * params / ranks
    return whole_peak - weights + kept + gathered_params * weight_bytes + optimizer


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    """The most memory tensors held on `device` since `reset_peak`; None where that is not measured (CPUs)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    shape = ModelShape()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(TOLERANCE), default="bfloat16")
    p.add_argument("--tolerance", type=float, help="max |padded − alone| log-probability (default by dtype: "
                   f"{TOLERANCE})")
    p.add_argument("--layers", type=int, nargs=2, default=(2, 4), help="the two layer counts measured")
    p.add_argument("--target-layers", type=int, default=shape.layers)
    for name in ("hidden", "intermediate", "heads", "kv_heads", "vocab"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(shape, name))
    p.add_argument("--sft-tokens", type=int, default=23000, help="the SFT row's tokens (the SFT config's max_seq_len)")
    p.add_argument("--sft-trained", type=int, default=3072, help="of which the assistant turn, trained on")
    p.add_argument("--prompts", type=int, nargs="+", default=(11000, 9000))
    p.add_argument("--responses", type=int, nargs="+", default=(3072, 1500))
    p.add_argument("--budget-gb", type=float, default=80.0, help="one GPU's memory, GB of 10^9 bytes")
    p.add_argument("--sft-config", type=Path, default=REPO / "configs/sft-qwen2.5-7b.yaml")
    p.add_argument("--grpo-config", type=Path, default=REPO / "configs/grpo-qwen2.5-7b.yaml")
    args = p.parse_args(argv)
    if len(args.prompts) != len(args.responses):
        p.error(f"--prompts and --responses need as many values: {args.prompts} vs {args.responses}")
    if args.layers[0] >= args.layers[1]:
        p.error(f"--layers needs two increasing counts, got {args.layers}")
    return args


def _gb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / GB:.2f}"


@dataclass
class Measured:
    peaks: dict[str, list[tuple[int, float | None]]]  # profile → (layers, peak bytes or None)
    params: list[tuple[int, float]]  # (layers, parameters)
    gaps: dict[int, list[RowGap]]  # layers → each row of the packed batch against it alone
    controls: dict[int, list[RowGap]]  # the same with the attention mask dropped


def measure(args: argparse.Namespace, shape: ModelShape, profiles: dict[str, TrainingProfile],
            prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> Measured:
    """At each layer count: a fresh model per profile, its step's peak memory, and (GRPO) the padding check."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    batch = pack(prompts, responses, pad_id)
    out = Measured({name: [] for name in profiles}, [], {}, {})
    for layers in args.layers:
        for name, profile in profiles.items():
            started = time.perf_counter()
            model = build_model(shape, layers, profile.model, dtype, device)
            engine = WholeModelEngine(model)
            reset_peak(device)
            loss = (grpo_update(engine, batch, profile) if isinstance(profile, GRPOProfile)
                    else sft_step(engine, args.sft_tokens, args.sft_trained, shape.vocab, pad_id))
            out.peaks[name].append((layers, peak_bytes(device)))
            checkpointing = "active" if model.training and model.is_gradient_checkpointing else "off"
            print(f"  {layers} layers, {name}: loss {loss:.4f}, gradient checkpointing {checkpointing} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
            if isinstance(profile, GRPOProfile):
                out.params.append((layers, float(sum(p.numel() for p in model.parameters()))))
                out.gaps[layers] = padded_vs_alone(model, batch, prompts, responses, pad_id)
                out.controls[layers] = padded_vs_alone(model, without_attention_mask(batch), prompts, responses,
                                                       pad_id)
            del model, engine
            free(device)
    return out


def _gap_row(layers: int, row: RowGap, verdict: str) -> str:
    return (f"  {layers:>6} {row.prompt:>7} {row.response:>8} {row.left_pad:>8} {row.max_abs:>9.2e} "
            f"{row.mean_abs:>9.2e}  {verdict}")


def print_logprob_checks(measured: Measured, tolerance: float) -> bool:
    """The padded-vs-alone table and its control; True when all passed."""
    passed = True
    print(f"\nlog-probabilities of the padded GRPO batch against each rollout alone (max |Δ| ≤ {tolerance:g}):")
    print(f"  {'layers':>6} {'prompt':>7} {'response':>8} {'left pad':>8} {'max |Δ|':>9} {'mean |Δ|':>9}")
    for layers, rows in measured.gaps.items():
        for row in rows:
            passed &= row.passed(tolerance)
            print(_gap_row(layers, row, "PASS" if row.passed(tolerance) else "FAIL"))
    print("  control, the same batch with its attention mask dropped (pads attended): the check must catch it")
    for layers, rows in measured.controls.items():
        for row in (r for r in rows if r.left_pad):
            passed &= not row.passed(tolerance)
            print(_gap_row(layers, row, "MISSED (the check cannot see it): FAIL" if row.passed(tolerance)
                           else "caught"))
    return passed


def print_memory_table(measured: Measured, shape: ModelShape, profiles: dict[str, TrainingProfile],
                       weight_bytes: int, budget_gb: float) -> bool:
    """Peaks at the two layer counts, extrapolated, and the ZeRO-3 share against the budget; True when all fit
    (or nothing was measured)."""
    count = extrapolate(*measured.params)
    target_params = count.at(shape.layers)
    gathered = shape.vocab * shape.hidden + count.per_layer  # the largest module (an embedding) and one layer
    (small_layers, _), (large_layers, _) = measured.params
    print(f"\npeak memory, GB of 10^9 bytes: measured at {small_layers} and {large_layers} layers, extrapolated to "
          f"{shape.layers} layers ({target_params / 1e9:.2f}B parameters)")
    print(f"  {'':<5} {f'{small_layers} layers':>9} {f'{large_layers} layers':>9} {'per layer':>9} {'base':>7} "
          f"{f'{shape.layers} layers':>10} {'ZeRO-3 per GPU':>20}  vs {budget_gb:g} GB")
    passed = True
    for name, profile in profiles.items():
        (small_layers, small), (large_layers, large) = measured.peaks[name]
        if small is None or large is None:
            cells, verdict = ["n/a"] * 6, "n/a (no GPU memory reading on this device)"
        else:
            fit = extrapolate((small_layers, small), (large_layers, large))
            sharded = zero3_per_gpu(fit.at(shape.layers), target_params, gathered, weight_bytes, profile.ranks,
                                    profile.deepspeed)
            cells = [_gb(small), _gb(large), _gb(fit.per_layer), _gb(fit.base), _gb(fit.at(shape.layers)),
                     f"{_gb(sharded)} on {profile.ranks} GPUs"]
            verdict = "PASS" if sharded <= budget_gb * GB else "FAIL"
            passed &= verdict == "PASS"
        print(f"  {name:<5} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} {cells[3]:>7} {cells[4]:>10} {cells[5]:>20}  "
              f"{verdict}")
    print(f"""
  {shape.layers} layers: the measured peak on one GPU: the whole model's weights and gradients, the activations
    under gradient checkpointing, the logits of the trained tokens; no optimizer state.
  ZeRO-3 per GPU: that peak with the weights sharded over the config's ranks (1/N kept, plus an embedding
    and one layer gathered), the gradients left whole (ZeRO-3 keeps 1/N: an upper bound), plus AdamW's
    fp32 master weights and moments, {ADAM_BYTES_PER_PARAM} bytes a parameter / N (none with offload_optimizer:
    then they are on the CPU).
  Not covered: the colocated GRPO reference (the config offloads it to the CPU between forwards), ZeRO-3's
    communication buckets, NCCL's buffers, the CUDA context (about 0.5 GB), the allocator's fragmentation.""")
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    tolerance = args.tolerance if args.tolerance is not None else TOLERANCE[args.dtype]
    shape = ModelShape(args.hidden, args.intermediate, args.heads, args.kv_heads, args.vocab, args.target_layers)
    sft, grpo = read_profiles(args.sft_config, args.grpo_config)
    pad_id = shape.vocab - 1
    prompts, responses = rollouts(args.prompts, args.responses, shape.vocab)
    width = max(args.prompts) + max(args.responses)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu-memory: {where}, torch {torch.__version__}, {args.dtype}; Qwen2 shape hidden {shape.hidden}, "
          f"intermediate {shape.intermediate}, heads {shape.heads}/{shape.kv_heads} kv, vocab {shape.vocab}, "
          f"random weights")
    print(f"  sft:  attention {sft.model.attn_implementation}, gradient checkpointing "
          f"{'on' if sft.model.gradient_checkpointing else 'off'} (its config); 1 row of {args.sft_tokens} tokens, "
          f"the last {args.sft_trained} trained")
    print(f"  grpo: attention {grpo.model.attn_implementation}, gradient checkpointing "
          f"{'on' if grpo.model.gradient_checkpointing else 'off'} (its config); prompts {list(args.prompts)} "
          f"left-padded, responses {list(args.responses)}: one ({len(prompts)}, {width}) micro-batch "
          f"(the config's learners take {grpo.micro_batch_size})")
    profiles: dict[str, TrainingProfile] = {"sft": sft, "grpo": grpo}
    measured = measure(args, shape, profiles, prompts, responses, pad_id)
    logprobs_ok = print_logprob_checks(measured, tolerance)
    weight_bytes = torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
    memory_ok = print_memory_table(measured, shape, profiles, weight_bytes, args.budget_gb)
    return 0 if logprobs_ok and memory_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
