"""What every job entrypoint shares: `--config` / `--set key=value` parsing and Ray start-up.

A job runs the same way on a laptop and on a cluster: with no RAY_ADDRESS, `ray.init()` starts an embedded
Ray; inside a RayJob (or `ray job submit`) it attaches to the cluster the job was submitted to.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import yaml


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["engine.model=x", "limit=3"]` → `{"engine.model": "x", "limit": 3}` (values read as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def init_ray(num_cpus: int | None = None, **kwargs: Any) -> None:
    """Attach to the cluster in RAY_ADDRESS, or start an embedded one (optionally over-declaring CPUs)."""
    import os

    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def configure_logging() -> None:
    """Progress lines (INFO) of the jobs on stderr: the one set-up of both command-line faces,
    `python -m jobs.<stage>` and `reasonrank <stage>`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(run: Callable[[str, dict[str, Any]], dict[str, Any]], description: str,
         argv: list[str] | None = None) -> int:
    """The `python -m jobs.<stage>` face: parse arguments, run, print the summary as JSON."""
    configure_logging()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (dotted), repeatable")
    args = parser.parse_args(argv)
    from reasonrank.config import ConfigError

    try:
        summary = run(args.config, parse_overrides(args.overrides))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0
