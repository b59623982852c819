"""Cluster recipes: the launcher YAMLs validate against the schema shipped in ``ray``, the KubeRay
manifests against the KubeRay v1 CRDs (unknown fields forbidden, so a typo fails here and not as a
silently dropped field on the cluster), and every image and version agrees with pyproject.toml."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CLUSTERS = REPO / "clusters"
KUBERAY_CRDS = Path(
    os.environ.get("BIOSCALE_KUBERAY_CRDS", REPO.parent / "shared" / "schemas" / "kuberay")
)
LAUNCHERS = ["aws.yaml", "gcp.yaml"]

pytestmark = pytest.mark.timeout(60)


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirement(name: str) -> SpecifierSet:
    for dep in _pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == name:
            return req.specifier
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def _check_ray_image(image: str) -> None:
    """``rayproject/ray:<ray version>-py<XY>[-cpu|-gpu|-cuNNN]``: a ray the project allows, on the
    project's Python."""
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(-[a-z0-9]+)?", image)
    assert m, f"unexpected Ray image {image!r}"
    assert Version(m[1]) in _requirement("ray"), f"{image}: ray {m[1]} outside pyproject's pin"
    python = Version(f"{m[2]}.{m[3]}")
    assert python in SpecifierSet(_pyproject()["project"]["requires-python"]), image


def _launcher_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_recipe_validates_against_rays_schema(name):
    config = yaml.safe_load((CLUSTERS / name).read_text())
    jsonschema.Draft7Validator(_launcher_schema()).validate(config)
    typo = copy.deepcopy(config)
    typo["available_node_types"]["gpu_l4"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        jsonschema.Draft7Validator(_launcher_schema()).validate(typo)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_recipe_has_gpu_workers_token_auth_and_the_project(name):
    config = yaml.safe_load((CLUSTERS / name).read_text())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = {k: v for k, v in types.items() if v["resources"].get("GPU", 0) > 0}
    assert gpu, "no GPU worker node type"
    for node_type in gpu.values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
        assert any(r.startswith("accelerator_type:") for r in node_type["resources"])
    # the project is installed once per node, with pyproject's pins, from the synced checkout
    assert config["file_mounts"]["/home/ray/bioscale"] == "."
    assert any("pip install" in c and "~/bioscale" in c for c in config["setup_commands"])
    for image in (config["docker"]["head_image"], config["docker"]["worker_image"]):
        _check_ray_image(image)
    # token auth on every node; dashboard/job API on the head's loopback only
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for cmd in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token" in cmd, cmd
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]


def _strict(schema):
    """The CRD schema with unknown properties forbidden wherever properties are declared."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    path = KUBERAY_CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.exists():
        pytest.skip(f"KubeRay CRDs not found at {KUBERAY_CRDS}; set BIOSCALE_KUBERAY_CRDS")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_strict(v1["schema"]["openAPIV3Schema"]))


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTERS / "kuberay" / name).read_text()) if d]


@pytest.mark.parametrize(
    ("name", "kind"), [("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob")]
)
def test_kuberay_manifests_validate_against_the_v1_crds(name, kind):
    (doc,) = _docs(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    validator = _crd_validator(kind)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    typo = copy.deepcopy(doc)
    spec = typo["spec"] if kind == "RayCluster" else typo["spec"]["rayClusterSpec"]
    spec["workerGroupSpecs"][0]["maxReplica"] = 4
    assert any("maxReplica" in e.message for e in validator.iter_errors(typo))


def test_kuberay_cluster_has_token_auth_a_gpu_group_and_matching_versions():
    (cluster,) = _docs("raycluster.yaml")
    (job,) = _docs("rayjob.yaml")
    spec = cluster["spec"]
    assert job["spec"]["rayClusterSpec"] == spec, (
        "rayjob.yaml's cluster drifted from raycluster.yaml"
    )
    assert spec["authOptions"]["mode"] == "token"
    assert Version(spec["rayVersion"]) in _requirement("ray")
    version = _pyproject()["project"]["version"]
    head = spec["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"].endswith(f"/bioscale:{version}")
    (gpu,) = spec["workerGroupSpecs"]
    pod = gpu["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == head["containers"][0]["image"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://mlflow.bioscale.svc")
    assert "valueFrom" in env["MLFLOW_TRACKING_PASSWORD"]  # from a Secret, never inline
    # the image is built from Ray's image of the same version, with this project installed
    dockerfile = (CLUSTERS / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    _check_ray_image(base)
    assert base.split(":")[1].startswith(spec["rayVersion"])
    assert "pip install" in dockerfile


def test_rayjob_runs_an_existing_entry_point_and_installs_nothing():
    (job,) = _docs("rayjob.yaml")
    entry = job["spec"]["entrypoint"].split()
    assert entry[0] == "python"
    for arg in entry[1:3]:
        assert (REPO / arg.removeprefix("/home/ray/bioscale/")).exists(), arg
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert not {"pip", "uv", "conda", "py_modules", "working_dir"} & set(runtime_env)
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_mlflow_server_recipe_sql_backend_artifacts_and_basic_auth():
    docs = _docs("mlflow.yaml")
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deploy = by[("Deployment", "mlflow")]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["command"] + container["args"])
    assert "--app-name basic-auth" in command
    assert '--backend-store-uri "postgresql://' in command
    assert "--artifacts-destination" in command
    tag = container["image"].rsplit(":", 1)[1]
    assert Version(tag) in _requirement("mlflow")
    assert f"mlflow[auth]=={tag}" in (CLUSTERS / "mlflow.Dockerfile").read_text()
    env = {e["name"]: e for e in container["env"]}
    for secret in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "DB_PASSWORD"):
        assert "secretKeyRef" in env[secret]["valueFrom"], secret
    ini = by[("ConfigMap", "mlflow-auth")]["data"]["basic_auth.ini"]
    assert "admin_password" not in ini  # the admin password comes from a Secret
    # every Service routes to pods that exist, on a port they listen on
    for (kind, name), svc in by.items():
        if kind != "Service":
            continue
        target = by[("Deployment", name)]["spec"]["template"]
        assert svc["spec"]["selector"].items() <= target["metadata"]["labels"].items()
        ports = {p["containerPort"] for c in target["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
        assert svc["spec"]["type"] == "ClusterIP"


def test_every_secret_the_recipes_use_is_created_in_the_readme_and_none_is_inline():
    readme = (CLUSTERS / "README.md").read_text()
    text = "\n".join(p.read_text() for p in (CLUSTERS / "kuberay").glob("*.yaml"))
    used = set(re.findall(r"secretKeyRef: \{name: ([\w-]+), key: ([\w-]+)\}", text))
    assert used
    for name, key in used:
        assert re.search(
            rf"create secret generic {name}\b[^\n]*(\\\n[^\n]*)*--from-literal={key}=", readme
        ), (name, key)
    for path in (CLUSTERS / "kuberay").glob("*.yaml"):
        kinds = {d["kind"] for d in yaml.safe_load_all(path.read_text()) if d}
        assert "Secret" not in kinds, f"{path.name}: Secrets are created with kubectl"
    assert "RAY_AUTH_MODE=token" in readme
