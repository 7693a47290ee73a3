"""A Ray head on this machine for trying the Jobs API path: `ray start --head --block` with its own temp dir,
ports, worker-port range and process group, ended by ending that group.

Its own temp dir keeps `ray.init()` elsewhere on the machine from finding and joining it (it looks for
`ray_current_cluster` in the default one), and ending its process group never touches another Ray instance,
unlike `ray stop`. Token authentication is on, as for any `ray start` once a token exists.
"""
from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path

from ray.job_submission import JobSubmissionClient

from cluster.submit import Submission
from reasonrank.ports import free_port

BIN = Path(sys.executable).parent
_PORTS = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
          "dashboard-agent-grpc-port", "dashboard-agent-listen-port", "runtime-env-agent-port",
          "metrics-export-port")


@dataclass
class LocalHead:
    address: str  # the dashboard / Jobs API
    env: dict[str, str]  # for processes that submit to it: the token, Ray's auth mode, this venv on PATH
    token: str

    def client(self) -> JobSubmissionClient:
        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})

    def submission(self, submission_id: str) -> Submission:
        return Submission(self.client(), submission_id, poll_interval_s=0.5)


def _stop_group(proc: subprocess.Popen) -> None:
    """End the group: GCS, raylet, dashboard, workers. Its leader would drain for up to 30 s on SIGTERM once
    its children are gone, so it gets 3 s before SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            time.sleep(1)  # the leader exits first; let its children follow before the next signal
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def local_head(num_cpus: int = 4, startup_timeout_s: float = 180) -> Iterator[LocalHead]:
    """Start the head, yield it once its Jobs API answers; at exit stop its running jobs, then the head."""
    temp_dir = tempfile.mkdtemp(prefix="rr-head-")  # short: Ray's socket paths must fit in 107 bytes
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    ports = {name: free_port() for name in _PORTS}
    low = 20000 + 1000 * (os.getpid() % 10)  # below the kernel's ephemeral ports and Ray's default 10002+
    command = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}", "--disable-usage-stats",
               f"--temp-dir={temp_dir}", f"--min-worker-port={low}", f"--max-worker-port={low + 999}",
               *(f"--{name}={port}" for name, port in ports.items())]
    log_path = Path(temp_dir) / "ray-start.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, cwd=temp_dir, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    head = LocalHead(f"http://127.0.0.1:{ports['dashboard-port']}", env, token)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start --head exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                client = head.client()
                break
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield head
        for job in client.list_jobs():  # a job's driver runs in its own session: stop it through the API
            if not job.status.is_terminal():
                client.stop_job(job.submission_id)
                head.submission(job.submission_id).wait(timeout_s=60)
    finally:
        _stop_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
