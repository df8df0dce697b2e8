"""Offline checks of deploy/k8s and deploy/docker: schemas, and that the pieces point at each other.

Core kinds (Namespace, ConfigMap, Secret, PVC, Job, and the FlinkDeployment's pod templates as Pods)
are validated strictly against the Kubernetes OpenAPI schemas shipped by `kubernetes-validate`;
the FlinkDeployment against the hand-written subset in deploy/k8s/schemas/. Nothing here talks to
a cluster or builds an image.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipelines.options import EnrichPaymentsOptions, parse_options, validate, validate_runner
from testbed.flink_jobserver import FLINK_MINOR
from transforms.contract.loader import load_contract

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are meant for
CORE_KINDS = {"Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "Job"}


def _setup_constant(name: str) -> str:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not in setup.py")


def _install_requires() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    deps = next(k.value for k in call.keywords if k.arg == "install_requires")
    beam = _setup_constant("PINNED_BEAM")
    return [f"apache-beam=={beam}" if isinstance(e, ast.JoinedStr) else ast.literal_eval(e) for e in deps.elts]


def _docs() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


DOCS = _docs()


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _job_container() -> dict:
    return _one("Job")["spec"]["template"]["spec"]["containers"][0]


def _sidecar() -> dict:
    spec = _one("FlinkDeployment")["spec"]["taskManager"]["podTemplate"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "python-harness")


def test_kustomization_lists_every_manifest_and_only_existing_files() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    listed = set(kust["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in DOCS if d["kind"] in CORE_KINDS],
                         ids=lambda v: v if isinstance(v, str) else v["kind"] + "/" + v["metadata"]["name"])
def test_core_resources_match_the_kubernetes_schema(name: str, doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_resource_is_of_a_known_kind() -> None:
    assert {d["kind"] for _, d in DOCS} <= CORE_KINDS | {"FlinkDeployment"}


def test_flink_deployment_matches_its_schema_and_its_pod_templates_are_pods() -> None:
    fd = _one("FlinkDeployment")
    schema = json.loads((K8S / "schemas" / "flinkdeployment.schema.json").read_text())
    jsonschema.validate(fd, schema, cls=jsonschema.Draft202012Validator)
    for template in (fd["spec"]["podTemplate"], fd["spec"]["taskManager"]["podTemplate"]):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata", {"name": "t"}),
               "spec": template["spec"]}
        pod["metadata"].setdefault("name", "template")
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_schema_rejects_a_broken_flink_deployment() -> None:
    """The hand-written schema is not vacuous."""
    schema = json.loads((K8S / "schemas" / "flinkdeployment.schema.json").read_text())
    bad = json.loads(json.dumps(_one("FlinkDeployment")))
    bad["spec"]["flinkVersion"] = "1.19"
    del bad["spec"]["taskManager"]["resource"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_flink_session_cluster_config() -> None:
    fd = _one("FlinkDeployment")
    spec, conf = fd["spec"], fd["spec"]["flinkConfiguration"]
    assert spec["flinkVersion"] == "v" + FLINK_MINOR.replace(".", "_") == "v1_19"
    assert "job" not in spec  # session mode
    assert int(conf["taskmanager.numberOfTaskSlots"]) >= 1
    assert conf["state.checkpoints.dir"].startswith(("s3://", "file:///flink-data/"))
    assert "execution.checkpointing.interval" in conf
    # Same reporter as deploy/monitoring/flink-prometheus.yaml, on a port of its range.
    monitoring = yaml.safe_load((ROOT / "deploy" / "monitoring" / "flink-prometheus.yaml").read_text())
    assert conf["metrics.reporter.prom.factory.class"] == monitoring["metrics.reporter.prom.factory.class"]
    low, high = map(int, str(monitoring["metrics.reporter.prom.port"]).split("-"))
    assert low <= int(conf["metrics.reporter.prom.port"]) <= high
    main = next(c for c in spec["podTemplate"]["spec"]["containers"] if c["name"] == "flink-main-container")
    assert int(conf["metrics.reporter.prom.port"]) in {p["containerPort"] for p in main["ports"]}
    # The checkpoint volume is the PVC of this directory.
    claim = spec["podTemplate"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    _one("PersistentVolumeClaim", claim)


def test_sidecar_is_the_beam_worker_pool_on_50000() -> None:
    sidecar = _sidecar()
    assert sidecar["args"] == ["--worker_pool"]
    assert 50000 in {p["containerPort"] for p in sidecar["ports"]}
    assert "harness" in sidecar["image"]


def test_submitter_args() -> None:
    args = _job_container()["args"]
    fd = _one("FlinkDeployment")
    for flag in ("--flink_submit_uber_jar", "--environment_type=EXTERNAL", "--environment_config=localhost:50000",
                 "--streaming", "--runner=FlinkRunner", f"--flink_version={FLINK_MINOR}"):
        assert flag in args, flag
    assert f"--flink_master={fd['metadata']['name']}-rest:8081" in args  # the operator's REST Service
    interval = next(a.split("=", 1)[1] for a in args if a.startswith("--checkpointing_interval="))
    assert int(interval) > 0
    cluster = fd["spec"]["flinkConfiguration"]["execution.checkpointing.interval"]
    assert cluster.replace(" ", "") == f"{int(interval) // 1000}s"
    jar = next(a.split("=", 1)[1] for a in args if a.startswith("--flink_job_server_jar="))
    beam = _setup_constant("PINNED_BEAM")
    assert jar == f"/opt/jobserver/beam-runners-flink-{FLINK_MINOR}-job-server-{beam}.jar"
    spec = _one("Job")["spec"]
    assert spec["backoffLimit"] == 0 and spec["template"]["spec"]["restartPolicy"] == "Never"


def test_submitter_args_pass_the_jobs_own_validation() -> None:
    """The args, with $(VAR) expanded from the ConfigMap as Kubernetes does, parse and validate."""
    container, data = _job_container(), _one("ConfigMap")["data"]
    env = {e["name"]: data[e["valueFrom"]["configMapKeyRef"]["key"]]
           for e in container["env"] if "configMapKeyRef" in e.get("valueFrom", {})}
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    options = parse_options(argv)
    opts = options.view_as(EnrichPaymentsOptions)
    validate(opts)
    validate_runner(options, argv)
    auth = load_contract(opts.contract).endpoint.auth
    assert auth is not None and auth.secret.env == "SCORING_TOKEN"
    assert "SCORING_TOKEN" in {e["name"] for e in container["env"]}
    assert {"security.protocol=SSL", "ssl.ca.location=/etc/kafka-tls/ca.crt"} <= set(opts.kafka_property)


def test_key_refs_point_at_existing_keys() -> None:
    refs = []
    for _, doc in DOCS:
        def walk(node):
            if isinstance(node, dict):
                for kind in ("configMapKeyRef", "secretKeyRef"):
                    if kind in node:
                        refs.append((kind, node[kind]["name"], node[kind]["key"]))
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(doc)
    assert refs
    for kind, name, key in refs:
        res = _one("ConfigMap" if kind == "configMapKeyRef" else "Secret", name)
        keys = set(res.get("data", {})) | set(res.get("stringData", {}))
        assert key in keys, f"{kind} {name}/{key} does not exist"


def test_tls_secret_is_mounted_where_the_kafka_property_points() -> None:
    ca = "/etc/kafka-tls/ca.crt"
    for container, pod in ((_job_container(), _one("Job")["spec"]["template"]["spec"]),
                           (_sidecar(), _one("FlinkDeployment")["spec"]["taskManager"]["podTemplate"]["spec"])):
        mount = next(m for m in container["volumeMounts"] if ca.startswith(m["mountPath"] + "/"))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        secret = _one("Secret", volume["secret"]["secretName"])
        assert ca.rsplit("/", 1)[1] in secret["stringData"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.python-harness", "Dockerfile.submitter"])
def test_dockerfiles_pin_setup_pys_beam_and_install_its_deps(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    beam = _setup_constant("PINNED_BEAM")
    assert re.search(rf"^ARG BEAM_VERSION={re.escape(beam)}$", text, re.MULTILINE)
    assert "pip install --no-cache-dir --no-deps ." in text
    quoted = re.findall(r'"([^"$]+(?:[<>=]=?[^"]*)?)"', text)
    wanted = [d for d in _install_requires() if not d.startswith("apache-beam")]
    assert set(wanted) <= set(quoted), set(wanted) - set(quoted)
    assert '"apache-beam==${BEAM_VERSION}"' in text
    if dockerfile == "Dockerfile.python-harness":
        assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in text
        assert 'CMD ["--worker_pool"]' in text and "EXPOSE 50000" in text
    else:
        assert "openjdk-17-jre" in text
        assert "COPY .cache/flink/beam-runners-flink-${FLINK_MINOR}-job-server-${BEAM_VERSION}.jar" in text
        assert f"ARG FLINK_MINOR={FLINK_MINOR}" in text


def test_flink_image_minor_matches() -> None:
    text = (DOCKER / "Dockerfile.flink").read_text()
    assert re.search(rf"^FROM flink:{re.escape(FLINK_MINOR)}-java17$", text, re.MULTILINE)
    assert "python" not in text.split("FROM", 1)[1].lower().replace("python-harness", "").replace("nothing python", "")
