"""Evaluate a reranker: dataset + first-stage run + model + strategy → reranked TREC run and metrics.

    python -m jobs.evaluate --config configs/evaluate-tiny.yaml [--set engine.model=outputs/sft/final]

Queries are ranked through a `reasonrank.Reranker` whose engine is a pool of engine replicas running as Ray
actors (an `EnginePool`), each keeping up to `windows_in_flight_per_replica` windows in flight; every query
advances the moment its own window returns (`reasonrank.strategies.driver`).
Finished queries are saved `queries_per_part` at a time under `<output_dir>/parts/`, so a stopped job
resubmitted with the same config resumes with the queries it had not done. Outputs: `run.trec` (reranked),
`first_stage.trec`, `metrics.json` (before/after reranking), `windows.jsonl` (per-window tokens, latency, well-formedness),
`metrics.png`. With `baseline_run` (another ranker's TREC run over the same queries, e.g. the SFT model's
`run.trec`), `metrics.json` also compares the two query by query: the mean difference of each metric, its 95%
confidence interval and a paired randomisation test (`reasonrank/significance.py`). On Ranking-bench
(`data.source: ranking_bench`) `metrics.json` also holds `per_task`: each task's MRR, NDCG@k and Hit@k, and with
a baseline run the MRR difference within each task, query by query.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from pydantic import Field

from jobs.common import init_ray, main
from jobs.progress import StageProgress
from reasonrank import fingerprint, storage
from reasonrank.config import DataConfig, EngineConfig, SamplingConfig, Strict, load_config
from reasonrank.data.trec import Run, read_run, write_run
from reasonrank.elimination_metrics import per_task_metrics
from reasonrank.metrics import evaluate_run
from reasonrank.reporting import metrics_table, plot_metrics
from reasonrank.reranker import Reranker
from reasonrank.significance import PairedDifference, compare_runs
from reasonrank.strategies import StrategyConfig
from reasonrank.types import RankedList, RerankRequest, WindowLog, Windows

log = logging.getLogger("jobs.evaluate")

REPORTED = ("ndcg@1", "ndcg@5", "ndcg@10", "recall@10", "recall@100", "mrr@10")


class EvaluateConfig(Strict):
    data: DataConfig = DataConfig(split="test")
    engine: EngineConfig = EngineConfig()
    build_tiny_model: bool = False  # build the tiny demo model at engine.model when it is absent
    replicas: int = Field(1, ge=1)
    num_cpus_per_replica: float = Field(1.0, gt=0)
    num_gpus_per_replica: float = Field(0.0, ge=0)
    strategy: StrategyConfig = StrategyConfig()
    sampling: SamplingConfig = SamplingConfig()
    windows_in_flight_per_replica: int = Field(64, ge=1)  # windows each engine batches at once, at most
    queries_per_part: int = Field(32, ge=1)  # finished queries saved together in one resumable part
    baseline_run: str | None = None  # a TREC run of the same queries to compare with, query by query
    output_dir: str = "outputs/evaluate"
    ray_num_cpus: int | None = 8  # logical CPUs of an embedded Ray (ignored on a cluster)


def run(config_path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = load_config(config_path, EvaluateConfig, overrides)
    return evaluate(cfg)


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    from actors.engine_pool import EnginePool

    if cfg.build_tiny_model:
        _ensure_tiny_model(cfg)
    cfg = cfg.model_copy(update={"strategy": cfg.strategy.for_model(cfg.engine.model, log)})
    dataset = cfg.data.load()
    depth = cfg.strategy.depth or cfg.data.first_stage_depth
    requests = dataset.requests(cfg.data.first_stage_depth)
    baseline = _read_baseline(cfg.baseline_run, [r.query.qid for r in requests]) if cfg.baseline_run else None
    fingerprint.check_and_record(cfg.output_dir, "evaluate", results_fingerprint(cfg))
    parts_dir = storage.join(cfg.output_dir, "parts")
    done = _load_parts(parts_dir)
    todo = [r for r in requests if r.query.qid not in done]
    log.info("%d queries, %d already reranked, %d to go", len(requests), len(done), len(todo))

    bar = StageProgress("evaluate", len(requests), "queries", cfg.output_dir, done=len(done))
    if todo:
        init_ray(cfg.ray_num_cpus)
        bar.status("starting the engine replicas")
        pool = EnginePool(cfg.engine, replicas=cfg.replicas, num_cpus_per_replica=cfg.num_cpus_per_replica,
                          num_gpus_per_replica=cfg.num_gpus_per_replica)
        try:
            reranker = Reranker(pool, cfg.strategy, cfg.sampling, context_tokens=cfg.engine.context_tokens,
                                max_windows_in_flight=cfg.windows_in_flight_per_replica * cfg.replicas)
            parts = _PartWriter(parts_dir, len(storage.listdir(parts_dir)), cfg.queries_per_part, done)
            with reranker, bar:
                def finished(ranked: RankedList) -> None:
                    parts.add(ranked)
                    bar.advance(1)

                reranker.rank_requests(todo, on_query_done=finished)
                parts.flush()
        finally:
            pool.close()
    if not bar.finished:
        bar.finish("already reranked")
    return _report(cfg, requests, done, dataset.qrels, depth, baseline)


def results_fingerprint(cfg: EvaluateConfig) -> dict[str, Any]:
    """What the reranked run depends on: the baseline only changes the comparison, made anew every run; how
    many windows run at once and how finished queries are grouped into parts change no ranking."""
    return fingerprint.fingerprint(cfg, ignore=("build_tiny_model", "baseline_run", "windows_in_flight_per_replica",
                                                "queries_per_part"))


def _ensure_tiny_model(cfg: EvaluateConfig) -> None:
    from reasonrank.data.demo import ensure_demo_dataset
    from reasonrank.tiny_model import ensure_tiny_model

    ensure_tiny_model(cfg.engine.model, ensure_demo_dataset(cfg.data.demo_dir).texts())


def _read_baseline(path: str, qids: list[str]) -> Run:
    """The baseline run's rankings of `qids`; every one of them must be there (checked before reranking)."""
    run = read_run(path)
    missing = [q for q in qids if not run.get(q)]
    if missing:
        raise ValueError(f"baseline_run {path} has no ranking for {len(missing)} of the {len(qids)} queries "
                         f"evaluated (e.g. {missing[:3]}): compare runs over the same queries")
    return {q: run[q] for q in qids}


class _PartWriter:
    """Finished queries, saved `per_part` at a time as the next numbered part (what a resume keeps)."""

    def __init__(self, parts_dir: str, first: int, per_part: int, done: dict[str, dict[str, Any]]):
        self.parts_dir, self.next, self.per_part, self.done = parts_dir, first, per_part, done
        self.pending: list[dict[str, Any]] = []

    def add(self, ranked: RankedList) -> None:
        self.pending.append(_part_record(ranked))
        if len(self.pending) >= self.per_part:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        storage.write_jsonl_atomic(storage.join(self.parts_dir, f"part-{self.next:05d}.jsonl"), self.pending)
        self.done.update({rec["qid"]: rec for rec in self.pending})
        self.next, self.pending = self.next + 1, []


def _part_record(ranked: RankedList) -> dict[str, Any]:
    return {"qid": ranked.qid, "docids": ranked.docids,
            "windows": [dataclasses.asdict(w) for w in ranked.windows]}


def _ranked_list(record: dict[str, Any]) -> RankedList:
    """A saved part's query back as a ranking with its windows (its candidates are not needed here)."""
    return RankedList(record["qid"], [], [WindowLog(**w) for w in record["windows"]])


def _load_parts(parts_dir: str) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    for name in storage.listdir(parts_dir):
        if name.endswith(".jsonl"):
            for rec in storage.read_jsonl(storage.join(parts_dir, name)):
                done[rec["qid"]] = rec
    return done


def _report(cfg: EvaluateConfig, requests: list[RerankRequest], done: dict[str, dict[str, Any]],
            qrels: dict[str, dict[str, int]], depth: int, baseline: Run | None) -> dict[str, Any]:
    first_stage = {r.query.qid: [c.docid for c in r.candidates] for r in requests}
    reranked = {}
    for qid, before in first_stage.items():
        top = done[qid]["docids"]
        placed = set(top)
        reranked[qid] = top + [d for d in before if d not in placed]  # below the reranked depth: as before
    windows = [w for rec in done.values() for w in rec["windows"]]
    before_m = evaluate_run(_as_scores(first_stage), qrels)
    reranked_scores = _as_scores(reranked)
    after_m = evaluate_run(reranked_scores, qrels)
    rankings = [_ranked_list(rec) for rec in done.values()]
    every = Windows.of(rankings)
    n_win = max(every.calls, 1)
    n_query = max(len(done), 1)
    summary = {
        "queries": len(requests),
        "windows": every.calls,
        "well_formed_rate": (every.calls - every.malformed_windows) / n_win,
        "prompt_tokens": every.prompt_tokens,
        "completion_tokens": every.completion_tokens,
        "mean_window_latency_s": sum(w.latency_s for w in every.windows) / n_win,
        "depth": depth,  # the top-k reranked
        "model": cfg.engine.model,
        "strategy": cfg.strategy.name,
        "reasoning": cfg.strategy.reasoning.model_dump(),
        "forced_answers": every.forced_answers,
        "per_query": {  # what one query costs: LLM calls, sequential rounds (latency grows with these), tokens
            "llm_calls": every.calls / n_query,
            "sequential_rounds": sum(r.rounds for r in rankings) / n_query,
            "max_sequential_rounds": max((r.rounds for r in rankings), default=0),
            "prompt_tokens": every.prompt_tokens / n_query,
            "completion_tokens": every.completion_tokens / n_query,
        },
        "before": {m: before_m.get(m) for m in REPORTED},
        "after": {m: after_m.get(m) for m in REPORTED},
    }
    compared = compare_runs(baseline, reranked_scores, qrels, REPORTED) if baseline is not None else {}
    if compared:
        summary["vs_baseline"] = {"run": cfg.baseline_run, **{m: d.as_dict() for m, d in compared.items()}}
    if cfg.data.source == "ranking_bench":
        summary["per_task"] = _per_task(requests, reranked, qrels, baseline)
    out = cfg.output_dir
    storage.makedirs(out)
    _write_run(storage.join(out, "first_stage.trec"), first_stage, "first_stage")
    _write_run(storage.join(out, "run.trec"), reranked, "reasonrank")
    storage.write_jsonl_atomic(storage.join(out, "windows.jsonl"), windows)
    storage.write_text_atomic(storage.join(out, "metrics.json"), json.dumps(summary, indent=2))
    columns = {"first stage": summary["before"], "reranked": summary["after"]}
    with storage.writing(storage.join(out, "metrics.png")) as png:
        plot_metrics(columns, REPORTED, png, f"{cfg.strategy.name} · {os.path.basename(cfg.engine.model.rstrip('/'))}")
    print(metrics_table(columns, REPORTED))
    print(f"well-formed windows: {summary['well_formed_rate']:.1%} of {summary['windows']}; outputs in {out}")
    cost = summary["per_query"]
    print(f"per query: {cost['llm_calls']:.1f} LLM calls in {cost['sequential_rounds']:.1f} sequential rounds, "
          f"{cost['prompt_tokens']:.0f} prompt and {cost['completion_tokens']:.0f} completion tokens")
    if compared:
        print(f"vs {cfg.baseline_run}: {compared['ndcg@10'].describe()}")
    for task, values in summary.get("per_task", {}).items():
        against = (f"; vs baseline: {PairedDifference.from_dict(values['vs_baseline']['mrr']).describe()}"
                   if "vs_baseline" in values else "")
        print(f"{task}: MRR {values['mrr']:.4f}, NDCG@5 {values['ndcg@5']:.4f}, Hit@1 {values['hit@1']:.4f} over "
              f"{values['queries']} queries{against}")
    return summary


def _per_task(requests: list[RerankRequest], reranked: dict[str, list[str]], qrels: dict[str, dict[str, int]],
              baseline: Run | None) -> dict[str, dict[str, Any]]:
    """Ranking-bench: each task's MRR, NDCG@k and Hit@k (the query's domain is its task name) and, with a
    baseline run, the reranked run's MRR against it within each task of two queries or more, query by query."""
    task_of = {r.query.qid: r.query.domain for r in requests}
    out: dict[str, dict[str, Any]] = per_task_metrics(reranked, qrels, task_of)
    if baseline is None:
        return out
    full = f"mrr@{max((len(r) for r in reranked.values()), default=1)}"  # MRR over the whole list
    for task in out:
        if out[task]["queries"] < 2:  # a paired comparison needs two queries at least
            continue

        def only(table: dict) -> dict:
            return {q: v for q, v in table.items() if task_of.get(q) == task}

        (difference,) = compare_runs(only(baseline), only(_as_scores(reranked)), only(qrels), (full,)).values()
        out[task]["vs_baseline"] = {"mrr": difference.as_dict()}
    return out


def _as_scores(rankings: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    return {qid: {d: float(len(docids) - i) for i, d in enumerate(docids)} for qid, docids in rankings.items()}


def _write_run(path: str, rankings: dict[str, list[str]], tag: str) -> None:
    with storage.writing(path) as local:
        write_run(local, rankings, tag=tag)


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
