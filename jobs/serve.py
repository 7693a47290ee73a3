"""Serve a reranker over HTTP until Ctrl-C (or SIGTERM): what `reasonrank serve --config …` runs.

    python -m jobs.serve --config configs/serve-tiny.yaml [--set port=8080]

Starts (or joins, with RAY_ADDRESS) a Ray cluster, deploys `serve.app:build_app` with the config, prints
the URL and blocks; on exit Serve shuts down gracefully, letting in-flight requests finish. On KubeRay the
same application runs from a RayService instead (cluster/).
"""
from __future__ import annotations

import signal
import threading
from typing import Any

from jobs.common import init_ray, main
from reasonrank.config import load_config
from serve.config import ServeConfig

APP_NAME = "reasonrank"


def run(config_path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    config = load_config(config_path, ServeConfig, overrides)
    from ray import serve

    from serve.app import build_app

    init_ray()
    serve.start(http_options={"host": config.host, "port": config.port})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    url = f"http://{config.host}:{config.port}"
    try:
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        print(f"reranker {config.model_name!r} ready at {url}  (POST /v1/rerank /v2/rerank /rerank "
              f"/native/rerank, GET /health /v1/models); Ctrl-C to stop", flush=True)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return {"url": url, "model": config.model_name, "stopped": True}


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
