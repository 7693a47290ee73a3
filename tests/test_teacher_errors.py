"""The simulated teacher's error model (reasonrank/teacher/misjudgement.py) measured by its stated rates on the
demo set, and the self-consistency filter on the labels of a teacher that errs. The rates are measured from the
teacher's own answers to the real prompts (its `answer`, what the server sends); the filter test labels over
real HTTP on 127.0.0.1 with the real `openai` client. No Ray."""
from __future__ import annotations

import asyncio
import re

import pytest

from reasonrank.config import EngineConfig
from reasonrank.engines.base import SamplingParams
from reasonrank.engines.openai_engine import OpenAIEngine
from reasonrank.parsing import parse_ranking
from reasonrank.teacher.assemble import assemble
from reasonrank.teacher.consistency import ConsistencyFilter
from reasonrank.teacher.items import LISTWISE, POINTWISE, teacher_items
from reasonrank.teacher.labeling import label_item
from reasonrank.teacher.misjudgement import TeacherErrors, word_overlap
from reasonrank.teacher.prompts import parse_relevance
from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig
from reasonrank.training.demo_set import gold_order

WINDOW = 10
RATES = {"missed_paraphrase": 0.3, "fooled_by_echo": 0.2, "swap": 0.1}
TOLERANCE = 0.05  # each measured rate within this of its configured rate (1,259 to 4,046 draws: 3.9 to 8 sigma)
_RECAP = re.compile(r"Relevant: ((?:\[\d+\] ?)+|none)\.")


@pytest.fixture(scope="module")
def train(demo_data):
    dataset = demo_data.load()
    return dataset, dataset.subset("train").requests(WINDOW)


def _teacher(dataset, **settings) -> SimulatedTeacher:
    return SimulatedTeacher({q.qid: q.text for q in dataset.queries}, dataset.corpus, dataset.qrels,
                            SimulationConfig(**{"noise": 0.0, "seed": 7, **settings}))


def _kind(query: str, passage: str, grade: int, errors: TeacherErrors) -> str:
    overlap = word_overlap(query, passage)
    if grade > 0:
        return "paraphrase" if overlap < errors.unlike_below else "relevant"
    return "echo" if overlap >= errors.echo_from else "irrelevant"


def _listwise_verdicts(reasoning: str, size: int) -> list[bool]:
    """Per passage of a listwise prompt, the teacher's verdict, read from its reasoning's closing recap."""
    named = {int(k) for k in re.findall(r"\d+", _RECAP.search(reasoning).group(1))}
    return [k in named for k in range(1, size + 1)]


def _swaps(expected: list[int], answered: list[int]) -> tuple[int, int]:
    """(swaps, draws): the adjacent pairs `answered` swapped against `expected`, and the pairs the teacher drew
    for, walking down the list and skipping the one after each swap."""
    swaps = draws = i = 0
    while i < len(expected) - 1:
        draws += 1
        if answered[i] == expected[i + 1] and answered[i + 1] == expected[i]:
            swaps += 1
            i += 2
        else:
            assert answered[i] == expected[i], "the answer differs from the verdicts' order by more than swaps"
            i += 1
    return swaps, draws


def _measure(teacher: SimulatedTeacher, requests, errors: TeacherErrors) -> dict:
    """Per kind of passage, the verdicts that differ from the labels over the candidates' pointwise prompts and
    over each list's first-stage order; and the listwise swaps."""
    seen = {view: {k: [0, 0] for k in ("paraphrase", "relevant", "echo", "irrelevant")}
            for view in (POINTWISE, LISTWISE)}
    swaps = draws = 0
    for request in requests:
        grades = teacher.qrels.get(request.query.qid, {})
        texts = {c.docid: c.text for c in request.candidates}
        items = teacher_items(request, "m", list_size=WINDOW)
        listwise = [it for it in items if it.kind == LISTWISE]
        assert len(listwise) == 1
        for item in items:
            reasoning, answer = teacher.answer(list(item.messages))
            truth = [grades.get(d, 0) for d in item.docids]
            if item.kind == POINTWISE:
                verdicts = [parse_relevance(answer)]
            else:
                verdicts = _listwise_verdicts(reasoning, len(truth))
                order = parse_ranking(f"<think>{reasoning}</think>{answer}", len(truth)).order
                judged = sorted(range(len(truth)), key=lambda k: not verdicts[k])  # what the walk says, stable
                s, d = _swaps(judged, order)
                swaps, draws = swaps + s, draws + d
            for docid, grade, verdict in zip(item.docids, truth, verdicts):
                kind = _kind(request.query.text, texts[docid], grade, errors)
                seen[item.kind][kind][0] += verdict != (grade > 0)
                seen[item.kind][kind][1] += 1
    return {"seen": seen, "swaps": (swaps, draws)}


def test_word_overlap_tells_the_demo_sets_echoes_and_paraphrases_apart():
    question = "Who first isolated Zorvium?"
    errors = TeacherErrors()
    echo = "Forum post: Who first isolated Zorvium? I searched Zorvium pages everywhere but found nothing."
    close = "Zorvium was first isolated by Dr. Kalo in 1820."
    paraphrase = "The discovery of Zorvium as a pure substance is credited to Dr. Kalo."
    assert word_overlap(question, echo) == 1.0
    assert word_overlap(question, close) == 0.75  # zorvium, first, isolated of who/first/isolated/zorvium
    assert word_overlap(question, paraphrase) == 0.25
    assert [_kind(question, p, g, errors) for p, g in ((echo, 0), (close, 1), (paraphrase, 1), (close, 0))] == [
        "echo", "relevant", "paraphrase", "irrelevant"]


def test_misjudgements_come_at_their_stated_rates_in_both_views_and_nowhere_else(train):
    dataset, requests = train
    errors = TeacherErrors(**RATES)
    measured = _measure(_teacher(dataset, errors=RATES), requests, errors)
    expected = {"paraphrase": RATES["missed_paraphrase"], "echo": RATES["fooled_by_echo"], "relevant": 0.0,
                "irrelevant": 0.0}
    print({view: {kind: f"{wrong}/{total}" for kind, (wrong, total) in kinds.items()}
           for view, kinds in measured["seen"].items()}, "swaps %d/%d" % measured["swaps"])
    for view, kinds in measured["seen"].items():
        for kind, (wrong, total) in kinds.items():
            assert total >= 400, (view, kind, total)  # enough draws for the tolerance
            assert wrong / total == pytest.approx(expected[kind], abs=TOLERANCE), (view, kind, wrong, total)
    swaps, draws = measured["swaps"]
    assert draws >= 8000 and swaps / draws == pytest.approx(RATES["swap"], abs=TOLERANCE / 2)


def test_at_rate_0_the_teacher_answers_exactly_as_without_the_error_model(train):
    dataset, requests = train
    prompts = [list(it.messages) for r in requests[:150] for it in teacher_items(r, "m", list_size=WINDOW,
                                                                                   shuffled_lists=1)]
    default = _teacher(dataset, noise=0.1)
    # rates 0 with other thresholds: no draw, no change (the `noise` flips keep their own stream)
    zero = _teacher(dataset, noise=0.1, errors={"unlike_below": 1.0, "echo_from": 0.0})
    assert [zero.answer(p) for p in prompts] == [default.answer(p) for p in prompts]
    # and without noise it ranks exactly by the labels: every verdict right, every list in gold order
    exact = _measure(_teacher(dataset), requests[:150], TeacherErrors())
    assert all(wrong == 0 for kinds in exact["seen"].values() for wrong, _ in kinds.values())
    assert exact["swaps"][0] == 0
    request = requests[0]
    [listwise] = [it for it in teacher_items(request, "m", list_size=WINDOW) if it.kind == LISTWISE]
    reasoning, answer = _teacher(dataset).answer(list(listwise.messages))
    assert parse_ranking(f"<think>{reasoning}</think>{answer}", WINDOW).order == gold_order(
        request.candidates, dataset.qrels[request.query.qid])


_CLOSING = re.compile(r"Relevant: ([^.]*)\.(?: Others: ([^.]*)\.)?$")


def _ids(named: str | None) -> list[int]:
    return [int(k) for k in re.findall(r"\d+", named or "")]


@pytest.mark.parametrize("others_recap", [None, True])
def test_the_listwise_reasoning_closes_with_a_recap_the_answer_copies(train, others_recap):
    """By default (the demo's), the recap names the ids judged relevant and the answer lists them first; with
    `others_recap`, it names the others too, and the answer is the one list then the other. Noisy verdicts, so the
    recaps are not the labels' order."""
    dataset, requests = train
    teacher = _teacher(dataset, noise=0.3, others_recap=others_recap, reasoning_words=1)
    differs = 0
    for request in requests[:40]:
        [listwise] = [it for it in teacher_items(request, "m", list_size=WINDOW) if it.kind == LISTWISE]
        reasoning, answer = teacher.answer(list(listwise.messages))
        relevant, others = (_ids(g) for g in _CLOSING.search(reasoning.strip()).groups())
        order = [k + 1 for k in parse_ranking(f"<think>{reasoning}</think>{answer}", WINDOW).order]
        assert order[:len(relevant)] == relevant
        if others_recap:
            assert order == relevant + others
        else:
            assert others == [] and "Others:" not in reasoning
        differs += order != [k + 1 for k in gold_order(request.candidates, dataset.qrels[request.query.qid])]
    assert differs >= 20


def test_the_same_prompt_gets_the_same_misjudgements_and_another_seed_others(train):
    dataset, requests = train
    prompts = [list(it.messages) for r in requests[:100] for it in teacher_items(r, "m", list_size=WINDOW)]
    teachers = [_teacher(dataset, errors=RATES), _teacher(dataset, errors=RATES), _teacher(dataset, errors=RATES,
                                                                                        seed=8)]
    first, rerun, other_seed = ([t.answer(p) for p in prompts] for t in teachers)
    assert rerun == first  # a rerun gets the same answers: synthesis resumes by item
    assert other_seed != first


def _label_all(teacher: SimulatedTeacher, items) -> dict[str, dict]:
    engine = OpenAIEngine(EngineConfig(backend="openai", model="simulated-deepseek-r1", base_url=teacher.base_url,
                                       max_concurrency=32, request_timeout_s=10, max_retries=0))

    async def run() -> list[tuple[str, dict]]:
        try:
            return await asyncio.gather(*(label_item(engine, it, SamplingParams(max_new_tokens=4096))
                                          for it in items))
        finally:
            await engine.release_loop()

    results = asyncio.run(run())
    assert all(kind == "label" for kind, _ in results)
    return {row["key"]: row for _, row in results}


def test_the_filter_drops_the_lists_where_an_erring_teacher_disagrees_with_itself(train):
    dataset, requests = train
    requests = requests[:120]
    items = [it for r in requests for it in teacher_items(r, "m", list_size=WINDOW, shuffled_lists=1)]
    with _teacher(dataset, errors={**RATES, "swap": 0.0}) as teacher:
        labels = _label_all(teacher, items)
    out = assemble(requests, items, labels, {}, ConsistencyFilter())
    states = {d["key"]: d["state"] for d in out.decisions}
    assert len(states) == 2 * len(requests)

    counts = {"agree_kept": 0, "none_dropped": 0, "disagree_dropped": 0, "disagree_kept": 0}
    inherited = 0  # errors the filter cannot see: both views misjudged a passage alike
    for request in requests:
        truth = {d for d, g in dataset.qrels.get(request.query.qid, {}).items() if g > 0}
        mine = [labels[it.key] for it in items if it.qid == request.query.qid]
        pointwise = {row["docids"][0] for row in mine if row["kind"] == POINTWISE and row["relevant"]}
        for row in (r for r in mine if r["kind"] == LISTWISE):
            listwise = {d for d, yes in zip(row["docids"], _listwise_verdicts(row["reasoning"], WINDOW)) if yes}
            ranking = [row["docids"][k] for k in row["order"]]
            assert set(ranking[:len(listwise)]) == listwise  # the answer lists the passages it judged relevant first
            state = states[row["key"]]
            if not pointwise:
                assert state == "dropped", "no passage judged relevant pointwise: nothing to agree on"
                counts["none_dropped"] += 1
            elif listwise == pointwise:
                assert state == "kept", "the two views agree: the ranking scores NDCG@10 1.0"
                counts["agree_kept"] += 1
                inherited += len(listwise ^ (truth & set(row["docids"])))
            else:
                counts[f"disagree_{state}"] += 1
            if pointwise == listwise == truth & set(row["docids"]) and truth & set(row["docids"]):
                assert state == "kept", "a teacher right in both views is always kept"
    print(counts, f"{inherited} errors in kept lists where both views agree")
    assert all(n > 0 for n in counts.values()), counts  # the filter has real work, and keeps mild disagreements
    assert inherited > 0  # and some errors pass into the training data
    kept = [k for k, s in states.items() if s == "kept"]
    assert sorted(s["id"] for s in out.sft) == sorted(kept) == sorted(r["id"] for r in out.rl)
    for rl in out.rl:  # the RL reference is the teacher's pointwise verdicts, errors included
        mine = {labels[it.key]["docids"][0] for it in items if it.qid == rl["qid"] and it.kind == POINTWISE
                and labels[it.key]["relevant"]}
        assert set(rl["relevant_docids"]) == mine


def test_the_error_model_is_configured_under_teacher_simulation_errors_and_part_of_the_labels_fingerprint(demo_data):
    from pathlib import Path

    from jobs.synthesize import SynthesizeConfig, results_fingerprint
    from reasonrank.config import ConfigError, load_config

    demo = Path(__file__).resolve().parent.parent / "configs" / "synthesize-demo.yaml"
    base = {"data.demo_dir": str(demo_data.root)}
    default = load_config(demo, SynthesizeConfig, base)
    assert default.teacher.simulation.errors == TeacherErrors()  # off in the demo: its figures are unchanged
    erring = load_config(demo, SynthesizeConfig, {**base, "teacher.simulation.errors.missed_paraphrase": 0.3,
                                                  "teacher.simulation.errors.swap": 0.02})
    assert erring.teacher.simulation.errors == TeacherErrors(missed_paraphrase=0.3, swap=0.02)
    assert results_fingerprint(erring) != results_fingerprint(default)  # a resume with other rates is refused
    recap = load_config(demo, SynthesizeConfig, {**base, "teacher.simulation.others_recap": True})
    assert results_fingerprint(recap) != results_fingerprint(default)  # and one with the other reasoning
    # false is the default reasoning, and labels made before the key existed (no key: None) resume
    said_false = load_config(demo, SynthesizeConfig, {**base, "teacher.simulation.others_recap": False})
    assert results_fingerprint(said_false) == results_fingerprint(default)
    assert results_fingerprint(default)["teacher.simulation.others_recap"] is None
    with pytest.raises(ConfigError, match="teacher.simulation.errors.fooled_by_echo"):
        load_config(demo, SynthesizeConfig, {**base, "teacher.simulation.errors.fooled_by_echo": 1.5})
    with pytest.raises(ConfigError, match="teacher.simulation.errors.missed"):
        load_config(demo, SynthesizeConfig, {**base, "teacher.simulation.errors.missed": 0.3})
