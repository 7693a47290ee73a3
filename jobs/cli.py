"""The `reasonrank` command: one subcommand per job, each running the same code as `python -m jobs.<job>`."""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cluster.stages import Stage
from jobs.common import configure_logging, parse_overrides

app = typer.Typer(help="Train and serve reasoning rerankers on Ray.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file", exists=True, dir_okay=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a config key: key.sub=value")]


def _run_job(module: str, config: Path, overrides: list[str] | None) -> None:
    from reasonrank.config import ConfigError

    configure_logging()
    job = importlib.import_module(f"jobs.{module}")
    try:
        summary = job.run(str(config), parse_overrides(overrides or []))
    except ConfigError as e:
        typer.echo(f"config error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def demo(config: Annotated[Optional[Path], typer.Option("--config", "-c", exists=True, dir_okay=False,
                                                        help="pipeline config (default: the demo)")] = None,
         set_: SetOpt = None) -> None:
    """The demo pipeline: synthesize → SFT, paused after two of its three epochs to evaluate that model against
    BM25 (a first table) → the rest of SFT → evaluate SFT → GRPO → evaluate GRPO → the table of all; one progress
    line per stage on the console, the logs in a file (`--set quiet=false`: all here)."""
    from jobs import demo as demo_job

    configure_logging()
    demo_job.run(str(config) if config else None, parse_overrides(set_ or []))  # shows its tables itself


@app.command()
def evaluate(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Rerank a first-stage run with a model and strategy; write the TREC run, metrics and window log."""
    _run_job("evaluate", config, set_)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="the baseline's TREC run", exists=True, dir_okay=False)],
    run_b: Annotated[Path, typer.Argument(help="the TREC run compared with it", exists=True, dir_okay=False)],
    qrels: Annotated[Path, typer.Option(help="TREC qrels of the queries", exists=True, dir_okay=False)],
    metric: Annotated[Optional[list[str]], typer.Option(help="ndcg@k, recall@k or mrr@k (repeatable)")] = None,
) -> None:
    """Is RUN_B better than RUN_A, or could the choice of queries alone make the gap? Per metric: the mean
    difference B - A over the judged queries, its 95% bootstrap CI and a paired randomisation test."""
    from reasonrank.data.trec import read_qrels, read_run
    from reasonrank.significance import compare_runs

    try:
        compared = compare_runs(read_run(run_a), read_run(run_b), read_qrels(qrels), metric or ["ndcg@10"])
    except ValueError as e:
        typer.echo(f"cannot compare: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"B = {run_b} vs A = {run_a}")
    for difference in compared.values():
        typer.echo(f"  {difference.metric}: A {difference.baseline:.4f}, B {difference.system:.4f}; "
                   f"{difference.describe()}")


@app.command()
def synthesize(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Label queries' candidates with a teacher LLM, filter for self-consistency, write the SFT and RL sets."""
    _run_job("synthesize", config, set_)


@app.command()
def sft(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Cold-start SFT with Ray Train + DeepSpeed; checkpoints resume a preempted or resubmitted run."""
    _run_job("sft", config, set_)


@app.command()
def grpo(config: ConfigOpt, set_: SetOpt = None) -> None:
    """GRPO on Ray actors: vLLM rollouts, reward actors, DeepSpeed learners; weights pushed every step."""
    _run_job("grpo", config, set_)


@app.command()
def serve(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Serve a reranker over HTTP (Cohere v1/v2, Jina, native APIs) until Ctrl-C; prints the URL."""
    _run_job("serve", config, set_)


@app.command()
def submit(
    stage: Annotated[Stage, typer.Argument(help="the stage: its job module jobs.<stage> runs on the cluster")],
    config: ConfigOpt,
    set_: SetOpt = None,
    address: Annotated[Optional[str], typer.Option(help="Ray dashboard, e.g. http://127.0.0.1:8265")] = None,
    runtime: Annotated[Optional[Path], typer.Option(
        "--runtime", help="submit config: working_dir, env vars, pip (configs/submit-*.yaml)",
        exists=True, dir_okay=False)] = None,
    wait: Annotated[bool, typer.Option(help="follow the logs until the job ends")] = True,
) -> None:
    """Submit a stage to a Ray cluster (local or KubeRay) through the Jobs API; follow it; exit with its status."""
    import logging

    from cluster.submit import load_submit_config, submit_stage

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parse_overrides(set_ or [])  # a malformed --set fails here, not on the cluster
    try:
        job = submit_stage(stage, config, set_ or [], load_submit_config(runtime), address)
    except (ValueError, FileNotFoundError, ConnectionError) as e:  # bad config or path, no cluster there
        typer.echo(f"cannot submit: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        status = job.follow() if wait else job.status()
    except KeyboardInterrupt:
        typer.echo(f"stopped following; {job.submission_id} goes on (ray job stop {job.submission_id})", err=True)
        raise typer.Exit(130) from None
    typer.echo(json.dumps({"submission_id": job.submission_id, "stage": stage.value, "status": status.value}, indent=2))
    if wait and status.value != "SUCCEEDED":
        raise typer.Exit(1)
