"""`reasonrank <stage>` and `python -m jobs.<stage>` show the same progress lines."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jobs.evaluate import EvaluateConfig, results_fingerprint
from reasonrank import fingerprint, storage
from reasonrank.config import load_config

REPO = Path(__file__).resolve().parent.parent


def test_both_command_line_faces_log_the_jobs_progress(demo_data, tmp_path):
    sets = {"data.demo_dir": str(demo_data.root), "data.limit": 2, "build_tiny_model": False,
            "output_dir": str(tmp_path / "eval")}
    config = tmp_path / "evaluate.yaml"
    config.write_text("strategy: {window_size: 10, step: 5, depth: 20}\n")
    cfg = load_config(config, EvaluateConfig, sets)
    # a finished run, so the job only reports (no Ray, no engine): its first progress line says so
    fingerprint.check_and_record(cfg.output_dir, "evaluate", results_fingerprint(cfg))
    storage.write_jsonl_atomic(str(tmp_path / "eval" / "parts" / "part-00000.jsonl"), [
        {"qid": r.query.qid, "docids": [c.docid for c in r.candidates], "windows": []}
        for r in cfg.data.load().requests(cfg.data.first_stage_depth)])
    args = ["--config", str(config),
            *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]
    line = "INFO jobs.evaluate: 2 queries, 2 already reranked, 0 to go"
    for command in ([sys.executable, "-m", "jobs.evaluate", *args],
                    [str(Path(sys.executable).parent / "reasonrank"), "evaluate", *args]):
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert line in done.stderr, (command[1], done.stderr[-2000:])
