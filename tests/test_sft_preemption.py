"""The SFT job survives a preempted worker and a killed job, simulated honestly on one machine.

- A worker preemption: a two-node Ray cluster started with `ray start` on this machine (in its own temp dir,
  so no other Ray here sees it). One training worker runs on a "spot" node; that node's processes (raylet,
  workers) are killed outright mid-run, then a replacement node joins, as a spot pool brings a new instance.
- A killed job: the job process (with its embedded Ray) is killed outright, then resubmitted unchanged.
- An elastic run (`scaling.num_workers: [1, 2]`) on three nodes: one training node is killed mid-epoch; the
  run goes on with the worker left (without waiting for the node), and grows back when the node returns.

Both must end with the planned number of steps, resumed from the last checkpoint (not from scratch), and
the steps replayed after the resume must see the same samples and give the same losses as before the
failure: the data order and the training state continue exactly where the checkpoint left them.
Nothing is mocked.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reasonrank.ports import free_port

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
CHECKPOINT_EVERY = 3
STEPS_PER_EPOCH = 5  # 40 samples / 2 workers / (micro-batch 2 x accumulation 2)
EPOCHS = 2

pytestmark = pytest.mark.slow


class LocalRayCluster:
    """Ray nodes started with `ray start --block` on this machine, each in its own process group."""

    def __init__(self):
        # short: Ray's socket paths live under it and must stay under the OS limit
        self.temp_dir = tempfile.mkdtemp(prefix="rr-ray-")
        self.nodes: list[subprocess.Popen] = []
        self.address = ""
        # token authentication with a token of its own, given to every node and to the job
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = Path(self.temp_dir) / f"{name}.log"
        node = subprocess.Popen([RAY, "start", "--block", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                                 *args], stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                env=self.env)
        self.nodes.append(node)
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        return node

    def start_head(self, num_cpus: int, resources: dict[str, float]) -> None:
        port = free_port()
        self._start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                     f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}"], "head")
        self.address = f"127.0.0.1:{port}"
        self.env["RAY_ADDRESS"] = self.address

    def add_node(self, num_cpus: int, resources: dict[str, float], name: str) -> subprocess.Popen:
        return self._start([f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                            f"--resources={json.dumps(resources)}"], name)

    @staticmethod
    def kill(node: subprocess.Popen) -> None:
        """What a reclaimed spot instance does: every process of the node dies at once, without a word."""
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)

    def shutdown(self) -> None:
        for node in reversed(self.nodes):  # worker nodes first, the head last
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sft_set(tmp_path_factory, demo_data, tiny_model_dir):
    """40 demo SFT samples: 5 steps an epoch on 2 workers."""
    from transformers import AutoTokenizer

    from reasonrank.data.tables import write_records
    from reasonrank.prompt import PassageTruncator
    from reasonrank.training.demo_set import demo_sft_samples

    samples = demo_sft_samples(demo_data.load(), truncate=PassageTruncator(
        AutoTokenizer.from_pretrained(tiny_model_dir), 64))[:40]
    path = tmp_path_factory.mktemp("sft-set") / "train.parquet"
    write_records(path, [s.to_record() for s in samples])
    return path


def _job(sft_set: Path, model: Path, out: Path, **overrides: str) -> list[str]:
    sets = {"data.path": sft_set, "data.demo": "null", "model.path": model, "build_tiny_model": "false",
            "train.micro_batch_size": 2, "train.global_batch_size": 8, "train.epochs": EPOCHS,
            "train.checkpoint_every": CHECKPOINT_EVERY, "train.report_every": 1, "scaling.num_workers": 2,
            "storage.path": out / "checkpoints", "storage.name": "run", "output_dir": out / "sft",
            "ray_num_cpus": 4, **overrides}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "jobs.sft", "--config", str(REPO / "configs" / "sft-tiny.yaml"), *args]


def _attempts(out: Path) -> list[list[dict]]:
    """Each attempt's step records, oldest attempt first."""
    logs = sorted((out / "checkpoints" / "run" / "attempts").glob("*.jsonl"))
    return [[json.loads(line) for line in p.read_text().splitlines() if line.strip()] for p in logs]


def _committed_checkpoints(out: Path) -> list[str]:
    snapshot = out / "checkpoints" / "run" / "checkpoint_manager_snapshot.json"
    if not snapshot.exists():
        return []
    text = snapshot.read_text()
    return [d.name for d in (out / "checkpoints" / "run").glob("checkpoint_0*") if d.name in text]


@contextmanager
def _running(cmd: list[str], env: dict, log: Path) -> Iterator[subprocess.Popen]:
    """The job `cmd` running against a local cluster, its output in `log`; killed if still running on exit."""
    with log.open("w") as out:
        job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield job
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()


def _wait_past_a_checkpoint(out: Path, job: subprocess.Popen, timeout: float = 400) -> None:
    """Until a checkpoint is committed and the run has trained at least one step after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, "the job ended before it could be interrupted"
        committed = _committed_checkpoints(out)
        attempts = _attempts(out)
        if committed and attempts and attempts[-1] and attempts[-1][-1]["step"] > CHECKPOINT_EVERY:
            return
        time.sleep(0.2)
    raise AssertionError("no checkpoint was committed in time")


def _assert_resumed_exactly(out: Path) -> None:
    summary = json.loads((out / "sft" / "summary.json").read_text())
    planned = STEPS_PER_EPOCH * EPOCHS
    assert summary["planned_steps"] == summary["steps"] == planned
    history = [json.loads(line) for line in (out / "sft" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == list(range(1, planned + 1))  # every step once, none lost

    first, second = _attempts(out)
    resumed_at = second[0]["step"] - 1
    assert resumed_at > 0 and resumed_at % CHECKPOINT_EVERY == 0, "resumed from a checkpoint, not from scratch"
    assert summary["resumed_from_step"] == resumed_at and summary["attempts"] == 2
    assert first[-1]["step"] >= resumed_at + 1  # the first attempt got past that checkpoint
    replayed = {r["step"]: r for r in first if r["step"] > resumed_at}
    for r in second:
        if r["step"] in replayed:  # the same samples, the same state: the same loss
            assert r["samples"] == replayed[r["step"]]["samples"]
            assert r["loss"] == pytest.approx(replayed[r["step"]]["loss"], rel=1e-4)
    assert second[-1]["step"] == planned

    # the trained order, by epoch: each sample at most once, every step a full global batch
    trained = {r["step"]: r for r in first if r["step"] <= resumed_at} | {r["step"]: r for r in second}
    for epoch in range(EPOCHS):
        ids = [i for s in range(1, planned + 1) if trained[s]["epoch"] == epoch for i in trained[s]["samples"]]
        assert len(ids) == STEPS_PER_EPOCH * 2 * 2 * 2 and len(set(ids)) == len(ids)
    assert (out / "sft" / "final" / "model.safetensors").exists()


def test_a_preempted_worker_resumes_from_the_last_checkpoint(tmp_path, sft_set, tiny_model_dir):
    cluster = LocalRayCluster()
    try:
        # one training slot on the head and one on the spot node: a worker on each
        cluster.start_head(num_cpus=2, resources={"trainer_slot": 1})
        spot = cluster.add_node(num_cpus=1, resources={"trainer_slot": 1}, name="spot")
        # ZeRO-3: every worker holds a shard of the weights, so both shards must come back from the checkpoint
        cmd = _job(sft_set, tiny_model_dir, tmp_path, **{
            "scaling.resources_per_worker": "{CPU: 1, trainer_slot: 1}", "scaling.max_failures": "3",
            "deepspeed.zero_stage": "3"})
        with _running(cmd, cluster.env, tmp_path / "job.log") as job:
            _wait_past_a_checkpoint(tmp_path, job)
            cluster.kill(spot)
            cluster.add_node(num_cpus=1, resources={"trainer_slot": 1}, name="replacement")
            assert job.wait(timeout=600) == 0, (tmp_path / "job.log").read_text()[-4000:]
    finally:
        cluster.shutdown()
    _assert_resumed_exactly(tmp_path)


def test_a_killed_job_resubmitted_unchanged_resumes(tmp_path, sft_set, tiny_model_dir):
    ray_tmp = tempfile.mkdtemp(prefix="rr-job-")  # the embedded Ray's files: finds what outlived the job
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp}
    # LoRA on ZeRO-1: only the adapters train; the export merges them into the base weights
    cmd = _job(sft_set, tiny_model_dir, tmp_path, **{"deepspeed.zero_stage": "1",
                                                      "model.lora": "{r: 8, alpha: 16, dropout: 0.0}"})
    try:
        with (tmp_path / "job-1.log").open("w") as log:
            job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
            try:
                _wait_past_a_checkpoint(tmp_path, job)
            finally:
                os.killpg(job.pid, signal.SIGKILL)  # the whole job, its embedded Ray included
                job.wait()
        _kill_leftovers(ray_tmp)
        with (tmp_path / "job-2.log").open("w") as log:
            rerun = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        assert rerun.returncode == 0, (tmp_path / "job-2.log").read_text()[-4000:]
    finally:
        _kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    _assert_resumed_exactly(tmp_path)
    _assert_merged_lora_export(tmp_path / "sft" / "final", tiny_model_dir)


def _assert_merged_lora_export(exported: Path, base: Path) -> None:
    """A plain model (no adapter weights) whose attention projections moved away from the base model's."""
    import torch
    from safetensors.torch import load_file

    merged, original = load_file(exported / "model.safetensors"), load_file(base / "model.safetensors")
    assert not any("lora" in k for k in merged) and set(original) <= set(merged)
    moved = [k for k in original if "q_proj.weight" in k and not torch.equal(merged[k], original[k])]
    assert moved, "the LoRA updates were not merged into the exported weights"
    assert all(torch.equal(merged[k], original[k]) for k in original if "layernorm" in k)  # untrained by LoRA


def _kill_leftovers(ray_tmp: str) -> None:
    """Ray processes of the killed job that outlived it (found by its private temp dir), killed by pid."""
    found = subprocess.run(["pgrep", "-f", ray_tmp], capture_output=True, text=True).stdout.split()
    for pid in map(int, found):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_paused_run_exports_that_epochs_model_and_a_rerun_continues_its_schedule(tmp_path, sft_set,
                                                                                    tiny_model_dir):
    """`train.pause_after_epochs=1`: the run stops at the end of the first epoch, checkpointed, with that
    model exported to `epoch-1` and the learning rate where the whole run's schedule has it; the same job
    without the pause continues from that checkpoint (not from scratch) and leaves the epoch-1 model alone."""
    import hashlib

    ray_tmp = tempfile.mkdtemp(prefix="rr-job-")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp}
    out = tmp_path / "sft"
    try:
        for i, pause in enumerate(({"train.pause_after_epochs": "1"}, {})):
            with (tmp_path / f"job-{i}.log").open("w") as log:
                job = subprocess.run(_job(sft_set, tiny_model_dir, tmp_path, **pause), cwd=REPO, env=env,
                                     stdout=log, stderr=subprocess.STDOUT, timeout=600)
            assert job.returncode == 0, (tmp_path / f"job-{i}.log").read_text()[-4000:]
            if pause:
                paused = json.loads((out / "summary.json").read_text())
                epoch_one = hashlib.sha256((out / "epoch-1" / "model.safetensors").read_bytes()).hexdigest()
                history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
                assert not (out / "final").exists()
    finally:
        _kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert paused["paused_at_step"] == paused["steps"] == STEPS_PER_EPOCH
    assert paused["planned_steps"] == STEPS_PER_EPOCH * EPOCHS and paused["model"] == str(out / "epoch-1")
    lrs = [r["lr"] for r in history]  # half-way through the whole run's cosine, not at the end of a short one
    assert lrs[-1] > 0.3 * max(lrs)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["paused_at_step"] is None and summary["model"] == str(out / "final")
    assert summary["steps"] == STEPS_PER_EPOCH * EPOCHS and summary["resumed_from_step"] == STEPS_PER_EPOCH
    first, second = _attempts(tmp_path)
    assert [r["step"] for r in first] == list(range(1, STEPS_PER_EPOCH + 1))
    assert [r["step"] for r in second] == list(range(STEPS_PER_EPOCH + 1, STEPS_PER_EPOCH * EPOCHS + 1))
    assert hashlib.sha256((out / "epoch-1" / "model.safetensors").read_bytes()).hexdigest() == epoch_one
    assert (out / "final" / "model.safetensors").read_bytes() != (out / "epoch-1" / "model.safetensors").read_bytes()


def _wait_for(out: Path, job: subprocess.Popen, ready, what: str, timeout: float = 400) -> list[list[dict]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended before {what}"
        if ready(attempts := _attempts(out)):
            return attempts
        time.sleep(0.2)
    raise AssertionError(f"not in time: {what}")


def test_an_elastic_run_goes_on_with_the_workers_left_and_grows_back(tmp_path, sft_set, tiny_model_dir):
    """One worker on each of two training nodes; one node is killed mid-epoch. The run restarts from the last
    checkpoint on the worker left and trains on before the node comes back; when it does, the group grows to
    two again. Every step trains the same global batch (the same samples) as an uninterrupted run of the same
    config, and its loss stays within 1% of that run's."""
    epochs = 8  # room for the two restarts (a shrink, a growth) before the end: at 4, a fresh-clone run on a
    # loaded machine once trained every step left on the one worker before the group grew back
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=2, resources={})  # the driver and Ray Data; no training slot
        cluster.add_node(num_cpus=1, resources={"trainer_slot": 1}, name="spot-a")
        spot_b = cluster.add_node(num_cpus=1, resources={"trainer_slot": 1}, name="spot-b")
        elastic = {"scaling.resources_per_worker": "{CPU: 1, trainer_slot: 1}", "scaling.num_workers": "[1, 2]",
                   "scaling.elastic_resize_monitor_interval_s": "5", "scaling.max_failures": "3",
                   "deepspeed.zero_stage": "2", "train.epochs": str(epochs)}
        started = time.monotonic()
        with (tmp_path / "uninterrupted.log").open("w") as log:
            reference = subprocess.run(_job(sft_set, tiny_model_dir, tmp_path / "uninterrupted", **elastic), cwd=REPO,
                                       env=cluster.env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        uninterrupted_s = time.monotonic() - started
        assert reference.returncode == 0, (tmp_path / "uninterrupted.log").read_text()[-4000:]

        out = tmp_path / "elastic"
        started = time.monotonic()
        with _running(_job(sft_set, tiny_model_dir, out, **elastic), cluster.env, tmp_path / "elastic.log") as job:
            _wait_past_a_checkpoint(out, job)
            cluster.kill(spot_b)
            killed = time.monotonic()
            # the group restarts on the worker left and trains on while the node is still gone
            shrunk = _wait_for(out, job, lambda a: len(a) == 2 and len(a[1]) >= 2, "steps on the worker left")
            recovered_s = time.monotonic() - killed
            assert {r["world_size"] for r in shrunk[1]} == {1}
            cluster.add_node(num_cpus=1, resources={"trainer_slot": 1}, name="spot-b-back")
            assert job.wait(timeout=600) == 0, (tmp_path / "elastic.log").read_text()[-4000:]
            elastic_s = time.monotonic() - started
    finally:
        cluster.shutdown()

    assert [{r["world_size"] for r in a} for a in _attempts(tmp_path / "uninterrupted")] == [{2}]
    attempts = _attempts(out)
    assert [{r["world_size"] for r in a} for a in attempts] == [{2}, {1}, {2}]  # shrank, then grew back
    assert all(len(r["samples"]) == 8 for a in attempts for r in a)  # the same global batch throughout
    planned = STEPS_PER_EPOCH * epochs
    history, reference_history = ([json.loads(line) for line in (run / "sft" / "history.jsonl").read_text()
                                   .splitlines()] for run in (out, tmp_path / "uninterrupted"))
    assert [r["step"] for r in history] == [r["step"] for r in reference_history] == list(range(1, planned + 1))
    assert [r["batch"] for r in history] == [r["batch"] for r in reference_history]  # the same samples each step
    for r, ref in zip(history, reference_history):
        assert r["loss"] == pytest.approx(ref["loss"], rel=0.01), f"step {r['step']}"
    replayed = attempts[0][-1]["step"] - (attempts[1][0]["step"] - 1)
    print(f"\nelastic SFT, {planned} steps: uninterrupted {uninterrupted_s:.0f} s; with a node lost and back "
          f"{elastic_s:.0f} s (lost {elastic_s - uninterrupted_s:.0f} s); training again on the worker left "
          f"{recovered_s:.0f} s after the loss, {replayed} step(s) replayed; largest loss gap "
          f"{max(abs(r['loss'] / ref['loss'] - 1) for r, ref in zip(history, reference_history)):.2e}")
