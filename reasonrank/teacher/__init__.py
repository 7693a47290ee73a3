"""The teacher side of data synthesis: what the teacher LLM is asked, how its answers are read and
filtered, and a simulated teacher (a test double for DeepSeek-R1) for runs without the internet.

    items.py        the labelling work: one pointwise item per (query, passage), one listwise item per list
    prompts.py      the pointwise relevance prompt and its verdict parser (listwise: the reranker's prompt)
    labeling.py     one item through an OpenAI-compatible engine into a label row or an error row
    store.py        label parts under a storage path: written atomically, read deduplicated by item key
    consistency.py  the self-consistency filter (listwise NDCG@10 against the pointwise labels >= alpha)
    assemble.py     labels → pointwise/listwise tables, filter decisions, SFT and RL sets
    simulated.py    SimulatedTeacher: an OpenAI-compatible loopback server answering from known qrels
    misjudgement.py the simulated teacher's error model: misjudgements by wording, at stated rates
"""
