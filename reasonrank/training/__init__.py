"""Training code SFT and GRPO share: ZeRO config, DeepSpeed engine, chat tokenisation with assistant-only
loss masks, checkpoints (step, data cursor, RNG), Hugging Face export. No Ray imports."""
