"""The CUDA weight push: learner rank 0 broadcasts every tensor to the vLLM workers (the sending side here,
the receiving side in `vllm_worker_extension`; both open their member of the group with `nccl_communicator`).

Protocol (each side's calls block until the other side joins, so the engine side runs in another process
or thread, e.g. a Ray actor's remote call):

    engine:  VLLMEngine.init_broadcast_group(addr, port, rank_offset=1, world_size=1 + workers)
    learner: WeightBroadcaster(addr, port, world_size=1 + workers, device)          # rank 0
    per step:
    engine:  VLLMEngine.update_weights_from_broadcast(weight_specs(state_dict), version)
    learner: broadcaster.broadcast(state_dict.items())

Uses vLLM's stateless group and NCCL communicator, so the learner's own torch.distributed world is left
untouched. CUDA only; on CPU push a state dict (sent in pieces) or a saved folder with
`VLLMEngine.update_weights`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def nccl_communicator(master_address: str, master_port: int, rank: int, world_size: int, device: Any) -> Any:
    """This process's member of the weight group: vLLM's NCCL communicator on a stateless group.

    vLLM's communicator disables itself, silently, when libnccl cannot be loaded (or VLLM_DISABLE_PYNCCL is
    set): every broadcast would then return at once having sent nothing, and the peers wait forever. A
    disabled one is refused here, naming why, before anything is broadcast.
    """
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank, world_size=world_size)
    communicator = PyNcclCommunicator(group, device=device)
    if not communicator.available or communicator.disabled:
        raise RuntimeError(f"the NCCL weight group cannot work: rank {rank} of {world_size}'s NCCL communicator is "
                           f"disabled ({_why_nccl_is_disabled(world_size)}); its broadcasts would send nothing")
    return communicator


def _why_nccl_is_disabled(world_size: int) -> str:
    """vLLM's reasons to disable its NCCL communicator (it logs them at most, and returns no error)."""
    import vllm.envs as envs
    from vllm.distributed.device_communicators.pynccl_wrapper import NCCLLibrary

    if world_size == 1:
        return "a group of one member"
    if envs.VLLM_DISABLE_PYNCCL:
        return "VLLM_DISABLE_PYNCCL is set"
    try:
        NCCLLibrary()
    except Exception as e:
        return (f"libnccl could not be loaded: {e}; install the NCCL build torch was built with, or point "
                f"VLLM_NCCL_SO_PATH at it")
    return "vLLM gave no reason"


def weight_specs(state_dict: Mapping[str, Any]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype name, shape) per tensor, in the order `broadcast` sends them."""
    return [(name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in state_dict.items()]


class WeightBroadcaster:
    """Rank 0 of the learner-to-engines NCCL group."""

    def __init__(self, master_address: str, master_port: int, world_size: int, device: Any):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the NCCL weight broadcast needs CUDA")
        self.device = torch.device(device)
        self._communicator = nccl_communicator(master_address, master_port, 0, world_size, self.device)

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
