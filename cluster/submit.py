"""Submit a stage to any Ray cluster through the Ray Jobs API, follow its logs, report its status.

The job runs `python -m jobs.<stage> --config <file> [--set key=value ...]`, the same entrypoint a KubeRay
RayJob runs, so a local `ray start --head` and a KubeRay cluster (its dashboard service on port 8265) take
the same command. The working directory is uploaded with the job, so the config must lie inside it.

Secrets (the teacher API key) travel only as environment variables named in `forward_env`, read from the
submitter's environment; they are never logged or printed. On KubeRay the pods get them from a Kubernetes
Secret instead, and nothing needs forwarding.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import Field
from ray.job_submission import JobStatus, JobSubmissionClient

from cluster.stages import Stage
from reasonrank.config import Strict, load_config

log = logging.getLogger(__name__)


class SubmitConfig(Strict):
    """Where a stage is submitted and the runtime environment its job gets."""

    address: str | None = None  # the dashboard, e.g. http://127.0.0.1:8265; None: RAY_ADDRESS or a local one
    working_dir: str = "."  # uploaded with the job; relative paths are from the current directory
    excludes: list[str] = Field(default_factory=list)  # left out of the upload, besides what .gitignore lists
    env_vars: dict[str, str] = Field(default_factory=dict)
    forward_env: list[str] = Field(default_factory=lambda: ["DEEPSEEK_API_KEY", "OPENAI_API_KEY"])  # if set here
    pip: list[str] | None = None  # extra packages for the job (the cluster image already has the project's)
    py_modules: list[str] | None = None
    python: str = "python"  # the interpreter on the cluster's nodes
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_resources: dict[str, float] | None = None
    poll_interval_s: float = Field(2.0, gt=0)


def load_submit_config(path: str | Path | None) -> SubmitConfig:
    return SubmitConfig() if path is None else load_config(path, SubmitConfig)


def build_runtime_env(settings: SubmitConfig, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Ray's runtime_env for the job; `forward_env` values are taken from `environ` where set there."""
    env_vars = {**settings.env_vars, **{name: environ[name] for name in settings.forward_env if environ.get(name)}}
    runtime_env = {"working_dir": str(Path(settings.working_dir).resolve()), "excludes": settings.excludes,
                   "env_vars": env_vars, "pip": settings.pip, "py_modules": settings.py_modules}
    return {key: value for key, value in runtime_env.items() if value}


def config_in_working_dir(config: str | Path, working_dir: str | Path) -> str:
    """`config` as a path relative to `working_dir` (the job sees only the uploaded copy)."""
    config_path, root = Path(config).resolve(), Path(working_dir).resolve()
    if not config_path.is_file():
        raise FileNotFoundError(f"config file not found: {config}")
    try:
        return config_path.relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"config {config} is outside the working directory {root}, which is what the job "
                         f"gets; put it inside or set working_dir") from None


class Submission:
    """A submitted stage: its status, logs, and stopping it, through the Jobs API."""

    def __init__(self, client: JobSubmissionClient, submission_id: str, poll_interval_s: float = 2.0):
        self.client = client
        self.submission_id = submission_id
        self.poll_interval_s = poll_interval_s

    def status(self) -> JobStatus:
        return self.client.get_job_status(self.submission_id)

    def logs(self) -> str:
        return self.client.get_job_logs(self.submission_id)

    def stop(self) -> bool:
        """Ask the job to stop (SIGTERM, then SIGKILL); True if it was running."""
        return self.client.stop_job(self.submission_id)

    def wait(self, timeout_s: float | None = None) -> JobStatus:
        """Poll until the job ends; TimeoutError after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.status()
            if status.is_terminal():
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.submission_id} still {status} after {timeout_s:.0f} s")
            time.sleep(self.poll_interval_s)

    def follow(self, out: TextIO = sys.stdout) -> JobStatus:
        """Stream the job's logs to `out` until it ends; its final status."""
        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(self.submission_id):
                out.write(chunk)
                out.flush()

        try:
            asyncio.run(tail())
        except RuntimeError as e:  # the log stream broke (e.g. a port-forward dropped); the job goes on
            log.warning("log stream of %s ended early (%s); polling its status", self.submission_id, e)
        return self.wait()


def submit_stage(stage: Stage | str, config: str | Path, overrides: Sequence[str] = (),
                 settings: SubmitConfig | None = None, address: str | None = None) -> Submission:
    """Submit `stage` with `config` (a file inside the working directory) to the cluster at `address`."""
    stage = Stage(stage)
    settings = settings or SubmitConfig()
    root = Path(settings.working_dir)
    if not (root / stage.source).is_file():
        raise FileNotFoundError(f"stage {stage.value}: {stage.source} is not in the working directory "
                                f"{root.resolve()}")
    entrypoint = stage.entrypoint(config_in_working_dir(config, root), overrides, settings.python)
    runtime_env = build_runtime_env(settings)
    client = JobSubmissionClient(address or settings.address)
    submission_id = client.submit_job(
        entrypoint=entrypoint, runtime_env=runtime_env, metadata={"stage": stage.value},
        entrypoint_num_cpus=settings.entrypoint_num_cpus, entrypoint_num_gpus=settings.entrypoint_num_gpus,
        entrypoint_resources=settings.entrypoint_resources)
    forwarded = sorted(set(runtime_env.get("env_vars", {})) - set(settings.env_vars))
    log.info("submitted %s to %s: %s (forwarded env: %s)", submission_id, client.get_address(), entrypoint,
             ", ".join(forwarded) or "none")
    return Submission(client, submission_id, settings.poll_interval_s)
