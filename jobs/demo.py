"""The demo pipeline on the embedded defaults — what `make demo` runs.

    synthesize (the simulated teacher on the demo data) → SFT (tiny model)
    → SFT pauses after `sft_first_look_epochs`: that model evaluated on the held-out demo queries against BM25,
      query by query → a first table → SFT continues its schedule → evaluate the SFT model
    → GRPO → evaluate it → the table of all, each model compared query by query with the one before it (is the
      gain more than the choice of queries makes?)
    → the last model under the other strategies (`strategies`) → a short table of what each costs a query
      (LLM calls, sequential rounds, tokens) and what it ranks, against the sliding window

The untrained tiny model is evaluated only when there is no SFT stage: it cannot answer in format, so it keeps
BM25's order, which the table shows anyway. Each stage is the ordinary job (`jobs.<stage>.run`) on its own
config, chained by overriding paths, so the demo exercises exactly what a cluster runs. Stages resume from
their outputs, so a rerun is cheap.
The console shows one progress line per stage (`jobs/progress.py`: count, time left, where the outputs go)
and the tables; the jobs' logs and the libraries' output go to `<output_dir>/demo.log`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Literal

from pydantic import Field

from jobs.common import init_ray, main
from jobs.progress import console_to_log, say, stage
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
    # over the synthesized set (configs/sft-tiny.yaml: 1, over its own). Whether the tiny model learns to list the
    # passages it judged irrelevant without repeating one still varies with the sample order: 3 epochs left 98.8%,
    # 93.5%, 54.3%, 98.9% and 97.1% of windows well-formed on data orders 0-4 (ids as tokens; with ids spelt digit
    # by digit, orders 0-2 gave 96%, 17% and 10%), and 6 epochs gave 96% in twice the time of 3 on one order (ids
    # digit by digit) (docs/measurements-demo.md)
    sft_epochs: int | None = Field(3, ge=1)
    # SFT pauses after this many epochs for a first table (that model against BM25), then continues the same
    # schedule from its checkpoint; None: the first table comes after SFT
    sft_first_look_epochs: int | None = Field(2, ge=1)
    # GRPO's held-out reward evaluated before the first step and after the last only (configs/grpo-tiny.yaml: every
    # 8 steps too, for the README's curves); the steps and everything they train on stay as configured
    grpo_eval_every: int | None = Field(0, ge=0)
    # the last model evaluated again under each of these strategies (configs/evaluate-tiny.yaml's windows)
    strategies: list[Literal["tdpart", "parallel_blocks"]] = ["tdpart", "parallel_blocks"]
    output_dir: str = "outputs/demo-pipeline"
    ray_num_cpus: int = 8
    quiet: bool = True  # the console shows one progress line per stage and the tables; the rest goes to log_file
    log_file: str | None = None  # default: <output_dir>/demo.log


def run(config_path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = (load_config(config_path, DemoConfig, overrides) if config_path
           else parse_config(apply_overrides({}, overrides), DemoConfig, "the demo defaults"))
    if not cfg.quiet:
        return pipeline(cfg)
    log_file = cfg.log_file or storage.join(cfg.output_dir, "demo.log")
    with console_to_log(log_file):
        say(f"reasonrank demo: one line per stage below; the jobs' and libraries' logs (Ray, Ray Data, vLLM, "
            f"transformers, DeepSpeed) go to {log_file}, Ray's per-process logs to {_ray_logs()}")
        try:
            return pipeline(cfg)
        except Exception as e:
            log.exception("the demo stopped: %s (the logs above say more)", e)
            raise


def _ray_logs() -> str:
    return os.path.join(os.environ.get("RAY_TMPDIR", "/tmp/ray"), "session_latest", "logs")


def pipeline(cfg: DemoConfig) -> dict[str, Any]:
    from jobs import evaluate, grpo, sft, synthesize
    from reasonrank.data.demo import ensure_demo_dataset

    started = time.monotonic()
    init_ray(cfg.ray_num_cpus)
    out = cfg.output_dir
    synth_dir, sft_dir, grpo_dir = (storage.join(out, s) for s in ("synthesize", "sft", "grpo"))
    evaluate_cfg = load_config(cfg.evaluate_config, evaluate.EvaluateConfig)
    base_model = evaluate_cfg.engine.model
    trained = [s for s in ("sft", "grpo") if s in cfg.stages]
    first_look = cfg.sft_first_look_epochs if "sft" in cfg.stages else None
    total = (("synthesize" in cfg.stages) + 2 * len(trained) + ("sft" not in cfg.stages) + len(cfg.strategies)
             + 2 * bool(first_look))
    labels = iter(f"[{i}/{total}]" for i in range(1, total + 1))
    models = {} if "sft" in cfg.stages else {"untrained": base_model}
    results: dict[str, Any] = {}
    columns: dict[str, dict[str, float]] = {}
    compared: dict[str, dict[str, Any]] = {}
    evaluations: dict[str, dict[str, Any]] = {}

    def evaluate_model(name: str) -> None:
        """Evaluate `models[name]`, compared query by query with the model before it (the first with BM25)."""
        before = list(models)[:list(models).index(name)]
        previous, baseline = ((before[-1], _run(out, before[-1])) if before
                              else ("BM25", str(ensure_demo_dataset(evaluate_cfg.data.demo_dir).run_path)))
        with stage(f"{next(labels)} evaluate {name}"):
            summary = evaluate.run(cfg.evaluate_config, {"engine.model": models[name],
                                                         "build_tiny_model": name == "untrained",
                                                         "output_dir": _evaluated(out, name),
                                                         "baseline_run": baseline})
        evaluations[name] = summary
        if not columns:
            columns["BM25"] = dict(summary["before"])
        columns[name] = {**summary["after"], "well_formed": summary["well_formed_rate"]}
        compared[f"{name} vs {previous}"] = summary["vs_baseline"]["ndcg@10"]

    if "synthesize" in cfg.stages:
        with stage(f"{next(labels)} synthesize"):
            results["synthesize"] = synthesize.run(cfg.synthesize_config, {"output_dir": synth_dir})
    if "sft" in cfg.stages:
        epochs = {"train.epochs": cfg.sft_epochs} if cfg.sft_epochs else {}
        sft_data = {"data.path": storage.join(synth_dir, "sft.parquet")} if "synthesize" in cfg.stages else {}
        sft_job = {"output_dir": sft_dir, "storage.path": storage.join(out, "checkpoints"), **sft_data, **epochs}
        if first_look:
            with stage(f"{next(labels)} sft, {first_look} epochs"):
                results["sft_first_look"] = sft.run(cfg.sft_config,
                                                    {**sft_job, "train.pause_after_epochs": first_look})
            look = results["sft_first_look"]
            name = f"SFT-epoch{first_look}"
            models[name] = look["model"]
            evaluate_model(name)
            _show(columns, compared, f"first result: SFT after {first_look} of "
                  f"{look['planned_steps'] // look['steps_per_epoch']} epochs (the rest follows)", started)
        with stage(f"{next(labels)} sft" + (", the rest" if first_look else "")):
            results["sft"] = sft.run(cfg.sft_config, sft_job)
        models["SFT"] = storage.join(sft_dir, "final")
        evaluate_model("SFT")
    else:
        evaluate_model("untrained")
    if "grpo" in cfg.stages:
        if "sft" in cfg.stages:  # a table while GRPO trains: it takes a while on a laptop
            _show(columns, compared, "before GRPO", started)
        start = models.get("SFT", base_model)
        rl_data = {"rl_set": storage.join(synth_dir, "rl.parquet")} if "synthesize" in cfg.stages else {}
        evals = {"eval.every": cfg.grpo_eval_every} if cfg.grpo_eval_every is not None else {}
        with stage(f"{next(labels)} grpo"):
            results["grpo"] = grpo.run(cfg.grpo_config, {"output_dir": grpo_dir, "model": start, **rl_data, **evals})
        models["GRPO"] = storage.join(grpo_dir, "final")
        evaluate_model("GRPO")

    storage.makedirs(out)
    table = _show(columns, compared, "all models", started)
    if cfg.strategies:
        last = list(models)[-1]
        results["strategies"] = _strategies(cfg, last, models[last], evaluations[last], labels)
    png = plot_metrics(columns, SHOWN, storage.join(out, "summary.png"), "demo: first stage vs rerankers")
    summary = {"models": models, "metrics": columns, "compared": compared, "table": table, "plot": str(png),
               "stages": results, "wall_time_s": round(time.monotonic() - started, 1)}
    storage.write_text_atomic(storage.join(out, "summary.json"), json.dumps(summary, indent=2, default=str))
    say(f"summary: {storage.join(out, 'summary.json')}, plot: {png}")
    return summary


def _strategies(cfg: DemoConfig, name: str, model: str, evaluated: dict[str, Any], labels) -> dict[str, Any]:
    """`model` (the last one trained, `evaluated` under the configured strategy) under each of
    `cfg.strategies`, each compared query by query with that run; what each costs and ranks, on the console."""
    from jobs import evaluate

    summaries = {evaluated["strategy"]: evaluated}
    for strategy in cfg.strategies:
        with stage(f"{next(labels)} evaluate {name}, {strategy}"):
            summaries[strategy] = evaluate.run(cfg.evaluate_config, {
                "engine.model": model, "strategy.name": strategy,
                "output_dir": _evaluated(cfg.output_dir, f"{name}-{strategy}"),
                "baseline_run": _run(cfg.output_dir, name)})
    head = f"{'strategy':<16} {'calls/q':>7} {'rounds':>6} {'tokens/q':>8} {'ndcg@10':>8}  vs {evaluated['strategy']}"
    rows = [head, "-" * len(head)]
    for strategy, summary in summaries.items():
        cost = summary["per_query"]
        vs = (PairedDifference.from_dict(summary["vs_baseline"]["ndcg@10"]).describe() if summary is not evaluated
              else "the baseline")
        rows.append(f"{strategy:<16} {cost['llm_calls']:>7.1f} {cost['sequential_rounds']:>6.1f} "
                    f"{cost['completion_tokens']:>8.0f} {summary['after']['ndcg@10']:>8.4f}  {vs}")
    say(f"\nStrategies — {name} model, held-out demo queries (rounds: sequential rounds of windows; tokens: "
        "completion)\n" + "\n".join(rows) + "\n")
    return summaries


def _evaluated(out: str, name: str) -> str:
    """Where the demo's evaluation `name` writes."""
    return storage.join(out, f"evaluate-{name}")


def _run(out: str, name: str) -> str:
    """The TREC run of the demo's evaluation `name`."""
    return storage.join(_evaluated(out, name), "run.trec")


def _show(columns: dict[str, dict[str, float]], compared: dict[str, dict[str, Any]], title: str,
          started: float) -> str:
    """The metrics table of the models evaluated so far and the query-by-query comparisons, on the console."""
    table = metrics_table(columns, SHOWN)
    lines = [f"{pair}: {PairedDifference.from_dict(d).describe()}" for pair, d in compared.items()]
    elapsed = int(time.monotonic() - started)
    say(f"\nDemo pipeline — held-out demo queries, {title} ({elapsed // 60} min {elapsed % 60:02d} s in)\n"
        + "\n".join([table, *lines]) + "\n")
    return table


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
