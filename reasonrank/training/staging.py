"""Where checkpoints bound for (or fetched from) object storage are staged on a node, and what each rank fetches.

A 7B ZeRO-3 checkpoint with its optimizer state is about 100 GB: staged in /tmp it lands on the container's
root filesystem, which is small. Staging goes to `staging_dir` when configured, else under the data volume the
cluster manifests mount on every pod (`/data`) when there is one, else the system's temp folder (laptops).
On resume each rank fetches only the files it reads: everything except the other ranks' own files (their ZeRO
partitions of weights and optimizer state, their RNG states), so N ranks move about one checkpoint between
them instead of N.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from reasonrank import storage

DATA_VOLUME = "/data"  # cluster/manifests: the `data` volume of every Ray pod
_RANK_FILE = re.compile(r"(?:zero_pp_rank_|rng_state_rank)(\d+)")  # DeepSpeed's per-rank files, and ours


def staging_root(configured: str | None = None) -> str:
    """The folder checkpoints are staged in on this node (created if needed)."""
    root = configured or (os.path.join(DATA_VOLUME, "staging") if os.path.isdir(DATA_VOLUME) else tempfile.gettempdir())
    os.makedirs(root, exist_ok=True)
    return root


def rank_reads(name: str, rank: int | None) -> bool:
    """Whether `rank` reads the checkpoint file `name` when it resumes (DeepSpeed without elastic checkpoints
    loads only its own ZeRO partition); rank None reads every file (a conversion to a universal checkpoint)."""
    match = _RANK_FILE.search(os.path.basename(name))
    return rank is None or match is None or int(match.group(1)) == rank


@contextmanager
def staged(path: str, rank: int | None, staging_dir: str | None = None, *, upload: bool = False,
           download: bool = False) -> Iterator[str]:
    """A local folder standing for the checkpoint folder `path`: the path itself when local; otherwise a
    folder in the staging root, filled with the files `rank` reads (`download`) and/or put back to `path`
    after the block (`upload`: each rank puts only the files it wrote), and removed afterwards."""
    if storage.is_local(path):
        yield path
        return
    fs, root = storage.filesystem(path)
    local = tempfile.mkdtemp(prefix="checkpoint-", dir=staging_root(staging_dir))
    try:
        if download:
            root = root.rstrip("/")
            for remote in fs.find(root):
                relative = remote[len(root) + 1:]
                if rank_reads(relative, rank):
                    os.makedirs(os.path.dirname(os.path.join(local, relative)), exist_ok=True)
                    fs.get(remote, os.path.join(local, relative))
        yield local
        if upload:
            fs.put(local + "/", root.rstrip("/") + "/", recursive=True)
    finally:
        shutil.rmtree(local, ignore_errors=True)
