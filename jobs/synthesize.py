"""Synthesize teacher-labelled training data: queries + candidates → labels → filter → SFT and RL sets.

    python -m jobs.synthesize --config configs/synthesize-demo.yaml [--set teacher.engine.max_retries=8]

Per query, the top `teacher.window_size` candidates become pointwise items (is this passage relevant? the teacher
sees the gold answer when there is one) and one listwise item (reason, then rank the list), plus
`shuffled_lists` more of the same list in shuffled orders when asked for. Ray Data
sends the items through a pool of TeacherLabeler actors, each keeping many requests in flight to the
teacher (any OpenAI-compatible endpoint; DeepSeek-R1 in the paper). Labels are written as parts under
`<output_dir>/labels/` as they come; items that keep failing go to `<output_dir>/errors/` with the reason.
A rerun (after a crash, a kill, or to retry failures) labels only what is not labelled yet: item keys are
stable, so each item ends labelled exactly once. Then the self-consistency filter keeps a list when the
teacher's ranking scores NDCG@10 >= alpha against its own pointwise labels.

Every step runs on Ray Data (reasonrank/teacher/dataflow.py): items are made from the queries in Ray tasks,
the labels are read back from their parts, each query's pointwise and listwise labels meet in one group of a
groupby, where the filter runs and the SFT and RL rows are built, and the tables are written as Parquet by
Ray. The driver holds the dataset it loads and counts, never an item, label or training row (docs/synthesis.md).

Outputs under `output_dir`: labels/ (raw: full responses and reasoning), pointwise.parquet,
listwise.parquet, filter.parquet (score and state per list), sft.parquet, rl.parquet, errors.parquet,
summary.json and filter_by_domain.png.

With `teacher.simulated: true` the job starts the simulated teacher — a test double for DeepSeek-R1 that
answers from the dataset's qrels — on loopback, for local runs without the internet. The API key of a
real teacher is read from the environment variable `teacher.engine.api_key_env` in every labeler actor
(on Kubernetes: a Secret in the pods' environment); it is never written to a config or a log.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
from pydantic import Field, model_validator

from jobs.common import init_ray, main
from jobs.progress import StageProgress
from reasonrank import fingerprint, storage
from reasonrank.config import ConfigError, DataConfig, EngineConfig, PromptConfig, SamplingConfig, Strict, load_config
from reasonrank.data.dataset import RetrievalDataset
from reasonrank.teacher import dataflow
from reasonrank.teacher.assemble import STATES
from reasonrank.teacher.consistency import DEFAULT_ALPHA
from reasonrank.teacher.labeling import ERROR_SCHEMA
from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig

log = logging.getLogger("jobs.synthesize")


class TeacherConfig(PromptConfig):
    """The teacher and the prompt it labels with: window_size candidates per listwise sample (and pointwise
    items per query), each cut to passage_max_tokens of `passage_tokenizer` (no cut without one)."""

    # Rate limits and max_concurrency here are for the whole job; the labelers share them out.
    engine: EngineConfig = EngineConfig(backend="openai", model="deepseek-reasoner", base_url=None,
                                        api_key_env="DEEPSEEK_API_KEY", max_concurrency=64)
    sampling: SamplingConfig = SamplingConfig(temperature=0.6, max_new_tokens=8192)
    simulated: bool = False  # start the simulated teacher (a test double) and label against it
    simulation: SimulationConfig = SimulationConfig()
    use_answer: bool = True  # give the teacher the gold answer in pointwise prompts, where there is one
    passage_tokenizer: str | None = None  # cut passages to passage_max_tokens of this tokenizer (HF folder or id)

    @model_validator(mode="after")
    def _one_teacher(self) -> "TeacherConfig":
        if self.engine.backend != "openai":
            raise ValueError(f"engine.backend must be 'openai' (an OpenAI-compatible teacher endpoint), "
                             f"got {self.engine.backend!r}")
        if self.simulated and self.engine.base_url:
            raise ValueError("simulated is true but engine.base_url is set: the simulated teacher (a test "
                             "double) is never used when a real endpoint is configured; choose one")
        return self


class SynthesizeConfig(Strict):
    data: DataConfig = DataConfig(split="train", first_stage_depth=20)
    teacher: TeacherConfig = TeacherConfig()
    shuffled_lists: int = Field(0, ge=0)  # more listwise samples per query: the same list, shuffled (items.py)
    alpha: float = Field(DEFAULT_ALPHA, ge=0.0, le=1.0)  # self-consistency threshold on NDCG@10
    labelers: int = Field(2, ge=1)  # actors in the labeler pool
    labeler_num_cpus: float = Field(0.5, gt=0)  # fractional, or Ray Data's read tasks starve
    batch_size: int = Field(16, ge=1)  # items per Ray Data batch (one label part each)
    output_dir: str = "outputs/synthesize"
    ray_num_cpus: int | None = 8  # logical CPUs of an embedded Ray (ignored on a cluster)


def run(config_path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return synthesize(load_config(config_path, SynthesizeConfig, overrides))


def synthesize(cfg: SynthesizeConfig) -> dict[str, Any]:
    """Every step a Ray Data operation (reasonrank/teacher/dataflow.py): the driver holds the dataset it
    loads and counts, never an item, label or training row."""
    import ray

    fingerprint.check_and_record(cfg.output_dir, "synthesize", results_fingerprint(cfg))
    dataset = cfg.data.load()
    init_ray(cfg.ray_num_cpus)
    dataflow.configure_ray_data()
    spec = _item_spec(cfg)
    requests = dataflow.requests_dataset(dataset.requests(cfg.teacher.window_size))
    labels_path, errors_path = storage.join(cfg.output_dir, "labels"), storage.join(cfg.output_dir, "errors")
    items = requests.flat_map(spec.item_rows).materialize()
    todo = items.map_batches(dataflow.Unlabelled, fn_constructor_kwargs={"labels_path": labels_path},
                             batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1)).materialize()
    n_items, n_todo = items.count(), todo.count()
    del items
    log.info("%d items: %d already labelled, %d to label", n_items, n_items - n_todo, n_todo)
    this_run: Counter = Counter()
    served: dict[str, Any] = {}
    with StageProgress("synthesize", n_items, "teacher labels", cfg.output_dir, done=n_items - n_todo) as progress:
        if n_todo:
            with _teacher_endpoint(cfg.teacher, dataset, served) as engine:
                this_run = _label(cfg, engine, todo, n_todo, labels_path, errors_path, progress)
        del todo
        progress.status("self-consistency filter, SFT and RL sets")
        assembled = dataflow.assemble_dataset(requests, labels_path, errors_path, spec, cfg.alpha, n_items)
        storage.makedirs(cfg.output_dir)
        counts = dataflow.write_tables(assembled, cfg.output_dir, {"errors": ERROR_SCHEMA})
        return _report(cfg, n_items, counts, this_run, served, already=n_items - n_todo)


def results_fingerprint(cfg: SynthesizeConfig) -> dict[str, Any]:
    """What the labels depend on. Not the filter's threshold (the filter runs anew over the labels every run),
    nor the simulated teacher's latency and faults (retried, or relabelled by a rerun)."""
    return fingerprint.fingerprint(cfg, ignore=(
        "alpha", "labelers", "labeler_num_cpus", "batch_size", "teacher.simulation.latency_s",
        "teacher.simulation.fault_*", "teacher.simulation.fail_first", "teacher.simulation.retry_after_s",
        "teacher.simulation.hang_s"))


def _item_spec(cfg: SynthesizeConfig) -> dataflow.ItemSpec:
    teacher = cfg.teacher
    return dataflow.ItemSpec(teacher.engine.model, teacher.window_size, teacher.passage_tokenizer,
                             teacher.passage_max_tokens if teacher.passage_tokenizer else None,
                             teacher.use_answer, cfg.shuffled_lists)


@contextlib.contextmanager
def _teacher_endpoint(teacher: TeacherConfig, dataset: RetrievalDataset,
                      served: dict[str, Any]) -> Iterator[EngineConfig]:
    """The engine config the labelers use: the configured endpoint, or a simulated teacher started here
    (which reports into `served` its answers by outcome — ok and each injected fault — and the most
    requests it held at once)."""
    if not teacher.simulated:
        if teacher.engine.api_key() is None:  # fail now, not with every item rejected 401 later
            raise ConfigError(f"teacher.engine: no API key; set the environment variable "
                              f"{teacher.engine.api_key_env} (any value for a server that needs none), or "
                              f"use teacher.simulated: true for a local run")
        yield teacher.engine
        return
    if not dataset.qrels:
        raise ConfigError("teacher.simulated needs relevance labels (data qrels) to answer from")
    simulated = SimulatedTeacher({q.qid: q.text for q in dataset.queries}, dataset.corpus, dataset.qrels,
                                 teacher.simulation)
    with simulated:
        errors = teacher.simulation.errors
        log.warning("labelling with the SIMULATED teacher at %s: a test double for DeepSeek-R1 that answers "
                    "from the qrels (noise %.2f; misses a paraphrase %.2f, fooled by an echo %.2f, swaps %.2f; "
                    "fault rate %.2f)", simulated.base_url, teacher.simulation.noise, errors.missed_paraphrase,
                    errors.fooled_by_echo, errors.swap, teacher.simulation.fault_rate)
        try:
            yield teacher.engine.model_copy(update={"base_url": simulated.base_url})
        finally:
            served.update(answers=dict(simulated.outcomes), peak_in_flight=simulated.peak_in_flight)


def _per_labeler(engine: EngineConfig, labelers: int) -> EngineConfig:
    """Share the job's concurrency and rate limits out among the labeler actors."""
    def share(value: float | None) -> float | None:
        return None if value is None else value / labelers

    return engine.model_copy(update={"max_concurrency": max(1, math.ceil(engine.max_concurrency / labelers)),
                                     "requests_per_s": share(engine.requests_per_s),
                                     "tokens_per_min": share(engine.tokens_per_min)})


def _label(cfg: SynthesizeConfig, engine: EngineConfig, todo: Any, n_todo: int, labels_path: str,
           errors_path: str, progress: StageProgress) -> Counter:
    """Label the `todo` dataset over the actor pool; returns this run's counts and token totals."""
    import ray

    from actors.labeler import TeacherLabeler

    params = cfg.teacher.sampling.params()
    per_labeler = _per_labeler(engine, cfg.labelers)
    # One batch per block, and enough batches running in each actor at once that its request slots stay busy.
    # A batch returns when its slowest request does (a retry after a timeout or a 429, or a long reasoning),
    # several times a typical request's time, so each actor holds eight times the items it has slots for:
    # with twice, the demo's labelling (5% of calls faulting) took 88 s, with eight 30 s.
    batches_per_labeler = 8 * math.ceil(per_labeler.max_concurrency / cfg.batch_size)
    results = todo.repartition(math.ceil(n_todo / cfg.batch_size)).map_batches(
        TeacherLabeler,
        fn_constructor_kwargs={"engine": per_labeler.model_dump(), "sampling": dataclasses.asdict(params),
                               "labels_path": labels_path, "errors_path": errors_path},
        batch_size=cfg.batch_size, batch_format="pyarrow", num_cpus=cfg.labeler_num_cpus,
        compute=ray.data.ActorPoolStrategy(size=cfg.labelers, max_concurrent_calls_per_actor=batches_per_labeler,
                                           max_tasks_in_flight_per_actor=batches_per_labeler),
    )
    counts: Counter = Counter()
    for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
        for name in ("label", "error", "tokens_in", "tokens_out"):
            counts[name] += pa.compute.sum(batch.column(name)).as_py() or 0
        progress.advance(int(pa.compute.sum(batch.column("label")).as_py() or 0)
                         + int(pa.compute.sum(batch.column("error")).as_py() or 0),
                         f"{counts['error']} failed" if counts["error"] else None)
    return counts


def _report(cfg: SynthesizeConfig, n_items: int, counts: dict[str, int], this_run: Counter,
            served: dict[str, Any], already: int) -> dict[str, Any]:
    out = cfg.output_dir
    per_domain = dataflow.per_domain(counts)
    failed = counts.get("failed", 0)
    summary = {
        "teacher": "simulated" if cfg.teacher.simulated else cfg.teacher.engine.model,
        "items": n_items,
        "labelled": counts.get("labelled", 0),
        "already_labelled": already,
        "labelled_this_run": this_run["label"],
        "failed": failed,
        "failure_reasons": dataflow.prefixed(counts, "failure_reason/"),
        "retried_for": dataflow.prefixed(counts, "retried_for/"),  # absorbed faults
        "pending": n_items - counts.get("labelled", 0) - failed,
        "queries": counts.get("queries", 0),
        "lists": counts.get("lists", 0),
        "kept": counts.get("state/kept", 0),
        "filtered_out": counts.get("state/dropped", 0),
        "lists_failed": counts.get("state/failed", 0),
        "lists_pending": counts.get("state/pending", 0),
        "alpha": cfg.alpha,
        "tokens_in": counts.get("tokens_in", 0),
        "tokens_out": counts.get("tokens_out", 0),
        "tokens_in_this_run": this_run["tokens_in"],
        "tokens_out_this_run": this_run["tokens_out"],
        "per_domain": per_domain,
        "output_dir": out,
    }
    if cfg.teacher.simulated:
        summary["simulated_teacher_this_run"] = served
    storage.write_text_atomic(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    _plot_per_domain(per_domain, storage.join(out, "filter_by_domain.png"), cfg.alpha)
    print(_summary_table(summary))
    return summary


def _summary_table(summary: dict[str, Any]) -> str:
    lines = [f"items {summary['items']}: labelled {summary['labelled']} "
             f"({summary['labelled_this_run']} this run), failed {summary['failed']} "
             f"{summary['failure_reasons'] or ''}, pending {summary['pending']}; "
             f"tokens in/out {summary['tokens_in']}/{summary['tokens_out']}",
             f"{'domain':<16}" + "".join(f"{s:>9}" for s in STATES)]
    for domain, counts in summary["per_domain"].items():
        lines.append(f"{domain or '-':<16}" + "".join(f"{counts[s]:>9}" for s in STATES))
    totals = [summary["kept"], summary["filtered_out"], summary["lists_failed"], summary["lists_pending"]]
    lines.append(f"{'all':<16}" + "".join(f"{n:>9}" for n in totals))
    return "\n".join(lines)


def _plot_per_domain(per_domain: dict[str, dict[str, int]], path: str, alpha: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(per_domain) or ["-"]
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(domains), 3.2))
    bottom = [0] * len(domains)
    for state in STATES:
        heights = [per_domain.get(d, {}).get(state, 0) for d in domains]
        ax.bar(domains, heights, bottom=bottom, label=state)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel("queries")
    ax.set_title(f"self-consistency filter (NDCG@10 >= {alpha})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with storage.writing(path) as local:
        fig.savefig(local, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
