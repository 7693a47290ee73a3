"""The learner group: one Ray actor per DeepSpeed data-parallel rank, together one ZeRO process group
(gloo on CPUs, NCCL on GPUs), in a STRICT_PACK placement group (one node) apart from the rollout engines.

    driver ──train_step(shard_r, ref_logprobs_r)──▶ Learner rank r   (r = 0 … N-1, one process group)
            ◀── loss / KL / clip / grad-norm stats ──   forward → GRPO loss → backward → ZeRO step

Each rank trains on its interleaved share of the step's rollouts: micro-batches of `micro_batch_size`
responses, `grad_accum` of them per optimizer step, `updates_per_step` optimizer steps per rollout batch
(more than one makes the PPO ratio and its clipping bite). DeepSpeed averages the micro-batch losses and the
ranks' gradients; "token-mean" divides each micro-batch's token sum by the update's response tokens on all
ranks (one all-reduce) over that count of micro-batches, so it is the mean over the update's tokens, as
verl's token-mean is. The reference policy is colocated in every rank
or, with `reference="actor"`, its log-probabilities come from `actors/reference.py` with the shard.
Model loading, the ZeRO config, checkpoints and the Hugging Face export are the shared training code in
`reasonrank/training/`, the same the SFT job uses.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors import sharding
from actors.devices import DeviceReport, held_gpus
from reasonrank import storage
from reasonrank.ports import free_port
from reasonrank.engines.weight_broadcast import WeightBroadcaster
from reasonrank.rl.batch import TokenBatch, engine_logprob_gap, pack, pad_right, response_logits, token_logprobs
from reasonrank.rl.losses import GRPOLoss
from reasonrank.rl.reference import ReferencePolicy
from reasonrank.rl.rollout import Rollout
from reasonrank.training.checkpoint import load_training_state, save_training_state
from reasonrank.training.config import DeepSpeedConfig, ModelConfig, OptimizerConfig
from reasonrank.training.staging import staged


@dataclass(frozen=True)
class LearnerSpec:
    """Everything a learner rank needs to build itself (sent to each actor)."""

    model: ModelConfig
    deepspeed: DeepSpeedConfig
    optimizer: OptimizerConfig
    loss: GRPOLoss
    micro_batch_size: int  # responses per forward/backward
    grad_accum: int  # micro-batches per optimizer step, per rank
    updates_per_step: int  # optimizer steps per rollout batch
    total_updates: int  # optimizer steps the LR schedule spans
    temperature: float  # the rollouts' sampling temperature (log-probabilities are taken at it)
    pad_id: int
    reference: Literal["colocated", "actor", "none"] = "colocated"
    reference_offload: bool = False
    staging_dir: str | None = None  # where checkpoints for object storage are staged (None: the data volume)


class Learner:
    """One rank; `LearnerGroup` runs it as a Ray actor."""

    def __init__(self, spec: LearnerSpec, rank: int, world_size: int):
        self.spec, self.rank, self.world_size = spec, rank, world_size
        self.engine = self.reference = None
        self.broadcaster: WeightBroadcaster | None = None  # rank 0's end of the NCCL weight group, while open

    def device_report(self) -> DeviceReport:
        """Where this rank trains (what the weight sync's backend is chosen from)."""
        return DeviceReport(torch.device(self.engine.device).type, held_gpus())

    def address(self) -> tuple[str, int]:
        """Where rank 0 hosts the process group's rendezvous."""
        return ray.util.get_node_ip_address(), free_port("")

    def setup(self, master_addr: str, master_port: int) -> None:
        import deepspeed

        from reasonrank.training.deepspeed_engine import build_deepspeed_engine, load_causal_lm
        from reasonrank.training.zero_config import build_ds_config

        spec = self.spec = dataclasses.replace(self.spec, model=self.spec.model.model_copy(
            update={"path": storage.local_dir(self.spec.model.path)}))
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")  # each actor sees its own device(s)
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        ds_config = build_ds_config(spec.deepspeed, spec.optimizer, micro_batch_size=spec.micro_batch_size,
                                    grad_accum=spec.grad_accum, world_size=self.world_size)
        self._loaded = load_causal_lm(spec.model, ds_config)  # ZeRO-3 keeps its config alive through it
        self.engine = build_deepspeed_engine(self._loaded.model, ds_config, spec.optimizer, spec.total_updates)
        if spec.reference == "colocated":
            self.reference = self._colocated_reference(ds_config)

    def _colocated_reference(self, ds_config: dict[str, Any]) -> ReferencePolicy:
        """Under ZeRO-3 a ZeRO-3 inference engine (this rank holds a shard; DeepSpeed offloads it to the CPU
        when asked); otherwise a plain copy on this rank's device."""
        import deepspeed

        from reasonrank.training.deepspeed_engine import load_causal_lm

        spec = self.spec
        if ds_config["zero_optimization"]["stage"] != 3:
            dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
            return ReferencePolicy.load(spec.model.path, dtype, str(self.engine.device), spec.reference_offload)
        zero = {"stage": 3, "stage3_param_persistence_threshold": ds_config["zero_optimization"].get(
            "stage3_param_persistence_threshold", 0)}
        if spec.reference_offload:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        ref_config = {k: v for k, v in ds_config.items() if k != "optimizer"} | {"zero_optimization": zero}
        self._reference_loaded = load_causal_lm(ModelConfig(path=spec.model.path), ref_config)  # sharded as it loads
        model = self._reference_loaded.model.eval().requires_grad_(False)
        engine, *_ = deepspeed.initialize(model=model, config=ref_config)
        return ReferencePolicy(engine, engine.device)

    def train_step(self, shard: list[Rollout], ref_logprobs: list[list[float]] | None = None) -> dict[str, float]:
        """One rollout batch's updates on this rank's shard; returns the mean of each statistic."""
        spec, engine = self.spec, self.engine
        per_update = spec.micro_batch_size * spec.grad_accum
        if len(shard) != per_update * spec.updates_per_step:
            raise ValueError(f"rank {self.rank} got {len(shard)} rollouts, expected "
                             f"{per_update * spec.updates_per_step} (micro batch × grad accum × updates)")
        engine.train()
        micro = []
        for lo in range(0, len(shard), spec.micro_batch_size):
            part = shard[lo: lo + spec.micro_batch_size]
            batch = pack([r.prompt_ids for r in part], [r.response_ids for r in part], spec.pad_id)
            micro.append((part, batch, lo))
        tokens = self._token_mean_denominators([batch for _, batch, _ in micro])
        # Training-inference mismatch: the engine's logprobs against the learner's, same weights and tokens.
        gaps: list[float] = []
        old = None
        if spec.updates_per_step > 1:  # the ratio's denominator: the weights that sampled, before any update
            old = []
            with torch.no_grad():
                for part, batch, _ in micro:
                    logits = response_logits(engine, batch.to(engine.device))
                    old.append(token_logprobs(logits, batch.response_ids.to(engine.device), spec.temperature).cpu())
                    gaps.append(engine_logprob_gap(logits, batch, _engine_logprobs(part, batch.response_len)))
        per_micro: list[dict[str, float]] = []
        for i, (part, batch, lo) in enumerate(micro):
            width = batch.response_len
            if self.reference is not None:
                ref = self.reference.logprobs(batch, spec.temperature)
            elif ref_logprobs is not None:
                ref = pad_right(ref_logprobs[lo: lo + len(part)], width)
            else:
                ref = None
            on_device = batch.to(engine.device)
            logits = response_logits(engine, on_device)
            logprobs = token_logprobs(logits, on_device.response_ids, spec.temperature)
            if old is None:
                gaps.append(engine_logprob_gap(logits, batch, _engine_logprobs(part, width)))
            old_i = old[i].to(engine.device) if old is not None else logprobs.detach()
            advantages = torch.tensor([r.advantage for r in part], device=engine.device)
            behaviour = _engine_logprobs(part, width).to(engine.device) if spec.loss.is_cap is not None else None
            loss, stats = spec.loss(logprobs, old_i, None if ref is None else ref.to(engine.device), advantages,
                                    on_device.response_mask, tokens=tokens[i // spec.grad_accum],
                                    behaviour_logprobs=behaviour)
            engine.backward(loss)
            engine.step()
            mask = batch.response_mask
            current = old_i.detach().cpu()
            stats["logprob_diff"] = gaps[i]
            # how far the policy has moved from the reference, in the same units
            if ref is not None:
                stats["ref_logprob_diff"] = _masked_mean((ref.cpu() - current).abs(), mask)
            per_micro.append(stats)
        return combine_stats(per_micro) | {"grad_norm": float(engine.get_global_grad_norm() or 0.0),
                                           "lr": engine.get_lr()[0]}

    def _token_mean_denominators(self, batches: Sequence[TokenBatch]) -> list[float]:
        """Per optimizer update, the response tokens of all its micro-batches on all ranks, divided by the
        micro-batches DeepSpeed averages over (grad_accum per rank × ranks): with it each micro-batch's token
        sum makes token_mean the mean over the update's tokens, not a mean of per-micro-batch means."""
        import torch.distributed as dist

        spec = self.spec
        counts = torch.zeros(spec.updates_per_step, dtype=torch.float64, device=self.engine.device)
        for i, batch in enumerate(batches):
            counts[i // spec.grad_accum] += float(batch.response_mask.sum())
        if dist.is_initialized():
            dist.all_reduce(counts)  # on the engine's device: NCCL reduces CUDA tensors only
        return (counts / (spec.grad_accum * self.world_size)).tolist()

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The full weights on rank 0 (ZeRO-3 gathers them: every rank must call), None elsewhere."""
        state = {name: t.detach().cpu().clone() for name, t in full_parameters(self) if self.rank == 0}
        return state if self.rank == 0 else None

    def save(self, path: str, trainer_state: dict[str, Any]) -> None:
        """Model, optimizer, schedule and RNGs of this rank (collective) under `path` (folder or URI)."""
        with staged(path, self.rank, self.spec.staging_dir, upload=True) as local:
            save_training_state(self.engine, local, trainer_state)

    def load(self, path: str) -> dict[str, Any]:
        """Fetches only the files this rank reads (see `reasonrank.training.staging`)."""
        with staged(path, self.rank, self.spec.staging_dir, download=True) as local:
            return load_training_state(self.engine, local)

    def export(self, out: str) -> None:
        """The policy as a Hugging Face folder at `out` (with the starting model's tokenizer)."""
        from transformers import AutoTokenizer

        from reasonrank.training.export import export_hf

        export_hf(self.engine, AutoTokenizer.from_pretrained(self.spec.model.path), out)

    # --- the NCCL weight push (actors/weight_sync.py): rank 0 broadcasts, every rank takes part in the gathers

    def parameter_specs(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, dtype, full shape) of what `full_parameters` yields, without gathering anything."""
        zero3 = self.engine.zero_optimization_partition_weights()
        return [(name, str(p.dtype).removeprefix("torch."), tuple(p.ds_shape if zero3 else p.shape))
                for name, p in self.engine.module.named_parameters()]

    def open_weight_broadcast(self, master_address: str, master_port: int, world_size: int) -> None:
        """Rank 0 leads a new NCCL weight group with the engines' workers (any open one is released first)."""
        self.close_weight_broadcast()
        if self.rank == 0:
            self.broadcaster = WeightBroadcaster(master_address, master_port, world_size, self.engine.device)

    def broadcast_weights(self) -> int:
        """Every parameter in `parameter_specs` order, broadcast by rank 0 (all ranks call: ZeRO-3 gathers
        each parameter collectively); returns how many rank 0 sent."""
        sent = 0
        for name, tensor in full_parameters(self):
            if self.rank == 0:
                sent += self.broadcaster.broadcast([(name, tensor)])
        return sent

    def close_weight_broadcast(self) -> None:
        if self.broadcaster is not None:
            self.broadcaster.close()
            self.broadcaster = None


def full_parameters(learner: Learner) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) of every parameter, on rank 0, in a fixed order. Under ZeRO-3 every rank must
    iterate together: materialising each parameter is a collective gather. Tied weights appear once."""
    import deepspeed

    engine = learner.engine
    zero3 = engine.zero_optimization_partition_weights()
    for name, param in engine.module.named_parameters():
        if zero3:
            with deepspeed.zero.GatheredParameters([param]):
                yield name, param.data
        elif learner.rank == 0:
            yield name, param.data


def combine_stats(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-micro-batch (or per-rank) statistics as one: the largest of each `*_max`, the mean of the rest."""
    return {k: max(p[k] for p in parts) if k.endswith("_max") else sum(p[k] for p in parts) / len(parts)
            for k in parts[0]}


def _engine_logprobs(part: Sequence[Rollout], width: int) -> torch.Tensor:
    return pad_right([r.rollout_logprobs for r in part], width)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return (values * mask).sum().item() / mask.sum().clamp(min=1).item()


class LearnerGroup:
    """The driver's handle on the N learner ranks: builds them, splits work, gathers statistics."""

    def __init__(self, spec: LearnerSpec, replicas: int, num_cpus: float, num_gpus: float,
                 node_labels: dict[str, str] | None = None):
        """All ranks on one node (STRICT_PACK: a ZeRO-3 group split over pods would all-gather over TCP), on a
        node carrying `node_labels` when given (the learner role of the cluster manifests)."""
        bundle = {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus else {})}
        self.placement = placement_group([bundle] * replicas, strategy="STRICT_PACK",
                                         bundle_label_selector=[dict(node_labels)] * replicas if node_labels else None)
        ray.get(self.placement.ready())
        self.actors = [
            ray.remote(Learner).options(num_cpus=num_cpus, num_gpus=num_gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(
                self.placement, placement_group_bundle_index=r)).remote(spec, r, replicas)
            for r in range(replicas)]
        addr, port = ray.get(self.actors[0].address.remote())
        self._setup = [a.setup.remote(addr, port) for a in self.actors]

    def ready(self) -> list[ray.ObjectRef]:
        """References that resolve once every rank has its DeepSpeed engine (and reference model)."""
        return self._setup

    def __len__(self) -> int:
        return len(self.actors)

    def train_step(self, rollouts: Sequence[Rollout], ref_logprobs: Sequence[list[float]] | None = None
                   ) -> dict[str, float]:
        """Each rank trains on its share of the rollouts, decided by their (group, index) keys, so every group is
        spread over the ranks whatever order the rollouts arrive in; stats averaged over ranks."""
        n = len(self.actors)
        reference = [None] * len(rollouts) if ref_logprobs is None else list(ref_logprobs)
        shares = sharding.by_key(list(zip(rollouts, reference, strict=True)), n, key=lambda pair: pair[0].key)
        refs = [a.train_step.remote([r for r, _ in share], None if ref_logprobs is None else [lp for _, lp in share])
                for a, share in zip(self.actors, shares)]
        return combine_stats(ray.get(refs))

    def full_state_dict(self) -> ray.ObjectRef:
        """An object-store reference to rank 0's full weights (the driver owns it, so it outlives the call)."""
        refs = [a.full_state_dict.remote() for a in self.actors]
        ray.get(refs[1:])
        return refs[0]

    def save(self, path: str, trainer_state: dict[str, Any]) -> None:
        ray.get([a.save.remote(path, trainer_state) for a in self.actors])

    def load(self, path: str) -> dict[str, Any]:
        return ray.get([a.load.remote(path) for a in self.actors])[0]

    def export(self, out: str) -> None:
        ray.get([a.export.remote(out) for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        remove_placement_group(self.placement)
