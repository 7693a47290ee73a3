"""The demo dataset: a small reasoning-flavoured retrieval task, generated deterministically (no downloads).

A made-up world of entities (minerals, library functions, theorems, towns) with facts. A query asks one
question about one entity ("Who first isolated Zorvium?"); the relevant passages state that fact about
THAT entity, in one of a few fixed phrasings, some sharing few words with the question. Distractors:
  - echoes: repeat the question and the entity without answering it (BM25 ranks them first);
  - the same kind of fact about another entity;
  - another fact about the same entity;
  - unrelated facts.
BM25 is misled by the echoes (NDCG@10 around 0.3-0.5), while "states a fact about the asked entity, in the
asked form" is a pattern a tiny transformer can learn from a thousand training queries (from a couple of
hundred it memorises their entities instead).

Files: queries.jsonl (qid, text, domain, answer, split), corpus.jsonl (docid, text), qrels.txt (TREC),
bm25.run (TREC): each query's 20 passages in BM25 order. The candidates are the passages written for the
query rather than BM25's top 20 over the whole corpus, where the other queries' echoes would crowd the
relevant passages out: the demo controls what the first stage hands over, BM25 only orders it.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reasonrank.data.bm25 import bm25_run
from reasonrank.data.dataset import RetrievalDataset
from reasonrank.data.tables import read_records, write_records
from reasonrank.data.trec import write_qrels, write_run

NUM_TRAIN, NUM_TEST = 1000, 250
CANDIDATES = 20
SPARE_ENTITIES = 16  # per domain, never asked about: the pool for other-entity distractors

_SYLLABLES = ("ka", "lo", "mi", "zu", "ra", "ven", "tor", "qui", "sel", "dar", "nox", "pel", "bri", "gan",
              "fi", "sha", "mo", "tek", "vul", "zo", "rin", "tal", "ech", "por", "lu", "bex", "dro", "kin")


def made_up_word(rng: random.Random, parts: int) -> str:
    """A name from `parts` syllables ("zorven"): no word of a real language, so no model knows it beforehand."""
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts))


def _person(rng: random.Random) -> str:
    return f"{rng.choice(('Dr.', 'Prof.'))} {made_up_word(rng, 2).capitalize()}"


def _year(rng: random.Random) -> str:
    return str(rng.randint(1700, 1990))


@dataclass(frozen=True)
class _Kind:
    """One kind of question: how it is asked, how its fact is stated, how its answer is drawn."""

    question: str
    statements: tuple[str, ...]  # phrasings of the fact; {e} the entity, {a} the answer, {y} a year
    answer: Callable[[random.Random], str]


@dataclass(frozen=True)
class _Domain:
    name: str
    entity: Callable[[random.Random], str]
    kinds: tuple[_Kind, ...]


_DOMAINS = (
    _Domain("qa", lambda r: made_up_word(r, 2).capitalize() + r.choice(("ium", "ite", "ase")), (
        _Kind("Who first isolated {e}?",
              ("{e} was first isolated by {a} in {y}.",
               "In {y}, {a} became the first chemist to obtain pure {e}.",
               "The discovery of {e} as a pure substance is credited to {a}."), _person),
        _Kind("At what temperature does {e} melt?",
              ("{e} melts at {a}.", "Heated to {a}, solid {e} turns into a liquid.",
               "The melting point of {e} is {a}."), lambda r: f"{r.randint(40, 3000)} degrees"),
        _Kind("What color is pure {e}?",
              ("Pure {e} is {a} in color.", "Samples of {e} look {a} under daylight.",
               "Crystals of {e} have a {a} tint."),
              lambda r: r.choice(("red", "green", "blue", "violet", "amber", "grey", "white", "black"))),
    )),
    _Domain("code", lambda r: f"{made_up_word(r, 2)}_{r.choice(('load', 'parse', 'merge', 'split', 'fetch', 'encode'))}", (
        _Kind("What does the function {e} return?",
              ("The function {e} returns {a}.", "Calling {e} gives back {a} to the caller.",
               "Output of {e}: {a}."),
              lambda r: r.choice(("a list of strings", "an integer count", "a sorted tuple", "a boolean flag",
                                  "a byte string", "a dictionary of counts", "a float ratio"))),
        _Kind("Which module defines {e}?",
              ("{e} is defined in the {a} module.", "Import {e} from {a} before use.",
               "The source code of {e} lives in {a}."),
              lambda r: made_up_word(r, 2) + r.choice(("lib", "utils", "core"))),
        _Kind("What error does {e} raise on empty input?",
              ("{e} raises {a} when its input is empty.", "Passing nothing to {e} throws {a}.",
               "Given an empty argument, {e} fails with {a}."),
              lambda r: r.choice(("ValueError", "KeyError", "IndexError", "TypeError", "LookupError",
                                  "EmptyInputError"))),
    )),
    _Domain("math", lambda r: made_up_word(r, 2).capitalize(), (
        _Kind("Who proved the {e} theorem?",
              ("The {e} theorem was proved by {a} in {y}.", "{a} gave the first proof of the {e} theorem.",
               "A proof of the {e} result appeared in {y}, written by {a}."), _person),
        _Kind("How many solutions does the {e} equation have?",
              ("The {e} equation has exactly {a}.", "Solving the {e} equation yields {a}.",
               "There are {a} to the {e} equation, no more."),
              lambda r: f"{r.randint(2, 40)} solutions"),
        _Kind("What is the value of the {e} constant?",
              ("The {e} constant equals {a}.", "Evaluating the {e} constant gives exactly {a}.",
               "{a} is the number known as the {e} constant."),
              lambda r: f"{r.randint(1, 9)}.{r.randint(10, 99)}"),
    )),
    _Domain("web", lambda r: made_up_word(r, 2).capitalize() + r.choice(("ton", "burg", "ville", "port", "field")), (
        _Kind("When was {e} founded?",
              ("{e} was founded in {a}.", "Settlers established {e} in the year {a}.",
               "{e} dates back to {a}, when its first houses were built."), _year),
        _Kind("Who is the mayor of {e}?",
              ("The mayor of {e} is {a}.", "{a} leads the town council of {e}.",
               "{e} elected {a} to run the town hall."), _person),
        _Kind("What is {e} famous for?",
              ("{e} is famous for {a}.", "Visitors come to {e} mainly for {a}.",
               "{e} is known across the region for {a}."),
              lambda r: r.choice(("its glass bridges", "its salt markets", "a spring festival",
                                  "its copper mines", "blue cheese", "horse races", "old lighthouses"))),
    )),
)

_ECHOES = (
    "{q} Many people ask this about {e}, and the {e} question comes up often.",
    "Forum post: {q} I searched {e} pages everywhere but found nothing.",
    "{e}, {e}: {q} Still unanswered, please help.",
    "Quiz: {q} The answer is hidden. More {e} quizzes below.",
    "We wonder: {q} Nobody here knows yet. Tell us about {e}.",
    "Homework help: {q} Please explain {e} simply.",
)


@dataclass(frozen=True)
class _Fact:
    entity: str
    kind: _Kind
    answer: str
    year: str

    def statement(self, phrasing: int) -> str:
        return self.kind.statements[phrasing].format(e=self.entity, a=self.answer, y=self.year)


def _world(rng: random.Random, entities_per_domain: int) -> dict[str, list[list[_Fact]]]:
    """domain -> entities -> one fact per question kind."""
    world = {}
    for domain in _DOMAINS:
        names: list[str] = []
        while len(names) < entities_per_domain:
            name = domain.entity(rng)
            if name not in names:
                names.append(name)
        world[domain.name] = [[_Fact(e, k, k.answer(rng), _year(rng)) for k in domain.kinds] for e in names]
    return world


def _passages(rng: random.Random, asked: _Fact, entity_facts: list[_Fact], others: list[_Fact],
              question: str) -> tuple[list[str], list[str]]:
    """(relevant passages, distractors) written for one question: CANDIDATES passages in all."""
    relevant = [asked.statement(p) for p in rng.sample(range(3), rng.randint(1, 3))]
    echoes = [t.format(q=question, e=asked.entity) for t in rng.sample(_ECHOES, rng.randint(2, 6))]
    facts = (rng.sample([f for f in others if f.kind is asked.kind], rng.randint(2, 4))
             + rng.sample([f for f in entity_facts if f is not asked], rng.randint(1, 2)))
    unrelated = [f for f in others if f not in facts]
    facts += rng.sample(unrelated, CANDIDATES - len(relevant) - len(echoes) - len(facts))
    return relevant, echoes + [f.statement(rng.randrange(3)) for f in facts]


@dataclass(frozen=True)
class DemoDataset:
    root: Path
    queries_path: Path
    corpus_path: Path
    qrels_path: Path
    run_path: Path

    @staticmethod
    def at(root: str | Path) -> "DemoDataset":
        root = Path(root)
        return DemoDataset(root, root / "queries.jsonl", root / "corpus.jsonl", root / "qrels.txt",
                           root / "bm25.run")

    def exists(self) -> bool:
        return all(p.is_file() for p in (self.queries_path, self.corpus_path, self.qrels_path, self.run_path))

    def load(self) -> RetrievalDataset:
        return RetrievalDataset.from_files(self.queries_path, self.corpus_path, self.qrels_path, self.run_path)

    def texts(self) -> Iterator[str]:
        """Every query and passage text (what a tokenizer for the demo is trained on)."""
        for r in read_records(self.queries_path):
            yield r["text"]
        for r in read_records(self.corpus_path):
            yield r["text"]


def write_demo_dataset(out_dir: str | Path, seed: int = 0) -> DemoDataset:
    """Generate the demo dataset into `out_dir` (same seed, same files)."""
    rng = random.Random(seed)
    total = NUM_TRAIN + NUM_TEST
    per_domain = -(-total // len(_DOMAINS))
    world = _world(rng, per_domain + SPARE_ENTITIES)
    corpus: dict[str, str] = {}  # text -> docid, in order of first writing
    queries, qrels, pools = [], {}, {}
    for i in range(total):
        domain = _DOMAINS[i % len(_DOMAINS)]
        entities = world[domain.name]
        entity_facts = entities[i // len(_DOMAINS)]  # one question per entity: no fact is asked twice
        asked = rng.choice(entity_facts)
        others = [f for facts in entities[per_domain:] for f in facts]  # facts no query asks about
        question = asked.kind.question.format(e=asked.entity)
        relevant, distractors = _passages(rng, asked, entity_facts, others, question)
        qid = f"q{i:03d}"
        for text in relevant + distractors:
            corpus.setdefault(text, f"d{len(corpus):05d}")
        qrels[qid] = {corpus[t]: 1 for t in relevant}
        pools[qid] = [corpus[t] for t in rng.sample(relevant + distractors, CANDIDATES)]
        queries.append({"qid": qid, "text": question, "domain": domain.name, "answer": asked.answer})
    test = set(rng.sample(range(total), NUM_TEST))
    for i, q in enumerate(queries):
        q["split"] = "test" if i in test else "train"
    demo = DemoDataset.at(out_dir)
    demo.root.mkdir(parents=True, exist_ok=True)
    docs = {docid: text for text, docid in corpus.items()}
    write_records(demo.queries_path, queries)
    write_records(demo.corpus_path, [{"docid": d, "text": t} for d, t in docs.items()])
    write_qrels(demo.qrels_path, qrels)
    write_run(demo.run_path, bm25_run({q["qid"]: q["text"] for q in queries}, docs, candidates=pools))
    return demo


def ensure_demo_dataset(out_dir: str | Path, seed: int = 0) -> DemoDataset:
    """The demo dataset in `out_dir`, generated there first when it is not complete."""
    demo = DemoDataset.at(out_dir)
    return demo if demo.exists() else write_demo_dataset(out_dir, seed)
