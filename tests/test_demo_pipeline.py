"""The demo's wiring: which job runs when, on which model, and what the first table holds.

Each stage job is tested on its own (tests/test_synthesize.py, test_sft*.py, test_grpo*.py, test_evaluate.py);
the whole demo takes about 20 minutes on 2 cores, too long for the suite. Here the jobs are stand-ins that
record how they were called and answer as the real ones do, so that the order of the stages and the paths
handed between them are checked: SFT pauses for the first table, continues the same run, and GRPO starts
from the finished SFT model, not the first look.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _difference(baseline: float, system: float) -> dict:
    return {"metric": "ndcg@10", "queries": 3, "baseline": baseline, "system": system, "ci_low": -0.01,
            "ci_high": 0.2, "p_value": 0.04}


def test_sft_pauses_for_a_first_table_and_grpo_starts_from_the_finished_sft_model(demo_data, tmp_path,
                                                                                  monkeypatch, caplog):
    from jobs import demo, evaluate, grpo, sft, synthesize

    out = tmp_path / "demo"
    calls: list[tuple[str, dict]] = []
    ndcg = iter([0.55, 0.62, 0.66])  # the first look, SFT, GRPO

    def fake_sft(config, overrides):
        calls.append(("sft", overrides))
        paused = overrides.get("train.pause_after_epochs")
        return {"model": f"{overrides['output_dir']}/{f'epoch-{paused}' if paused else 'final'}",
                "planned_steps": 30, "steps_per_epoch": 10}

    def fake_evaluate(config, overrides):
        calls.append(("evaluate", overrides))
        with open(overrides["baseline_run"]) as baseline:  # the run it is compared with exists
            assert baseline.read().strip()
        after = next(ndcg)
        os.makedirs(overrides["output_dir"], exist_ok=True)
        with open(f"{overrides['output_dir']}/run.trec", "w") as f:
            f.write("q1 Q0 d1 1 1.0 model\n")
        return {"before": {"ndcg@10": 0.44}, "after": {"ndcg@10": after}, "well_formed_rate": 0.9,
                "vs_baseline": {"ndcg@10": _difference(0.44, after)}, "strategy": "sliding_window",
                "per_query": {"llm_calls": 3, "sequential_rounds": 3, "completion_tokens": 800}}

    monkeypatch.setattr(synthesize, "run", lambda c, o: calls.append(("synthesize", o)) or {})
    monkeypatch.setattr(sft, "run", fake_sft)
    monkeypatch.setattr(evaluate, "run", fake_evaluate)
    monkeypatch.setattr(grpo, "run", lambda c, o: calls.append(("grpo", o)) or {})
    monkeypatch.setattr(demo, "init_ray", lambda *a: None)
    evaluate_config = tmp_path / "evaluate.yaml"
    with open(REPO / "configs" / "evaluate-tiny.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg["data"]["demo_dir"] = str(demo_data.root)
    evaluate_config.write_text(yaml.safe_dump(cfg))

    with caplog.at_level(logging.INFO, logger="jobs.progress"):
        demo.run(None, {"output_dir": str(out), "evaluate_config": str(evaluate_config), "quiet": False,
                        "strategies": []})

    jobs = [(name, o.get("engine.model") or o.get("model") or o.get("train.pause_after_epochs"))
            for name, o in calls]
    sft_dir = f"{out}/sft"
    assert jobs == [("synthesize", None), ("sft", 2), ("evaluate", f"{sft_dir}/epoch-2"), ("sft", None),
                    ("evaluate", f"{sft_dir}/final"), ("grpo", f"{sft_dir}/final"),
                    ("evaluate", f"{out}/grpo/final")]
    first, rest = (o for name, o in calls if name == "sft")
    assert {k: v for k, v in first.items() if k != "train.pause_after_epochs"} == rest  # the same run, continued
    assert rest["train.epochs"] == 3
    baselines = [o["baseline_run"] for name, o in calls if name == "evaluate"]
    assert baselines[0] == str(demo_data.run_path)  # the first look is compared with BM25
    assert baselines[1:] == [f"{out}/evaluate-SFT-epoch2/run.trec", f"{out}/evaluate-SFT/run.trec"]

    tables = [r.getMessage() for r in caplog.records if "Demo pipeline" in r.getMessage()]
    assert "first result: SFT after 2 of 3 epochs (the rest follows)" in tables[0]
    assert "SFT-epoch2" in tables[0] and "0.5500" in tables[0] and "GRPO" not in tables[0]
    assert "all models" in tables[-1] and all(v in tables[-1] for v in ("0.5500", "0.6200", "0.6600"))
    assert "SFT vs SFT-epoch2" in tables[-1] and "GRPO vs SFT" in tables[-1]
