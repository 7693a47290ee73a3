"""Where an actor computes, as the actor itself reports it (the driver's own hardware says nothing: on
KubeRay the driver runs on the head pod, which has no GPU)."""
from __future__ import annotations

from dataclasses import dataclass

import ray


@dataclass(frozen=True)
class DeviceReport:
    """Where an actor computes: its device type and the GPUs it holds, as node:gpu-id strings."""

    device: str  # "cuda", "cpu", …
    gpus: tuple[str, ...] = ()


def held_gpus() -> tuple[str, ...]:
    """The GPUs Ray gave this actor, as node:gpu-id (no CUDA context is created to find out)."""
    context = ray.get_runtime_context()
    return tuple(f"{context.get_node_id()}:{g}" for g in context.get_accelerator_ids().get("GPU", []))
