"""A state dict as a stream of bounded byte pieces, for the engine RPC that carries a weight push.

vLLM msgpack-encodes a worker RPC's arguments, and msgpack holds at most 4 GiB in one bytes value (msgspec
refuses more); a 7B model's state dict is about 15 GB. So the tensors' bytes are laid end to end, in
`weight_specs` order, and cut into pieces of at most `piece_bytes` each: small tensors share a piece, and a
tensor larger than a piece (a 7B model's embedding alone is 1.09 GB) is split over consecutive pieces, so
the limit holds whatever the model. The receiver rebuilds each tensor from its (name, dtype, shape) as the
reload asks for it and drops each piece once read, so it holds about one copy of the weights, not two.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

WEIGHT_PIECE_BYTES = 1 << 30  # 1 GiB: well under msgpack's 4 GiB, few enough RPCs for a 7B push (15)


def tensors_sent_once(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict on the CPU, contiguous, each storage once (a tied lm_head is the embedding: sent once,
    under the embedding's name)."""
    seen: set[tuple[int, int]] = set()
    tensors = {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().cpu().contiguous()
    return tensors


def weight_pieces(tensors: Mapping[str, Any], piece_bytes: int = WEIGHT_PIECE_BYTES) -> Iterator[bytearray]:
    """The tensors' bytes in order, in pieces of `piece_bytes` (the last one shorter)."""
    import torch

    if piece_bytes < 1:
        raise ValueError(f"a weight piece must hold at least one byte, got piece_bytes={piece_bytes}")
    piece = bytearray()
    for tensor in tensors.values():
        data = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
        while data:
            take = min(piece_bytes - len(piece), len(data))
            piece += data[:take]
            data = data[take:]
            if len(piece) == piece_bytes:
                yield piece
                piece = bytearray()
    if piece:
        yield piece


def tensors_from_pieces(specs: Sequence[tuple[str, str, tuple[int, ...]]], pieces: deque[bytes]
                        ) -> Iterator[tuple[str, Any]]:
    """(name, tensor) per spec, rebuilt from `pieces` (consumed: each is dropped once read)."""
    import numpy as np
    import torch

    current, offset = memoryview(b""), 0
    for name, dtype_name, shape in specs:
        dtype = getattr(torch, dtype_name)
        nbytes = math.prod(shape) * dtype.itemsize
        out = torch.empty(nbytes, dtype=torch.uint8)
        filled, target = 0, out.numpy()
        while filled < nbytes:
            if offset == len(current):
                if not pieces:
                    raise ValueError(f"the weight pieces ended inside {name} ({filled} of its {nbytes} bytes)")
                current, offset = memoryview(pieces.popleft()), 0
            take = min(nbytes - filled, len(current) - offset)
            target[filled: filled + take] = np.frombuffer(current, np.uint8, take, offset)
            filled, offset = filled + take, offset + take
        yield name, out.view(dtype).reshape(shape)
    extra = len(current) - offset + sum(len(p) for p in pieces)
    if extra:
        raise ValueError(f"the weight pieces carry {extra} bytes more than the {len(specs)} tensors they announce")
