"""The serving config: which reranker to host (engine, strategy, sampling), how to scale it, what to accept.

One YAML file (configs/serve-*.yaml) holds all of it. The same file drives `reasonrank serve` on a laptop and
the `args` of a KubeRay RayService (`import_path: serve.app:build_app`).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from reasonrank.config import EngineConfig, SamplingConfig, Strict
from reasonrank.scores import ScoreKind, ScoreUnavailable, check_score
from reasonrank.strategies import StrategyConfig


class Autoscaling(Strict):
    """Ray Serve autoscaling of the model replicas (docs/autoscaling.md says how to choose each key).

    Every `metrics_interval_s` the requests each replica has (ongoing and queued, as the callers count them)
    reach Serve's controller; it averages them over `look_back_period_s` and wants
    ceil(total / `target_ongoing_requests`) replicas, within [min_replicas, max_replicas]. A wish to grow
    must hold for `upscale_delay_s` before a replica is started, one to shrink for `downscale_delay_s`."""

    min_replicas: int = Field(1, ge=0)  # kept warm even when idle; 0 lets the endpoint scale to zero
    max_replicas: int = Field(1, ge=1)
    # Replicas started with the application; None: min_replicas. More saves cold starts after a deploy.
    initial_replicas: int | None = Field(None, ge=0)
    # Requests per replica (ongoing + queued) the replicas are sized for. A sliding-window request has one
    # window at the engine at a time, so this is the batch a replica's engine runs at its target load: keep
    # it within max_windows_in_flight and below deployment.max_ongoing_requests.
    target_ongoing_requests: float = Field(8.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)  # how long the load must call for more replicas first
    downscale_delay_s: float = Field(600.0, ge=0)  # how long it must call for fewer (idle replicas cost GPUs)
    # The last replica's removal when min_replicas is 0; None: downscale_delay_s.
    downscale_to_zero_delay_s: float | None = Field(None, ge=0)
    # How often load is reported to the controller (Ray marks the key deprecated in favour of environment
    # variables yet still reads it); shorter reacts sooner and costs the controller more messages.
    metrics_interval_s: float = Field(10.0, gt=0, le=60)
    # The window load is averaged over: longer ignores short bursts, shorter follows the load sooner.
    look_back_period_s: float = Field(30.0, gt=0, le=600)
    # Share of the wanted change made at each decision (None: all of it). Below 1 steps replicas in more
    # gently; above 1 grows faster than the load alone asks.
    upscaling_factor: float | None = Field(None, gt=0, le=10)
    downscaling_factor: float | None = Field(None, gt=0, le=10)

    @model_validator(mode="after")
    def _ordered(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(f"initial_replicas ({initial}) is outside [min_replicas, max_replicas] "
                             f"([{self.min_replicas}, {self.max_replicas}])")
        if self.look_back_period_s <= self.metrics_interval_s:
            raise ValueError(f"look_back_period_s ({self.look_back_period_s:g}) must be longer than "
                             f"metrics_interval_s ({self.metrics_interval_s:g}): it averages several reports")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Ray's `autoscaling_config`: the keys set, those left to Ray's default (None) out."""
        return self.model_dump(exclude_none=True)


class ReplicaResources(Strict):
    """What one replica (one engine) reserves on the cluster."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_gib: float | None = Field(None, gt=0)
    accelerator_type: str | None = None  # e.g. "H100"; None: any node with the GPUs
    node_labels: dict[str, str] = {}  # place replicas on nodes with these Ray labels (KubeRay worker group)

    def ray_actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_gib is not None:
            options["memory"] = int(self.memory_gib * 2**30)
        if self.accelerator_type is not None:
            options["accelerator_type"] = self.accelerator_type
        if self.node_labels:
            options["label_selector"] = dict(self.node_labels)
        return options


class DeploymentOptions(Strict):
    autoscaling: Autoscaling = Autoscaling()
    resources: ReplicaResources = ReplicaResources()
    max_ongoing_requests: int = Field(64, ge=1)  # HTTP requests one replica holds at once
    health_check_period_s: float = Field(10.0, gt=0)
    health_check_timeout_s: float = Field(30.0, gt=0)
    graceful_shutdown_wait_loop_s: float = Field(2.0, gt=0)
    graceful_shutdown_timeout_s: float = Field(120.0, gt=0)  # in-flight requests get this long to finish

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options`."""
        return {
            "autoscaling_config": self.autoscaling.serve_options(),
            "ray_actor_options": self.resources.ray_actor_options(),
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }


class IngressOptions(Strict):
    """The HTTP ingress (serve/app.py): a light deployment that holds each request and calls the model
    replicas (`deployment`) through a handle, retrying on another replica when one dies. It loads no model:
    a fraction of a CPU each, on CPU nodes (`resources.node_labels`: a KubeRay CPU group's label)."""

    num_replicas: int = Field(1, ge=1)
    resources: ReplicaResources = ReplicaResources(num_cpus=0.1)
    max_ongoing_requests: int = Field(1024, ge=1)  # HTTP requests one ingress replica holds at once
    # How long a request waits for a model replica to take it (none alive, or all full) before a 503
    # with Retry-After; a request's own deadline, when shorter, bounds the wait instead.
    replica_wait_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(10, ge=1)  # the Retry-After of that 503: about a replica's restart

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options`."""
        return {"num_replicas": self.num_replicas, "ray_actor_options": self.resources.ray_actor_options(),
                "max_ongoing_requests": self.max_ongoing_requests}


class Limits(Strict):
    max_documents: int = Field(1000, ge=1)
    max_body_bytes: int = Field(8 * 2**20, ge=1024)
    request_timeout_s: float = Field(600.0, gt=0)  # per-request deadline; clients may ask for less


class ServeConfig(Strict):
    model_name: str = "reasonrank"  # the name /v1/models and responses report
    engine: EngineConfig = EngineConfig()
    strategy: StrategyConfig = StrategyConfig()
    sampling: SamplingConfig = SamplingConfig()
    score: ScoreKind = "rank"  # relevance_score: "rank" = 1/(1+rank), "votes" = window votes (reasonrank/scores.py)
    # Windows (of all requests) one replica submits to its engine at once; the engine batches them
    # continuously. More wait for a slot. vLLM schedules up to its own max_num_seqs of them per step.
    max_windows_in_flight: int = Field(256, ge=1)
    limits: Limits = Limits()
    deployment: DeploymentOptions = DeploymentOptions()  # the model replicas (engine + reranker)
    ingress: IngressOptions = IngressOptions()
    # Name of the environment variable holding the bearer token (set from a Kubernetes Secret);
    # None: no auth. The token itself never appears in a config file.
    auth_token_env: str | None = None
    # Local runs: build the (untrained) tiny model at engine.model from the demo data in this folder when
    # no model is there yet. None: never build.
    build_tiny_model_from: str | None = None
    host: str = "127.0.0.1"  # where `reasonrank serve` listens
    port: int = Field(8000, ge=1, le=65535)

    @model_validator(mode="after")
    def _gpus_cover_tensor_parallel(self) -> "ServeConfig":
        gpus = self.deployment.resources.num_gpus
        tp = self.engine.tensor_parallel_size if self.engine.backend == "vllm" else 1
        if gpus > 0 and gpus < tp:
            raise ValueError(f"deployment.resources.num_gpus ({gpus}) is less than "
                             f"engine.tensor_parallel_size ({tp}); one replica needs a GPU per shard")
        return self

    @model_validator(mode="after")
    def _score_fits_the_strategy(self) -> "ServeConfig":
        try:
            check_score(self.score, self.strategy.name)
        except ScoreUnavailable as e:
            raise ValueError(str(e)) from None
        return self
