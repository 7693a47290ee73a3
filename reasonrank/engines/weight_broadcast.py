"""The sending side of the CUDA weight push: learner rank 0 broadcasts every tensor to the vLLM workers.

Protocol (each side's calls block until the other side joins, so the engine side runs in another process
or thread, e.g. a Ray actor's remote call):

    engine:  VLLMEngine.init_broadcast_group(addr, port, rank_offset=1, world_size=1 + workers)
    learner: WeightBroadcaster(addr, port, world_size=1 + workers, device)          # rank 0
    per step:
    engine:  VLLMEngine.update_weights_from_broadcast(weight_specs(state_dict), version)
    learner: broadcaster.broadcast(state_dict.items())

Uses vLLM's stateless group and NCCL communicator, so the learner's own torch.distributed world is left
untouched. CUDA only; on CPU push safetensors bytes or a saved folder with `VLLMEngine.update_weights`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def weight_specs(state_dict: Mapping[str, Any]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype name, shape) per tensor, in the order `broadcast` sends them."""
    return [(name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in state_dict.items()]


class WeightBroadcaster:
    """Rank 0 of the learner-to-engines NCCL group."""

    def __init__(self, master_address: str, master_port: int, world_size: int, device: Any):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the NCCL weight broadcast needs CUDA")
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        self.device = torch.device(device)
        group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=0, world_size=world_size)
        self._communicator = PyNcclCommunicator(group, device=self.device)

    def close(self) -> None:
        """Release the communicator (an abort: safe when other members are already gone)."""
        self._communicator.destroy()

    def broadcast(self, named_tensors: Iterable[tuple[str, Any]]) -> int:
        """Send each tensor (in `weight_specs` order); returns how many were sent."""
        import torch

        sent = 0
        stream = torch.cuda.current_stream(self.device)
        for _, tensor in named_tensors:
            self._communicator.broadcast(tensor.detach().to(self.device).contiguous(), src=0, stream=stream)
            sent += 1
        stream.synchronize()
        return sent
