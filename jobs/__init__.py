"""Ray job entrypoints: one module per stage, run as `python -m jobs.<stage> --config <yaml>`."""
