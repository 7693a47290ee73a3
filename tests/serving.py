"""Deploying a reranking app for a test module: on a free port of 127.0.0.1, torn down after."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from reasonrank.ports import free_port


@contextmanager
def serving(config, name: str, timeout_s: float = 60) -> Iterator[httpx.Client]:
    """The app `config` (a ServeConfig) describes, deployed as `name`, and an HTTP client for it."""
    from ray import serve

    from serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(config), name=name, route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s) as client:
            yield client
    finally:
        serve.shutdown()
