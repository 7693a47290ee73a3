"""Loading a DeepSpeed checkpoint at another world size (an elastic run that lost or regained workers).

ZeRO stages 1-3 save the optimizer state (and at stage 3 the weights) as one partition per rank, and
DeepSpeed 0.19 refuses to load those at another data-parallel size. Its universal checkpoint format is
world-size independent: `deepspeed.checkpoint.ds_to_universal` merges the partitions into one file per
parameter (fp32 weights, Adam moments, step) and an engine built with `checkpoint.load_universal` re-partitions
them for its own ranks. It works on gloo/CPU for stages 1-3, keeps the trainer's client state, and needs no
change to how checkpoints are saved, so runs that never resize pay nothing. Stage 0 needs no conversion:
the optimizer state is replicated, saved once, and loads at any world size.
"""
from __future__ import annotations

import logging
import os
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist

from reasonrank import storage
from reasonrank.training.checkpoint import TAG
from reasonrank.training.staging import staged

log = logging.getLogger(__name__)


def needs_conversion(saved_world_size: int, world_size: int, zero_stage: int) -> bool:
    return saved_world_size != world_size and zero_stage >= 1


def to_universal(checkpoint_dir: str, output_dir: str) -> None:
    """Convert the local checkpoint folder `checkpoint_dir` (every rank's files) into a universal one."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    # one process: ds_to_universal's worker pools would fork inside a training worker
    # inject_missing_state: the universal_checkpoint_info a Megatron client would save (none for plain data parallel)
    ds_to_universal(Namespace(input_folder=os.path.join(checkpoint_dir, TAG),
                              output_folder=os.path.join(output_dir, TAG), num_extract_workers=1, num_merge_workers=1,
                              keep_temp_folder=False, strict=True, inject_missing_state=True))


@contextmanager
def universal_copy(checkpoint: str, run_dir: str, rank: int, staging_dir: str | None) -> Iterator[str]:
    """The universal conversion of the stored checkpoint folder `checkpoint`, under `<run_dir>/universal/`.

    Rank 0 converts (fetching every rank's files) while the others wait; the copy is removed once every rank
    has left the block (loaded it)."""
    target = storage.join(run_dir, "universal", os.path.basename(checkpoint.rstrip("/")))
    if rank == 0:
        log.info("converting %s to a universal checkpoint for a new world size", checkpoint)
        with staged(checkpoint, None, staging_dir, download=True) as source, \
                staged(target, None, staging_dir, upload=True) as output:
            to_universal(source, output)
    dist.barrier()
    try:
        yield target
    finally:
        dist.barrier()
        if rank == 0:
            fs, root = storage.filesystem(target)
            fs.rm(root, recursive=True)
