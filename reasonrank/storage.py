"""Storage paths that are local folders or s3:// / gs:// URIs, through fsspec.

Checkpoints, datasets and job outputs live under such a path so that a rerun on new (spot) nodes finds
what the previous attempt wrote and resumes instead of restarting.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, _, (root,) = fsspec.get_fs_token_paths(path)
    return fs, root


def makedirs(path: str) -> None:
    fs, root = filesystem(path)
    fs.makedirs(root, exist_ok=True)


def exists(path: str) -> bool:
    fs, root = filesystem(path)
    return fs.exists(root)


def listdir(path: str) -> list[str]:
    """Names (not paths) of the entries under `path`, sorted; empty when it does not exist."""
    fs, root = filesystem(path)
    if not fs.exists(root):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))


def open_file(path: str, mode: str = "r", encoding: str = "utf-8") -> IO[Any]:
    return fsspec.open(path, mode, encoding=encoding).open()


def write_text_atomic(path: str, text: str) -> None:
    """Write, then rename into place, so a reader (or a resumed job) never sees a half-written file."""
    fs, root = filesystem(path)
    fs.makedirs(root.rsplit("/", 1)[0], exist_ok=True)
    tmp = root + ".tmp"
    with fs.open(tmp, "w") as f:
        f.write(text)
    fs.mv(tmp, root)


def read_jsonl(path: str) -> Iterator[dict[str, Any]]:
    with open_file(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_jsonl_atomic(path: str, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def put_file(local_path: str, path: str) -> None:
    """Copy a local file to `path` (a no-op when `path` is that same local file)."""
    fs, root = filesystem(path)
    fs.makedirs(root.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(local_path, root)


def location(path: str) -> str:
    """Where `path` points, spelled one way: an absolute, link-free local path, or the full URI."""
    fs, root = filesystem(path)
    if is_local(path):
        import os

        return os.path.realpath(root)
    return fs.unstrip_protocol(root)


def same_location(a: str, b: str) -> bool:
    """Whether `a` and `b` name the same file or folder (`data/rl.parquet`, `./data/../data/rl.parquet`, …)."""
    return location(a) == location(b)


@contextmanager
def writing(path: str) -> Iterator[str]:
    """A local file to write what belongs at `path` (a local path or a URI): written in a temporary folder,
    put at `path` when the block ends without an error. For writers that need a local file (plots, TREC)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, path.rstrip("/").rsplit("/", 1)[-1])
        yield local
        put_file(local, path)


def is_local(path: str) -> bool:
    fs, _ = filesystem(path)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


# What says an object changed, by filesystem: s3 (ETag), gcs (generation, md5), azure (etag), others' times.
_VERSION_KEYS = ("ETag", "etag", "generation", "md5Hash", "version_id", "VersionId", "mtime", "LastModified",
                 "last_modified", "updated", "created")


def version(path: str) -> str:
    """A digest of the version of every file under the folder `path` (name, size, ETag or modification time),
    which changes when anything there is written again."""
    import hashlib

    fs, root = filesystem(path)
    found = fs.find(root, detail=True)
    parts = []
    for name, info in sorted(found.items()):
        stamp = next((str(info[k]) for k in _VERSION_KEYS if info.get(k) is not None), "")
        parts.append(f"{name.removeprefix(root)}\t{info.get('size')}\t{stamp}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# The environment variable naming where fetched copies go; the cluster manifests set it to each pod's data
# volume, so that model folders do not fill the container's root filesystem.
CACHE_DIR_ENV = "REASONRANK_CACHE_DIR"

# What AutoTokenizer reads from a model folder: the tokenizer itself (tokenizer.json, tokenizer_config.json,
# a sentencepiece or tiktoken model), its vocabulary and merges, added and special tokens, the chat template,
# and config.json (its model type picks the tokenizer class: Qwen2Tokenizer, not a generic one). No weights.
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "added_tokens.json", "special_tokens_map.json",
                   "chat_template*", "config.json", "*.model", "*.tiktoken")


def cache_root() -> str:
    """Where fetched folders are kept: $REASONRANK_CACHE_DIR when set, else ~/.cache/reasonrank."""
    import os

    return os.environ.get(CACHE_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "reasonrank")


def local_dir(path: str, cache_dir: str | None = None, only: tuple[str, ...] | None = None) -> str:
    """A local folder holding what the folder `path` holds: `path` itself when local; otherwise a copy fetched
    into `cache_dir` (default: `cache_root()`/fetched), keyed by the URI and the version of its files (ETag /
    modification time and size), and reused while they stay the same: a model exported again to the same URI
    is fetched again. For model folders in object storage that transformers and vLLM read from disk.

    `only`: file-name patterns (fnmatch, files at the top of the folder): fetch just those (a copy of its own).
    Processes on one node that ask for the same folder at once fetch it once: the first, holding a file lock,
    fetches into `<copy>.partial` and renames it into place; the others wait on the lock and reuse the copy.
    A fetch that was interrupted (its process killed) leaves a `.partial` folder, never used: the next
    fetch removes it and starts again."""
    import fcntl
    import hashlib
    import os
    import shutil
    from fnmatch import fnmatch

    if is_local(path):
        return path
    cache = cache_dir or os.path.join(cache_root(), "fetched")
    key = f"{path}\n{version(path)}" + (f"\n{sorted(only)}" if only is not None else "")
    target = os.path.join(cache, hashlib.sha256(key.encode()).hexdigest()[:16])
    if os.path.isdir(target):  # appears complete, by rename
        return target
    os.makedirs(cache, exist_ok=True)
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        if os.path.isdir(target):  # fetched by another process while this one waited
            return target
        staging = target + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        fs, root = filesystem(path)
        root = root.rstrip("/")
        names = [name.removeprefix(root + "/") for name in fs.find(root)]
        if only is not None:
            names = [n for n in names if "/" not in n and any(fnmatch(n, pattern) for pattern in only)]
        local = [os.path.join(staging, *n.split("/")) for n in names]
        for folder in {os.path.dirname(f) for f in local} | {staging}:
            os.makedirs(folder, exist_ok=True)
        fs.get([f"{root}/{n}" for n in names], local)
        os.rename(staging, target)
    return target
