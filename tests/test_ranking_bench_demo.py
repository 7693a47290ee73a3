"""R1-Ranker's local recipe, its data: the demo-scale Ranking-bench (deterministic, in the layout the loader reads,
the positive at varying positions and recoverable by the rule each task was made with) and the cold-start SFT
set (well-formed answers of both tasks that name candidates at random: the positive no more and no less often
than chance)."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from reasonrank.data.ranking_bench import CONFIGS, elimination_step_rows, load_ranking_bench
from reasonrank.data.ranking_bench_demo import TASKS, write_ranking_bench_demo
from reasonrank.elimination import parse_elimination
from reasonrank.parsing import has_exact_format, parse_ranking
from reasonrank.tasks.families import family_of
from reasonrank.training.cold_start_set import cold_start_samples

REPO = Path(__file__).resolve().parent.parent
_SHOWN = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)  # a candidate line of a prompt


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_ranking_bench_demo(tmp_path_factory.mktemp("r1-demo"))


@pytest.fixture(scope="module")
def items(bench):
    return load_ranking_bench(str(bench))


def test_same_seed_same_files_another_seed_other_items(tmp_path):
    first = write_ranking_bench_demo(tmp_path / "a", seed=3, train_per_task=4, test_per_task=2)
    again = write_ranking_bench_demo(tmp_path / "b", seed=3, train_per_task=4, test_per_task=2)
    other = write_ranking_bench_demo(tmp_path / "c", seed=4, train_per_task=4, test_per_task=2)
    for config in CONFIGS:
        for split in ("train", "test"):
            name = Path(config) / f"{split}.parquet"
            assert (first / name).read_bytes() == (again / name).read_bytes()
    assert load_ranking_bench(str(first)) != load_ranking_bench(str(other))


def test_the_loader_reads_both_configs_of_three_families_interleaved(bench, items):
    assert load_ranking_bench(str(bench), "iterative") == items
    sizes = {t.name: t.candidates for t in TASKS}
    for split, per_task in (("train", 150), ("test", 50)):
        rows = [i for i in items if i.split == split]
        assert Counter(i.task_name for i in rows) == {t.name: per_task for t in TASKS}
        assert all(len(i.candidates) == sizes[i.task_name] and len(set(i.candidates)) == len(i.candidates)
                   for i in rows)
        # the first rows of a split (GRPO's fixed evaluation set) hold every family
        assert {family_of(i.task_name).name for i in rows[:3]} == {"passages", "recommendation", "routing"}
    assert sorted(set(sizes.values())) == [5, 6, 7, 8]


def test_the_positive_is_at_every_position_about_as_often(items):
    for task in TASKS:
        positions = Counter(i.candidates.index(i.gt) for i in items if i.task_name == task.name)
        assert sorted(positions) == list(range(task.candidates)), (task.name, positions)
        assert max(positions.values()) < 2.2 * sum(positions.values()) / task.candidates, (task.name, positions)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w-]+", text))


def _rule_passage(problem: str, candidates: tuple[str, ...]) -> list[str]:
    """The candidates naming the entity the question asks about (its last word)."""
    entity = problem.rstrip("?").split()[-1]
    return [c for c in candidates if entity in _words(c)]


def _rule_recommendation(problem: str, candidates: tuple[str, ...]) -> list[str]:
    """The candidates of the genre most of the history is in."""
    (liked, count), *others = Counter(re.findall(r"\((\w+)\)", problem)).most_common()
    assert all(count > n for _, n in others)
    return [c for c in candidates if c.endswith(f"({liked})")]


def _rule_router(problem: str, candidates: tuple[str, ...], cheapest: bool) -> list[str]:
    """The models strong at the question's topic (its first word); with `cheapest`, the low-cost ones of them."""
    topic = problem.split()[0].lower()
    strong = [c for c in candidates if f"strong at {topic}," in c]
    if cheapest:
        assert sorted(c.rsplit(", ", 1)[1] for c in strong) == ["high cost.", "low cost."]
        return [c for c in strong if c.endswith("low cost.")]
    return strong


RULES = {"Passage-5": _rule_passage, "Passage-7": _rule_passage, "Rec-Game": _rule_recommendation,
         "Rec-Movie": _rule_recommendation,
         "Router-Performance": lambda p, c: _rule_router(p, c, cheapest=False),
         "Router-Cost": lambda p, c: _rule_router(p, c, cheapest=True)}


def test_each_tasks_positive_is_the_one_its_rule_picks(items):
    assert set(RULES) == {t.name for t in TASKS}
    for item in items:
        assert RULES[item.task_name](item.problem, item.candidates) == [item.gt], item
    # the cost alone does not pick Router-Cost's positive: other models are cheap too
    cost = [i for i in items if i.task_name == "Router-Cost"]
    assert sum(sum(c.endswith("low cost.") for c in i.candidates) > 1 for i in cost) > len(cost) / 2


@pytest.fixture(scope="module")
def cold_start(items):
    train = [i for i in items if i.split == "train"]
    return train, cold_start_samples(train, seed=0)


def test_cold_start_answers_are_well_formed_and_quote_what_they_name(cold_start):
    train, samples = cold_start
    steps = elimination_step_rows(train, 0)
    assert len(samples) == len(steps) + len(train)  # every single step, then one list per item
    for row, sample in zip(steps, samples):  # the GRPO job's own rows and prompts
        assert sample.qid == row.qid and sample.messages[:2] == row.messages()
    for sample in samples:
        shown = dict(_SHOWN.findall(sample.messages[1]["content"]))
        answer = sample.messages[2]["content"]
        assert has_exact_format(answer), answer
        named = re.fullmatch(r"<think>(?:Least|Most) likely: \[(\d+)\] (.*)</think><answer>.*</answer>", answer)
        assert named and shown[named.group(1)] == named.group(2), answer
        if answer.startswith("<think>Least"):
            parsed = parse_elimination(answer, len(shown))
            assert parsed.well_formed and parsed.index == int(named.group(1)) - 1
        else:
            parsed = parse_ranking(answer, len(shown))
            first = int(named.group(1)) - 1  # the one drawn at random, then the others in list order
            assert parsed.well_formed and parsed.order == [first] + [j for j in range(len(shown)) if j != first]


def test_cold_start_names_the_positive_as_often_as_chance(cold_start):
    """The targets teach the format only: an elimination takes the positive with chance 1/m (m shown), a list
    puts it first with chance 1/N; both counts sit within three standard deviations of chance."""
    train, samples = cold_start
    gt_of = {i.qid: i.gt for i in train}
    eliminated, first = [], []  # (names the positive, chance it does)
    for sample in samples:
        shown = dict(_SHOWN.findall(sample.messages[1]["content"]))
        answer = sample.messages[2]["content"]
        named = shown[re.search(r"\[(\d+)\]", answer).group(1)]
        (eliminated if answer.startswith("<think>Least") else first).append(
            (named == gt_of[sample.qid], 1 / len(shown)))
    for outcomes in (eliminated, first):
        hits = sum(hit for hit, _ in outcomes)
        expected = sum(p for _, p in outcomes)
        sd = sum(p * (1 - p) for _, p in outcomes) ** 0.5
        assert abs(hits - expected) < 3 * sd, (hits, expected, sd)
    # and the eliminated id is not a fixed position either
    positions = Counter(re.search(r"<answer>\[(\d+)\]", s.messages[2]["content"]).group(1) for s in samples
                        if s.messages[2]["content"].startswith("<think>Least"))
    assert len(positions) == max(t.candidates for t in TASKS)
    firsts = Counter(re.search(r"<answer>\[(\d+)\]", s.messages[2]["content"]).group(1) for s in samples
                     if s.messages[2]["content"].startswith("<think>Most"))
    assert len(firsts) == max(t.candidates for t in TASKS)


def test_the_sft_job_builds_the_cold_start_set_and_its_tiny_model(bench, cold_start, tmp_path):
    from jobs.sft import _prepare_inputs
    from jobs.sft_config import SFTConfig
    from reasonrank.config import ConfigError, load_config
    from reasonrank.data.tables import read_records
    from reasonrank.data.training_sets import SFTSample

    _, samples = cold_start
    cfg = load_config(REPO / "configs" / "sft-r1-tiny.yaml", SFTConfig, {
        "data.path": str(tmp_path / "cold.parquet"), "data.cold_start.bench_dir": str(bench),
        "model.path": str(tmp_path / "tiny")})
    _prepare_inputs(cfg)
    assert [SFTSample.from_record(r) for r in read_records(tmp_path / "cold.parquet")] == samples
    assert (tmp_path / "tiny" / "config.json").is_file() and (tmp_path / "tiny" / "tokenizer.json").is_file()
    with pytest.raises(ConfigError, match="data.demo and data.cold_start"):
        load_config(REPO / "configs" / "sft-r1-tiny.yaml", SFTConfig, {"data.demo.demo_dir": "outputs/demo"})
