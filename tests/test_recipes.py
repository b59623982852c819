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
    command = container["command"] + container["args"]
    assert command[:2] == ["mlflow", "server"] and "--app-name=basic-auth" in command
    assert any(a.startswith("--artifacts-destination=") for a in command)
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


# --- network hardening: launchers ------------------------------------------------------------

CIDR = "198.51.100.0/24"  # RFC 5737 documentation range


def _run_with_stub_cli(tmp_path, script: str, cli: str, env: dict[str, str]):
    """Run clusters/<script> with a stub ``cli`` (aws | gcloud) on PATH that records its argv;
    return (completed process, list of recorded argv lists). Nothing reaches a cloud."""
    import subprocess
    import sys

    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / cli
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if 'create-security-group' in sys.argv: print('sg-0feedface')\n"
        "if 'describe-vpcs' in sys.argv: print('vpc-0c0ffee')\n"
    )
    stub.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(CLUSTERS / script)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_aws_nodes_share_one_pinned_security_group_that_opens_only_ssh_from_ssh_cidr(tmp_path):
    config = yaml.safe_load((CLUSTERS / "aws.yaml").read_text())
    # every node type names its group, so Ray creates none (its own opens 22 to 0.0.0.0/0)
    groups = {
        tuple(t["node_config"]["SecurityGroupIds"]) for t in config["available_node_types"].values()
    }
    assert groups == {("sg-0123456789abcdef0",)}
    assert "security_group" not in config["provider"]
    proc, calls = _run_with_stub_cli(tmp_path, "aws-security-group.sh", "aws", {"SSH_CIDR": CIDR})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sg-0feedface"
    (create,) = [c for c in calls if "create-security-group" in c]
    assert _flag(create, "--vpc-id") == "vpc-0c0ffee"  # the default VPC when VPC_ID is unset
    assert _flag(create, "--region") == config["provider"]["region"]
    (ingress,) = [c for c in calls if "authorize-security-group-ingress" in c]
    assert _flag(ingress, "--group-id") == "sg-0feedface"
    rules = ingress[ingress.index("--ip-permissions") + 1 :]
    assert rules == [
        f"IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{{CidrIp={CIDR},Description=SSH}}]",
        "IpProtocol=-1,UserIdGroupPairs=[{GroupId=sg-0feedface,Description=intra-cluster}]",
    ]


def test_gcp_nodes_sit_in_a_network_whose_only_ingress_is_ssh_from_ssh_cidr(tmp_path):
    config = yaml.safe_load((CLUSTERS / "gcp.yaml").read_text())
    provider = config["provider"]
    nodes = [t["node_config"] for t in config["available_node_types"].values()]
    # every node has its interface given, so Ray does not put it on the default network
    subnets = {n["networkInterfaces"][0]["subnetwork"] for n in nodes}
    (subnet,) = subnets
    project, region, name = re.fullmatch(
        r"projects/([^/]+)/regions/([^/]+)/subnetworks/([^/]+)", subnet
    ).groups()
    assert (project, region) == (provider["project_id"], provider["region"])
    (tags,) = {tuple(n["tags"]["items"]) for n in nodes}
    proc, calls = _run_with_stub_cli(
        tmp_path, "gcp-firewall.sh", "gcloud", {"SSH_CIDR": CIDR, "PROJECT_ID": project}
    )
    assert proc.returncode == 0, proc.stderr
    (network,) = [c for c in calls if c[:3] == ["compute", "networks", "create"]]
    assert network[3] == name and _flag(network, "--subnet-mode") == "custom"
    (subnetwork,) = [c for c in calls if c[:4] == ["compute", "networks", "subnets", "create"]]
    assert (subnetwork[4], _flag(subnetwork, "--region")) == (name, region)
    rules = [c for c in calls if c[:3] == ["compute", "firewall-rules", "create"]]
    assert len(rules) == 2, rules
    for rule in rules:
        assert _flag(rule, "--network") == name and _flag(rule, "--direction") == "INGRESS"
        assert _flag(rule, "--target-tags") == ",".join(tags)
    from_outside = [r for r in rules if "--source-ranges" in r]
    (ssh,) = from_outside
    assert (_flag(ssh, "--rules"), _flag(ssh, "--source-ranges")) == ("tcp:22", CIDR)
    (internal,) = [r for r in rules if r is not ssh]
    assert _flag(internal, "--source-tags") == ",".join(tags)


@pytest.mark.parametrize(
    ("script", "cli", "env"),
    [("aws-security-group.sh", "aws", {}), ("gcp-firewall.sh", "gcloud", {"PROJECT_ID": "p"})],
)
@pytest.mark.parametrize("cidr", [None, "0.0.0.0/0", "10.0.0.1", "my-laptop/32"])
def test_network_scripts_refuse_a_missing_or_open_ssh_range_before_creating_anything(
    tmp_path, script, cli, env, cidr
):
    env = {**env, **({"SSH_CIDR": cidr} if cidr is not None else {})}
    proc, calls = _run_with_stub_cli(tmp_path, script, cli, env)
    assert proc.returncode != 0 and "SSH_CIDR" in proc.stderr
    assert calls == []


# --- network hardening: KubeRay ---------------------------------------------------------------


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": key not in labels or labels[key] not in values,
        }[op]
        if not ok:
            return False
    return True


# labels KubeRay puts on every pod of a cluster (ray.io/cluster = the RayCluster's name; a
# RayJob's cluster gets a generated one)
RAY_HEAD = {"ray.io/cluster": "bioscale", "ray.io/node-type": "head", "ray.io/is-ray-node": "yes"}
RAY_JOB_WORKER = {"ray.io/cluster": "bioscale-demo-x7k2p", "ray.io/node-type": "worker"}


def test_network_policies_let_only_ray_pods_reach_mlflow_and_only_mlflow_reach_postgres():
    docs = _docs("mlflow.yaml")
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    pods = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for (kind, name), d in by.items()
        if kind in ("Deployment", "Job")
    }
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert all(p["apiVersion"] == "networking.k8s.io/v1" for p in policies)

    def policy_for(name: str) -> dict:
        (policy,) = [p for p in policies if _selects(p["spec"]["podSelector"], pods[name])]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        return policy

    def allowed(policy: dict, labels: dict[str, str]) -> set[int]:
        """The ports ``policy`` opens to a pod with ``labels`` in the same namespace."""
        out = set()
        for rule in policy["spec"]["ingress"]:
            assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # this namespace
            if any(_selects(peer["podSelector"], labels) for peer in rule["from"]):
                out |= {p["port"] for p in rule["ports"] if p["protocol"] == "TCP"}
        return out

    def port(name: str) -> int:
        (svc_port,) = by[("Service", name)]["spec"]["ports"]
        return svc_port["targetPort"]

    mlflow, postgres = policy_for("mlflow"), policy_for("mlflow-postgres")
    assert allowed(mlflow, RAY_HEAD) == allowed(mlflow, RAY_JOB_WORKER) == {port("mlflow")}
    assert allowed(mlflow, pods["mlflow-create-user"]) == {port("mlflow")}
    for other in (pods["mlflow-postgres"], {"app": "something-else"}, {}):
        assert allowed(mlflow, other) == set()
    assert allowed(postgres, pods["mlflow"]) == {port("mlflow-postgres")}
    for other in (RAY_HEAD, RAY_JOB_WORKER, pods["mlflow-create-user"], {}):
        assert allowed(postgres, other) == set()


def _containers(doc) -> list[dict]:
    """Every container and init container of a manifest, wherever its pod template sits."""
    out = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                out.extend(value)
            out.extend(_containers(value))
    elif isinstance(doc, list):
        for value in doc:
            out.extend(_containers(value))
    return out


def test_no_secret_reaches_a_container_command_line():
    """`ps` shows every process's arguments: secrets may only be environment variables."""
    containers = [
        c
        for p in (CLUSTERS / "kuberay").glob("*.yaml")
        for d in _docs(p.name)
        for c in _containers(d)
    ]
    assert {c["name"] for c in containers} >= {"mlflow", "postgres", "create-user", "ray-head"}
    for c in containers:
        secret_vars = {
            e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
        }
        line = " ".join(map(str, c.get("command", []) + c.get("args", [])))
        assert not re.search(r"://[^/\s@]+:[^/\s@]+@", line), (c["name"], line)  # user:pw@
        for var in secret_vars:
            assert not re.search(rf"\$(\({var}\)|\{{{var}\}}|{var}\b)", line), (c["name"], var)
    # the MLflow server takes its backend store (with the DB password) from its environment
    (server,) = [c for c in containers if c["name"] == "mlflow"]
    assert not any(a.startswith("--backend-store-uri") for a in server["command"] + server["args"])
    names = [e["name"] for e in server["env"]]
    uri = server["env"][names.index("MLFLOW_BACKEND_STORE_URI")]["value"]
    assert uri.startswith("postgresql://$(DB_USER):$(DB_PASSWORD)@mlflow-postgres:5432/")
    # Kubernetes expands $(VAR) only from entries defined before it
    assert (
        names.index("DB_USER")
        < names.index("DB_PASSWORD")
        < names.index("MLFLOW_BACKEND_STORE_URI")
    )


def _mlflow_user_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mlflow_user", CLUSTERS / "mlflow_user.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlflow_user_job_creates_the_ray_pods_user_with_the_admin_login():
    docs = _docs("mlflow.yaml")
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    job = by[("Job", "mlflow-create-user")]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    server = by[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == server["image"]
    # the script is baked into that image at the path the Job runs
    script = container["command"][-1]
    assert f"COPY mlflow_user.py {script}" in (CLUSTERS / "mlflow.Dockerfile").read_text()
    env = {e["name"]: e for e in container["env"]}
    assert set(_mlflow_user_script().REQUIRED) <= set(env)
    # logs in as the basic-auth admin, at an address the server accepts as its Host
    ini = by[("ConfigMap", "mlflow-auth")]["data"]["basic_auth.ini"]
    assert f"admin_username = {env['MLFLOW_TRACKING_USERNAME']['value']}" in ini
    host = env["MLFLOW_TRACKING_URI"]["value"].removeprefix("http://")
    allowed_hosts = next(a for a in server["args"] if a.startswith("--allowed-hosts="))
    assert host in allowed_hosts.split("=", 1)[1].split(",")
    ref = lambda e: e["valueFrom"]["secretKeyRef"]  # noqa: E731
    assert ref(env["MLFLOW_TRACKING_PASSWORD"]) == {"name": "mlflow-auth", "key": "admin-password"}
    # creates exactly the user whose Secret the Ray pods log in with
    (cluster,) = _docs("raycluster.yaml")
    ray_env = {
        e["name"]: e
        for e in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert ref(env["BIOSCALE_MLFLOW_USERNAME"]) == ref(ray_env["MLFLOW_TRACKING_USERNAME"])
    assert ref(env["BIOSCALE_MLFLOW_PASSWORD"]) == ref(ray_env["MLFLOW_TRACKING_PASSWORD"])


def test_mlflow_user_endpoints_are_those_of_the_installed_mlflow():
    import importlib.util

    routes = Path(importlib.util.find_spec("mlflow").origin).parent / "server/auth/routes.py"
    text = routes.read_text()
    module = _mlflow_user_script()
    for name in ("CREATE_USER", "GET_USER", "UPDATE_USER_PASSWORD"):
        path = getattr(module, name).removeprefix("/api/2.0")
        assert f'{name} = _get_rest_path("{path}")' in text, name


class _FakeAuthServer:
    """The three basic-auth endpoints the script uses, answering as MLflow's server does
    (404 RESOURCE_DOES_NOT_EXIST for an unknown user), over real HTTP on loopback."""

    def __init__(self, users: dict[str, dict]):
        import http.server
        import threading
        from urllib.parse import parse_qs, urlsplit

        self.users, self.calls = users, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                outer.calls.append((self.command, url.path, self.headers["Authorization"], body))
                if url.path.endswith("/users/get"):
                    name = parse_qs(url.query)["username"][0]
                    if name not in outer.users:
                        return self._json(
                            404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}
                        )
                    return self._json(200, {"user": outer.users[name]})
                if url.path.endswith("/users/create"):
                    user = {
                        "id": len(outer.users) + 1,
                        "username": body["username"],
                        "is_admin": False,
                    }
                    outer.users[body["username"]] = user
                    return self._json(200, {"user": user})
                return self._json(200, {})

            def _json(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_mlflow_user_script_creates_then_updates_a_non_admin_user(monkeypatch, capsys):
    import base64

    module = _mlflow_user_script()
    server = _FakeAuthServer({"admin": {"id": 1, "username": "admin", "is_admin": True}})
    try:
        for name, value in {
            "MLFLOW_TRACKING_URI": server.uri,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": "adm1n-pw",
            "BIOSCALE_MLFLOW_USERNAME": "bioscale",
            "BIOSCALE_MLFLOW_PASSWORD": "cl1ent-pw",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        }.items():
            monkeypatch.setenv(name, value)
        assert module.main() == 0
        assert "'bioscale' created (non-admin)" in capsys.readouterr().out
        assert module.main() == 0  # again, e.g. after rotating the Secret
        assert "'bioscale' updated" in capsys.readouterr().out
        admin = "Basic " + base64.b64encode(b"admin:adm1n-pw").decode()
        assert {auth for _, _, auth, _ in server.calls} == {admin}
        writes = [(m, p.rsplit("/", 1)[1], b) for m, p, _, b in server.calls if m != "GET"]
        assert writes == [
            ("POST", "create", {"username": "bioscale", "password": "cl1ent-pw"}),
            ("PATCH", "update-password", {"username": "bioscale", "password": "cl1ent-pw"}),
        ]
        assert server.users["bioscale"]["is_admin"] is False
        # refuses to hand the admin account to the pods
        monkeypatch.setenv("BIOSCALE_MLFLOW_USERNAME", "admin")
        assert module.main() == 2 and "basic-auth admin" in capsys.readouterr().err
        server.users["ops"] = {"id": 9, "username": "ops", "is_admin": True}
        monkeypatch.setenv("BIOSCALE_MLFLOW_USERNAME", "ops")
        with pytest.raises(SystemExit, match="'ops' is an admin"):
            module.main()
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        assert module.main() == 2 and "MLFLOW_TRACKING_PASSWORD" in capsys.readouterr().err
    finally:
        server.close()
