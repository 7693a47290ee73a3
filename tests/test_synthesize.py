"""The synthesis job end to end on the demo data, against the simulated teacher (a test double for
DeepSeek-R1 that the job starts on loopback): real Ray Data over real labeler actors, real HTTP, real
Parquet. Faults are injected by the simulated teacher; the kill is a real SIGKILL of a job process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from jobs.synthesize import SynthesizeConfig, run
from reasonrank.config import ConfigError, load_config
from reasonrank.metrics import ndcg_at_k
from reasonrank.teacher.labeling import LABEL_SCHEMA
from reasonrank.teacher.store import PartStore

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "configs" / "synthesize-demo.yaml"
QUERIES = 6
LIST_SIZE, SHUFFLED = 10, 1  # per query: 10 pointwise items, the list and a shuffled copy of it
LISTS = QUERIES * (1 + SHUFFLED)
ITEMS = QUERIES * LIST_SIZE + LISTS
FAULT_KINDS = {"rate_limited", "server_error", "timeout", "malformed"}


def _overrides(demo_data, out: Path, **extra) -> dict:
    return {"output_dir": str(out), "data.demo_dir": str(demo_data.root), "data.limit": QUERIES,
            "teacher.simulation.latency_s": 0.02, "teacher.simulation.hang_s": 3,
            "teacher.simulation.retry_after_s": 0.05, "teacher.engine.request_timeout_s": 1.0,
            "teacher.engine.retry_backoff_s": 0.02, "teacher.engine.max_concurrency": 32, "batch_size": 8,
            "teacher.window_size": LIST_SIZE, "shuffled_lists": SHUFFLED, **extra}


def _keys(out: Path, name: str) -> list[str]:
    return pq.read_table(out / f"{name}.parquet").column("key").to_pylist() if (out / f"{name}.parquet").exists() \
        else []


def _raw_label_keys(out: Path) -> list[str]:
    return [row["key"] for row in PartStore(str(out / "labels"), LABEL_SCHEMA).rows()]


def test_demo_config_validates_and_a_simulated_teacher_never_replaces_a_real_endpoint(tmp_path):
    cfg = load_config(DEMO_CONFIG, SynthesizeConfig)
    assert cfg.teacher.simulated and cfg.teacher.engine.base_url is None
    with pytest.raises(ConfigError, match="teacher.*never used when a real endpoint"):
        load_config(DEMO_CONFIG, SynthesizeConfig, {"teacher.engine.base_url": "https://api.example.com"})
    with pytest.raises(ConfigError, match="teacher.simulation.noise"):
        load_config(DEMO_CONFIG, SynthesizeConfig, {"teacher.simulation.noise": 2})
    paper = load_config(REPO / "configs" / "synthesize-paper.yaml", SynthesizeConfig)
    assert not paper.teacher.simulated and paper.teacher.engine.api_key_env == "DEEPSEEK_API_KEY"


def test_a_real_teacher_without_its_key_is_refused_before_any_work(tmp_path, monkeypatch, demo_data):
    monkeypatch.delenv("TEACHER_KEY_FOR_TEST", raising=False)
    overrides = {**_overrides(demo_data, tmp_path), "teacher.simulated": False,
                 "teacher.engine.base_url": "https://api.example.com", "teacher.engine.api_key_env": "TEACHER_KEY_FOR_TEST"}
    with pytest.raises(ConfigError, match="TEACHER_KEY_FOR_TEST"):
        run(str(DEMO_CONFIG), overrides)
    assert not (tmp_path / "labels").exists()


def test_cli_has_the_synthesize_command():
    from jobs.cli import app

    result = CliRunner().invoke(app, ["synthesize", "--help"])
    assert result.exit_code == 0 and "--config" in result.output


@pytest.mark.slow
def test_with_20_percent_faults_every_item_ends_labelled_or_in_errors_and_a_rerun_labels_the_rest(
        ray_cluster, demo_data, tmp_path):
    out = tmp_path / "synth"
    faulty = _overrides(demo_data, out, **{"teacher.simulation.fault_rate": 0.2, "teacher.engine.max_retries": 1})
    first = run(str(DEMO_CONFIG), faulty)

    labelled, failed = _keys(out, "pointwise") + _keys(out, "listwise"), _keys(out, "errors")
    assert first["items"] == ITEMS and first["pending"] == 0
    assert first["failed"] > 0 and first["labelled"] + first["failed"] == ITEMS
    assert len(set(labelled)) == len(labelled) == first["labelled"] and not set(labelled) & set(failed)
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert len(errors) == first["failed"] and {e["reason"] for e in errors} <= FAULT_KINDS
    assert all(e["attempts"] == 2 and e["message"] for e in errors)  # max_retries=1: two attempts each
    assert sorted(_raw_label_keys(out)) == sorted(labelled)  # raw labels: each labelled item once
    assert first["simulated_teacher_this_run"]["peak_in_flight"] > 4  # many in flight per labeler (2 of them)
    assert first["lists_failed"] > 0 and first["kept"] + first["filtered_out"] + first["lists_failed"] == LISTS

    second = run(str(DEMO_CONFIG), {**faulty, "teacher.engine.max_retries": 8})
    print(f"\nfault test, {ITEMS} items at fault rate 0.2: run 1 (2 attempts a call) teacher "
          f"{first['simulated_teacher_this_run']}, absorbed {first['retried_for']}, failed {first['failed']} "
          f"{first['failure_reasons']}; rerun (9 attempts) teacher {second['simulated_teacher_this_run']}, "
          f"labelled {second['labelled_this_run']}, failed {second['failed']}")
    assert second["already_labelled"] == first["labelled"] and second["labelled_this_run"] == first["failed"]
    assert second["labelled"] == ITEMS and second["failed"] == 0 and not _keys(out, "errors")
    assert sorted(_raw_label_keys(out)) == sorted(set(labelled) | set(failed))  # the failed ones, once each
    assert second["kept"] + second["filtered_out"] == LISTS and second["kept"] > 0 and second["queries"] == QUERIES
    # The filter's scores, recomputed from the pointwise and listwise tables the job wrote.
    verdicts = {(r["qid"], r["docid"]): r["relevant"] for r in pq.read_table(out / "pointwise.parquet").to_pylist()}
    for row in pq.read_table(out / "listwise.parquet").to_pylist():
        qrels = {d: int(verdicts[row["qid"], d]) for d in row["docids"]}
        decision = next(d for d in pq.read_table(out / "filter.parquet").to_pylist() if d["key"] == row["key"])
        assert decision["ndcg10"] == pytest.approx(ndcg_at_k(row["ranking"], qrels, 10))
        assert decision["state"] == ("kept" if decision["ndcg10"] >= 0.4 else "dropped")
    sft, rl = pq.read_table(out / "sft.parquet").to_pylist(), pq.read_table(out / "rl.parquet").to_pylist()
    assert len(sft) == len(rl) == second["kept"]
    summary = json.loads((out / "summary.json").read_text())
    assert sum(d["kept"] + d["dropped"] for d in summary["per_domain"].values()) == LISTS
    assert summary["tokens_in"] > 0 and summary["tokens_out"] > 0 and (out / "filter_by_domain.png").stat().st_size


@pytest.mark.slow
def test_a_job_killed_mid_run_and_rerun_labels_every_item_exactly_once(ray_cluster, demo_data, tmp_path):
    out = tmp_path / "killed"
    slow = _overrides(demo_data, out, **{"teacher.simulation.latency_s": 0.3, "teacher.simulation.fault_rate": 0.1,
                                         "teacher.engine.max_concurrency": 8, "batch_size": 4,
                                         "teacher.engine.max_retries": 8})
    args = [arg for key, value in slow.items() for arg in ("--set", f"{key}={value}")]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    job = subprocess.Popen([sys.executable, "-m", "jobs.synthesize", "--config", str(DEMO_CONFIG), *args],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    labels = PartStore(str(out / "labels"), LABEL_SCHEMA)
    try:
        deadline = time.monotonic() + 240
        while len(labels.parts()) < 3 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before it could be killed"
        assert len(labels.parts()) >= 3, "no labels were written within 4 minutes"
    finally:
        job.kill()  # SIGKILL: no clean-up of any kind in the job
        job.wait()
    labelled_before = len(_raw_label_keys(out))
    print(f"\nkill test: {labelled_before} of {ITEMS} items labelled when the job was killed")
    assert 0 < labelled_before < ITEMS and not (out / "summary.json").exists()

    summary = run(str(DEMO_CONFIG), {**slow, "teacher.simulation.latency_s": 0.0})
    assert summary["already_labelled"] >= labelled_before
    assert summary["labelled"] == ITEMS and summary["failed"] == summary["pending"] == 0
    assert summary["labelled_this_run"] == ITEMS - summary["already_labelled"]
    labelled = _keys(out, "pointwise") + _keys(out, "listwise")
    assert len(labelled) == len(set(labelled)) == ITEMS  # none lost, none duplicated
    raw = _raw_label_keys(out)
    assert set(raw) == set(labelled) and len(raw) == ITEMS  # nor written twice

_PEAK_PROBE = """
import json, os, sys, tracemalloc
from jobs.synthesize import run
tracemalloc.start()  # after the imports, before Ray's threads: stopping it while they allocate can crash 3.11
peaks = []
for overrides in json.loads(sys.argv[2]):
    tracemalloc.reset_peak()
    run(sys.argv[1], overrides)
    peaks.append(tracemalloc.get_traced_memory()[1])
print(json.dumps(peaks))
sys.stdout.flush()
os._exit(0)
"""


def _driver_peaks(ray_cluster, demo_data, runs: dict[str, int]) -> list[int]:
    """The synthesis job once per named run (its output directory and its reasoning's words), one after another
    in one driver process of its own attached to the session's cluster: the peak of the Python memory that
    driver allocated during each run."""
    overrides = [_overrides(demo_data, out, **{"teacher.simulation.reasoning_words": words,
                                               "teacher.simulation.fault_rate": 0.0, "teacher.simulation.latency_s": 0,
                                               "teacher.sampling.max_new_tokens": 2 * words + 1000,
                                               "teacher.engine.request_timeout_s": 60,
                                               "teacher.engine.max_concurrency": 4, "batch_size": 4})
                 for out, words in runs.items()]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    done = subprocess.run([sys.executable, "-c", _PEAK_PROBE, str(DEMO_CONFIG), json.dumps(overrides)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_driver_never_holds_the_labels_rows(ray_cluster, demo_data, tmp_path):
    """The same job twice, its labels' reasoning 10 words long, then 20,000 (about 125 KB a label): the driver's
    peak Python memory grows by far less than the reasoning weighs, so no label row (nor a filter, SFT or RL row
    built from one) was gathered in it; only requests in flight to the simulated teacher (a test double that
    runs in the driver) pass through it, 4 at a time."""
    # the first run takes the one-off allocations (Ray Data's start among them)
    _, short_peak, long_peak = _driver_peaks(ray_cluster, demo_data, {str(tmp_path / "warm-up"): 10,
                                                                      str(tmp_path / "short"): 10,
                                                                      str(tmp_path / "long"): 20_000})
    short, long = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("short", "long"))
    reasoning = sum(len(row["reasoning"]) for row in PartStore(str(tmp_path / "long" / "labels"), LABEL_SCHEMA).rows())
    print(f"\ndriver's peak Python allocations {short_peak / 1e6:.1f} MB with short reasoning, {long_peak / 1e6:.1f} MB "
          f"with {reasoning / 1e6:.1f} MB of it")
    assert short["labelled"] == long["labelled"] == ITEMS and long["kept"] > 0
    assert len(pq.read_table(tmp_path / "long" / "sft.parquet")) == long["kept"]
    assert reasoning > 6e6 and long_peak - short_peak < reasoning / 2


def test_tables_are_written_in_request_order_whatever_order_the_groups_arrive_in(ray_cluster, tmp_path):
    """The shuffle hands the queries' groups back in no fixed order (and over several blocks); each table comes
    out in the requests' order, each query's rows in their own order, and the counts summed across blocks."""
    import ray.data

    from reasonrank.teacher.dataflow import COUNT, write_tables

    def group(position: int, qid: str) -> list[dict]:
        rows = [("sft", {"qid": qid, "n": 0}), ("sft", {"qid": qid, "n": 1}), ("filter", {"qid": qid, "kept": True})]
        return ([{"table": t, "record": json.dumps(r), "count": 0, "position": position, "seq": i}
                 for i, (t, r) in enumerate(rows)]
                + [{"table": COUNT, "record": "lists", "count": 2, "position": position, "seq": len(rows)}])

    requests = ["q10", "q2", "q7", "q1", "q30"]  # request order, not the ids' sort order
    arrival = [3, 0, 4, 1, 2]
    rows = [row for position in arrival for row in group(position, requests[position])]
    counts = write_tables(ray.data.from_items(rows, override_num_blocks=5), str(tmp_path), {})
    sft = pq.read_table(tmp_path / "sft.parquet").to_pylist()
    assert [(r["qid"], r["n"]) for r in sft] == [(q, n) for q in requests for n in (0, 1)]
    assert pq.read_table(tmp_path / "filter.parquet").column("qid").to_pylist() == requests
    assert counts == {"lists": 10}
    assert pq.read_table(tmp_path / "rl.parquet").num_rows == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the staged parts are gone
