"""`reasonrank submit` against a real Ray cluster started with `ray start --head` on 127.0.0.1.

The cluster (cluster.local_head) gets its own temp dir, so `ray.init()` elsewhere never finds and joins it,
its own ports and a worker-port range away from Ray's default one, and token authentication, and is reached
through its Jobs API as a KubeRay cluster is through its dashboard service. Nothing is mocked.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cluster.local_head import BIN, local_head
from cluster.submit import SubmitConfig, build_runtime_env, config_in_working_dir, load_submit_config, submit_stage

REPO = Path(__file__).resolve().parent.parent
QUERIES = 20  # the first 20 of the demo dataset's test split (data.limit)
CANDIDATES = 20  # evaluate-tiny reranks the top 20 ...
WINDOWS_PER_QUERY = 3  # ... in windows of 10, step 5


# ---- without a cluster -----------------------------------------------------------------------------------

def test_config_outside_the_working_directory_is_refused(tmp_path):
    outside = tmp_path / "evaluate.yaml"
    outside.write_text("output_dir: x\n")
    with pytest.raises(ValueError, match="outside the working directory"):
        config_in_working_dir(outside, REPO)
    assert config_in_working_dir(REPO / "configs" / "evaluate-tiny.yaml", REPO) == "configs/evaluate-tiny.yaml"


def test_cli_refuses_an_unknown_stage_and_a_config_it_cannot_upload(tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    outside = tmp_path / "evaluate.yaml"
    outside.write_text("output_dir: x\n")
    runner = CliRunner()
    unknown = runner.invoke(app, ["submit", "train", "--config", str(outside)])
    assert unknown.exit_code == 2 and "train" in unknown.output
    result = runner.invoke(app, ["submit", "evaluate", "--config", str(outside), "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "outside the working directory" in result.output


def test_a_stage_missing_from_the_working_directory_is_refused_before_submitting(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sft.yaml").write_text("output_dir: x\n")
    with pytest.raises(FileNotFoundError, match="jobs/sft.py"):
        submit_stage("sft", tmp_path / "configs" / "sft.yaml", settings=SubmitConfig(working_dir=str(tmp_path)),
                     address="http://127.0.0.1:9")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("submit-*.yaml")), ids=lambda p: p.name)
def test_committed_submit_configs_are_valid(path):
    settings = load_submit_config(path)
    assert settings.address.startswith("http://")


def test_runtime_env_forwards_only_the_named_variables_that_are_set():
    settings = SubmitConfig(env_vars={"VLLM_CPU_KVCACHE_SPACE": "1"}, forward_env=["DEEPSEEK_API_KEY", "UNSET_KEY"])
    runtime_env = build_runtime_env(settings, {"DEEPSEEK_API_KEY": "sk-x", "OTHER_SECRET": "y"})
    assert runtime_env["env_vars"] == {"VLLM_CPU_KVCACHE_SPACE": "1", "DEEPSEEK_API_KEY": "sk-x"}
    assert runtime_env["working_dir"] == str(Path.cwd()) and "pip" not in runtime_env


# ---- a real `ray start --head` -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_head():
    with local_head() as head:
        yield head


@pytest.fixture(scope="module")
def runtime_config(tmp_path_factory, ray_head):
    """The submit config: this checkout as the working directory, the CPU engines' environment."""
    path = tmp_path_factory.mktemp("submit") / "submit.yaml"
    path.write_text(yaml.safe_dump({
        "address": ray_head.address, "working_dir": str(REPO),
        "env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
        "forward_env": ["DEEPSEEK_API_KEY"], "poll_interval_s": 0.5}))
    return path


def _reasonrank(*args: str, env: dict[str, str], timeout: float = 480) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "reasonrank"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _evaluate_args(runtime_config: Path, demo_data, tiny_model_dir, out: Path, *extra: str) -> list[str]:
    """configs/evaluate-tiny.yaml on the session's demo data and tiny model, on the transformers backend: what
    is tested is the submission, and vLLM's start (about 45 s here) would double the time; a stopped job
    also takes its engines down with it, and a killed vLLM engine leaves shared memory behind."""
    return ["submit", "evaluate", "--config", "configs/evaluate-tiny.yaml", "--runtime", str(runtime_config),
            "--set", f"data.demo_dir={demo_data.root}", "--set", f"engine.model={tiny_model_dir}",
            "--set", f"output_dir={out}", "--set", f"data.limit={QUERIES}", "--set", "sampling.max_new_tokens=32",
            "--set", "engine.backend=transformers", *extra]


def _summary(stdout: str) -> dict:
    """The JSON object `reasonrank submit` prints last."""
    return json.loads(stdout[stdout.rindex("{\n"):])


@pytest.mark.slow
def test_submit_evaluate_to_a_local_cluster(ray_head, runtime_config, demo_data, tiny_model_dir, tmp_path):
    secret = "sk-test-" + secrets.token_hex(8)
    out = tmp_path / "evaluate"
    result = _reasonrank(*_evaluate_args(runtime_config, demo_data, tiny_model_dir, out),
                         env={**ray_head.env, "DEEPSEEK_API_KEY": secret})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = _summary(result.stdout)
    assert summary["status"] == "SUCCEEDED" and summary["stage"] == "evaluate"
    assert "well-formed windows" in result.stdout  # the job's own log, followed to the terminal
    assert secret not in result.stdout + result.stderr

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["queries"] == QUERIES and metrics["windows"] == QUERIES * WINDOWS_PER_QUERY
    assert 0 <= metrics["after"]["ndcg@10"] <= 1
    run_lines = (out / "run.trec").read_text().splitlines()
    assert len({line.split()[0] for line in run_lines}) == QUERIES and len(run_lines) == CANDIDATES * QUERIES
    assert (out / "metrics.png").stat().st_size > 0

    job = ray_head.submission(summary["submission_id"])
    assert job.status().value == "SUCCEEDED"
    info = job.client.get_job_info(summary["submission_id"])
    assert info.runtime_env["env_vars"]["DEEPSEEK_API_KEY"] == secret  # forwarded to the job, never printed
    assert info.entrypoint.startswith("python -m jobs.evaluate --config configs/evaluate-tiny.yaml")


def _parts(out: Path) -> dict[str, bytes]:
    parts = out / "parts"
    return {p.name: p.read_bytes() for p in sorted(parts.glob("*.jsonl"))} if parts.is_dir() else {}


def _qids(parts: dict[str, bytes]) -> list[str]:
    return [json.loads(line)["qid"] for text in parts.values() for line in text.decode().splitlines() if line]


@pytest.mark.slow
def test_a_stopped_stage_resubmitted_resumes_from_its_checkpoint(ray_head, runtime_config, demo_data,
                                                                 tiny_model_dir, tmp_path):
    out = tmp_path / "elastic"
    args = _evaluate_args(runtime_config, demo_data, tiny_model_dir, out, "--set", "queries_per_part=4",
                          "--set", "windows_in_flight_per_replica=2")  # queries finish a few at a time
    first = _reasonrank(*args, "--no-wait", env=ray_head.env, timeout=120)
    assert first.returncode == 0, first.stderr[-3000:]
    job = ray_head.submission(_summary(first.stdout)["submission_id"])

    deadline = time.monotonic() + 240
    while not _parts(out):  # stop it once it has saved some of its work
        assert not job.status().is_terminal(), f"the job ended before saving a part:\n{job.logs()[-3000:]}"
        assert time.monotonic() < deadline, f"no part after 240 s:\n{job.logs()[-3000:]}"
        time.sleep(0.2)
    assert job.stop()  # through the Jobs API, as a preempted or cancelled RayJob attempt
    assert job.wait(timeout_s=60).value == "STOPPED"
    saved = _parts(out)
    done = _qids(saved)
    assert 0 < len(done) < QUERIES, "the stop came too late to test a resume"
    assert not (out / "metrics.json").exists()

    second = _reasonrank(*args, env=ray_head.env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert _summary(second.stdout)["status"] == "SUCCEEDED"
    parts = _parts(out)
    assert {name: parts[name] for name in saved} == saved  # the first attempt's work is kept as it was
    qids = _qids(parts)
    assert len(qids) == len(set(qids)) == QUERIES  # every query once: none redone, none lost
    assert json.loads((out / "metrics.json").read_text())["queries"] == QUERIES
