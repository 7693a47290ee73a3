"""Data in and out: TREC qrels/runs (trec), record tables (tables), BM25 (bm25), the retrieval dataset that
hands out rerank requests (dataset), BRIGHT (bright), the generated demo set (demo), SFT/RL sets
(training_sets)."""
