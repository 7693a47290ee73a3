"""The demo pipeline on the embedded defaults — what `make demo` runs.

    synthesize (the simulated teacher on the demo data) → SFT (tiny model) → GRPO
    → evaluate the untrained, SFT and GRPO models on the held-out demo queries → one table, and each model
      compared query by query with the one before it (is the gain more than the choice of queries makes?)

Each stage is the ordinary job (`jobs.<stage>.run`) on its own config, chained by overriding paths, so the
demo exercises exactly what a cluster runs. Stages resume from their outputs, so a rerun is cheap.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Literal

from pydantic import Field

from jobs.common import init_ray, main
from reasonrank import storage
from reasonrank.config import Strict, apply_overrides, load_config, parse_config
from reasonrank.reporting import metrics_table, plot_metrics
from reasonrank.significance import PairedDifference

log = logging.getLogger("jobs.demo")

Stage = Literal["synthesize", "sft", "grpo"]
SHOWN = ("ndcg@1", "ndcg@5", "ndcg@10", "recall@10", "mrr@10", "well_formed")


class DemoConfig(Strict):
    synthesize_config: str = "configs/synthesize-demo.yaml"
    sft_config: str = "configs/sft-tiny.yaml"
    grpo_config: str = "configs/grpo-tiny.yaml"
    evaluate_config: str = "configs/evaluate-tiny.yaml"
    stages: list[Stage] = ["synthesize", "sft", "grpo"]
    sft_epochs: int | None = Field(6, ge=1)  # over the synthesized set (configs/sft-tiny.yaml: 1, over its own)
    output_dir: str = "outputs/demo-pipeline"
    ray_num_cpus: int = 8


def run(config_path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = (load_config(config_path, DemoConfig, overrides) if config_path
           else parse_config(apply_overrides({}, overrides), DemoConfig, "the demo defaults"))
    return pipeline(cfg)


def pipeline(cfg: DemoConfig) -> dict[str, Any]:
    from jobs import evaluate, grpo, sft, synthesize

    init_ray(cfg.ray_num_cpus)
    out = cfg.output_dir
    synth_dir, sft_dir, grpo_dir = (storage.join(out, s) for s in ("synthesize", "sft", "grpo"))
    base_model = load_config(cfg.evaluate_config, evaluate.EvaluateConfig).engine.model
    models = {"untrained": base_model}
    results: dict[str, Any] = {}
    if "synthesize" in cfg.stages:
        results["synthesize"] = synthesize.run(cfg.synthesize_config, {"output_dir": synth_dir})
    if "sft" in cfg.stages:
        epochs = {"train.epochs": cfg.sft_epochs} if cfg.sft_epochs else {}
        sft_data = {"data.path": storage.join(synth_dir, "sft.parquet")} if "synthesize" in cfg.stages else {}
        results["sft"] = sft.run(cfg.sft_config, {"output_dir": sft_dir, "storage.path": storage.join(out, "checkpoints"),
                                                  **sft_data, **epochs})
        models["SFT"] = storage.join(sft_dir, "final")
    if "grpo" in cfg.stages:
        start = models.get("SFT", base_model)
        rl_data = {"rl_set": storage.join(synth_dir, "rl.parquet")} if "synthesize" in cfg.stages else {}
        results["grpo"] = grpo.run(cfg.grpo_config, {"output_dir": grpo_dir, "model": start, **rl_data})
        models["GRPO"] = storage.join(grpo_dir, "final")

    columns: dict[str, dict[str, float]] = {}
    compared: dict[str, dict[str, Any]] = {}
    previous: str | None = None
    for name, model in models.items():
        eval_dir = storage.join(out, f"evaluate-{name}")
        baseline = {"baseline_run": storage.join(out, f"evaluate-{previous}", "run.trec")} if previous else {}
        summary = evaluate.run(cfg.evaluate_config, {"engine.model": model, "build_tiny_model": name == "untrained",
                                                     "output_dir": eval_dir, **baseline})
        if not columns:
            columns["BM25"] = dict(summary["before"])
        columns[name] = {**summary["after"], "well_formed": summary["well_formed_rate"]}
        if previous:
            compared[f"{name} vs {previous}"] = summary["vs_baseline"]["ndcg@10"]
        previous = name
    storage.makedirs(out)
    table = metrics_table(columns, SHOWN)
    lines = [f"{pair}: {PairedDifference.from_dict(d).describe()}" for pair, d in compared.items()]
    print("\nDemo pipeline — held-out demo queries\n" + "\n".join([table, *lines]))
    png = plot_metrics(columns, SHOWN, storage.join(out, "summary.png"), "demo: first stage vs rerankers")
    summary = {"models": models, "metrics": columns, "compared": compared, "table": table, "plot": str(png),
               "stages": results}
    storage.write_text_atomic(storage.join(out, "summary.json"), json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
