"""Model folders in object storage are fetched once per node, into the configured cache, never half-used.

Object storage is what a CPU machine lacks: `RemoteFolderFS` stands for it (s3://, gs://). It is a real fsspec
filesystem serving a local folder under a protocol of its own, which `storage` treats as remote, and it
appends each file it serves to a log, so that fetches are counted across processes.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from reasonrank import storage

PROTOCOL = "remotefolder"
SERVED_LOG = "REMOTE_FOLDER_SERVED_LOG"  # the file each served path is appended to
HOLD_ON = "REMOTE_FOLDER_HOLD_ON"  # a file name whose fetch never ends (a process killed mid-fetch)
SECONDS_PER_FILE = 0.3  # object storage is slow: concurrent fetches overlap


class RemoteFolderFS(LocalFileSystem):
    """Stands for object storage: a local folder as `remotefolder:///path`, logging each file it serves."""

    protocol = (PROTOCOL,)

    def get_file(self, rpath, lpath, **kwargs):
        with open(os.environ[SERVED_LOG], "a") as log:
            log.write(rpath + "\n")
        if os.environ.get(HOLD_ON) == os.path.basename(rpath):
            Path(lpath).write_bytes(b"half")
            time.sleep(3600)
        time.sleep(SECONDS_PER_FILE)
        shutil.copyfile(rpath, lpath)


def _register() -> None:
    fsspec.register_implementation(PROTOCOL, RemoteFolderFS, clobber=True)


def _exported_model(tmp_path: Path) -> Path:
    """A model folder as an export leaves it: weights, config, tokenizer files, a chat template."""
    folder = tmp_path / "bucket" / "model"
    (folder / "extra").mkdir(parents=True)
    files = {"model-00001-of-00002.safetensors": b"w1" * 1000, "model-00002-of-00002.safetensors": b"w2" * 1000,
             "config.json": b'{"model_type": "qwen2"}', "tokenizer.json": b'{"v": "tok"}',
             "tokenizer_config.json": b'{"tokenizer_class": "Qwen2Tokenizer"}', "vocab.json": b"{}",
             "merges.txt": b"#", "chat_template.jinja": b"{{ messages }}", "extra/optimizer.pt": b"o" * 500}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _served(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _fetch(uri: str, barrier, results) -> None:
    """One process on the node (a learner, a rollout worker): wait for the others, then ask for the model."""
    _register()
    barrier.wait()
    results.put(storage.local_dir(uri))


def test_processes_on_one_node_fetch_a_model_once_into_the_configured_cache(tmp_path, monkeypatch):
    _register()
    folder = _exported_model(tmp_path)
    log, cache = tmp_path / "served.log", tmp_path / "data-volume"
    monkeypatch.setenv(SERVED_LOG, str(log))
    monkeypatch.setenv(storage.CACHE_DIR_ENV, str(cache))  # what the manifests set: the pod's data volume
    uri = f"{PROTOCOL}://{folder}"
    assert not storage.is_local(uri)

    context = multiprocessing.get_context("spawn")  # separate interpreters, as Ray's worker processes are
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_fetch, args=(uri, barrier, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    copies = {results.get(timeout=60) for _ in workers}
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    served = _served(log)
    assert sorted(served) == sorted(str(p) for p in folder.rglob("*") if p.is_file())  # each file once
    (copy,) = copies
    assert Path(copy).parent == cache / "fetched"
    assert (Path(copy) / "extra" / "optimizer.pt").read_bytes() == b"o" * 500
    assert (Path(copy) / "model-00002-of-00002.safetensors").read_bytes() == b"w2" * 1000
    assert sorted(p.name for p in (cache / "fetched").iterdir() if not p.name.endswith(".lock")) == [Path(copy).name]


def test_a_fetch_killed_midway_is_never_used_and_its_leftovers_are_removed(tmp_path, monkeypatch):
    _register()
    folder = _exported_model(tmp_path)
    log, cache = tmp_path / "served.log", tmp_path / "data-volume"
    monkeypatch.setenv(SERVED_LOG, str(log))
    monkeypatch.setenv(storage.CACHE_DIR_ENV, str(cache))
    monkeypatch.setenv(HOLD_ON, "tokenizer.json")
    uri = f"{PROTOCOL}://{folder}"

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(1), context.Queue()
    interrupted = context.Process(target=_fetch, args=(uri, barrier, results))
    interrupted.start()
    deadline = time.monotonic() + 120
    while not any(p.endswith("tokenizer.json") for p in _served(log)):
        assert time.monotonic() < deadline and interrupted.is_alive()
        time.sleep(0.1)
    os.kill(interrupted.pid, signal.SIGKILL)  # a preempted pod: no cleanup runs
    interrupted.join()
    (leftover,) = [p for p in (cache / "fetched").iterdir() if not p.name.endswith(".lock")]
    assert (leftover / "tokenizer.json").read_bytes() == b"half"

    monkeypatch.delenv(HOLD_ON)
    copy = Path(storage.local_dir(uri))  # the lock died with its holder: this does not wait
    assert (copy / "tokenizer.json").read_bytes() == b'{"v": "tok"}'
    assert sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == \
        sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert not leftover.exists()  # its disk is reclaimed


def test_a_tokenizer_fetch_copies_no_weights_and_loads_the_same_tokenizer(tmp_path, monkeypatch, tiny_model_dir):
    from transformers import AutoTokenizer

    _register()
    folder = tmp_path / "bucket" / "sft-final"
    shutil.copytree(tiny_model_dir, folder)
    log = tmp_path / "served.log"
    monkeypatch.setenv(SERVED_LOG, str(log))
    monkeypatch.setenv(storage.CACHE_DIR_ENV, str(tmp_path / "data-volume"))
    uri = f"{PROTOCOL}://{folder}"

    copy = Path(storage.local_dir(uri, only=storage.TOKENIZER_FILES))
    fetched = sorted(p.name for p in copy.iterdir())
    assert not [n for n in fetched if n.endswith((".safetensors", ".bin", ".pt"))]
    assert "tokenizer.json" in fetched and "tokenizer_config.json" in fetched
    assert sorted(Path(p).name for p in _served(log)) == fetched

    messages = [{"role": "system", "content": "Rank."}, {"role": "user", "content": "[1] birds [2] fish"}]
    fetched_tokenizer, full = AutoTokenizer.from_pretrained(copy), AutoTokenizer.from_pretrained(folder)
    assert type(fetched_tokenizer) is type(full)  # Qwen2Tokenizer: config.json's model type picks the class
    assert fetched_tokenizer.apply_chat_template(messages, add_generation_prompt=True) == \
        full.apply_chat_template(messages, add_generation_prompt=True)
    assert (fetched_tokenizer.pad_token_id, fetched_tokenizer.eos_token_id) == (full.pad_token_id, full.eos_token_id)

    whole = Path(storage.local_dir(uri))  # the whole folder is a copy of its own, not the tokenizer's
    assert whole != copy and any(p.suffix == ".safetensors" for p in whole.iterdir())
