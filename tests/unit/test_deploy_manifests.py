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
from testbed.flink.jobserver import FLINK_MINOR
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


# --- Prometheus (issue 27): deploy/monitoring/ against deploy/k8s and the metric catalogue -------------
# The exporter (--prometheus_port) serves every catalogued metric as payment_enrichment_<name>: counters
# with _total, gauges as they are, distributions as histograms (_bucket/_sum/_count).

MONITORING = ROOT / "deploy" / "monitoring"
SCHEMAS = K8S / "schemas"
#: Debian's prometheus package unpacked by the repository's fetcher (absent: the fallback check below).
METRIC_NAME = re.compile(r"\bpayment_enrichment_[a-z_]+")
SDK_JOB = "payment-enrichment-sdk"  # the `job` label podmonitor.yaml gives the SDK workers' endpoints
#: Labels Flink's native Kubernetes mode puts on every TaskManager pod (cluster id = FlinkDeployment name).
FLINK_TM_LABELS = {"component": "taskmanager", "type": "flink-native-kubernetes"}


def _monitoring(name: str) -> dict:
    return yaml.safe_load((MONITORING / name).read_text())


def _exposed_metric_names() -> set[str]:
    from transforms.monitoring.catalogue import CATALOGUE, COUNTER, DISTRIBUTION

    names = set()
    for spec in CATALOGUE.values():
        base = f"payment_enrichment_{spec.name}"
        if spec.kind == COUNTER:
            names.add(base + "_total")
        elif spec.kind == DISTRIBUTION:
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        else:
            names.add(base)
    return names


def _alert_rules() -> list[dict]:
    return [r for g in _monitoring("alerts.yaml")["spec"]["groups"] for r in g["rules"]]


def _dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, with Grafana's variables replaced by values PromQL accepts."""
    out = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m")
            out.append((panel["title"], re.sub(r"\$\w+", ".*", expr)))
    return out


def _taskmanager_pod() -> tuple[dict, dict[str, dict]]:
    """The TaskManager pod as the operator builds it: (labels, containers by name). The operator merges
    spec.podTemplate with taskManager.podTemplate (containers by name); Flink adds its own labels."""
    fd = _one("FlinkDeployment")
    labels = {"app": fd["metadata"]["name"], **FLINK_TM_LABELS}
    containers: dict[str, dict] = {}
    for template in (fd["spec"].get("podTemplate", {}), fd["spec"]["taskManager"].get("podTemplate", {})):
        labels.update(template.get("metadata", {}).get("labels", {}))
        for c in template.get("spec", {}).get("containers", []):
            merged = containers.setdefault(c["name"], {"name": c["name"], "ports": []})
            merged["ports"] = merged["ports"] + c.get("ports", [])
    return labels, containers


def _sidecar_metrics_ports() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in _sidecar()["ports"] if p["name"].startswith("metrics-")}


def _prometheus_port_range() -> range:
    value = next(a.split("=", 1)[1] for a in _job_container()["args"] if a.startswith("--prometheus_port="))
    first, _, last = value.partition("-")
    return range(int(first), int(last or first) + 1)


def _namespace() -> str:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]


@pytest.mark.parametrize("name,schema", [("podmonitor.yaml", "podmonitor.schema.json"),
                                         ("alerts.yaml", "prometheusrule.schema.json")])
def test_monitoring_resources_match_their_schemas(name: str, schema: str) -> None:
    doc = _monitoring(name)
    jsonschema.validate(doc, json.loads((SCHEMAS / schema).read_text()), cls=jsonschema.Draft202012Validator)
    assert doc["metadata"]["namespace"] == _namespace()


def test_monitoring_schemas_reject_broken_resources() -> None:
    """The hand-written schemas are not vacuous."""
    pm_schema = json.loads((SCHEMAS / "podmonitor.schema.json").read_text())
    rule_schema = json.loads((SCHEMAS / "prometheusrule.schema.json").read_text())
    pm = _monitoring("podmonitor.yaml")
    for mutate in (lambda d: d["spec"]["podMetricsEndpoints"][0].update(interval="15 seconds"),
                   lambda d: d["spec"]["podMetricsEndpoints"][0].update(targetPort=9464),
                   lambda d: d["spec"].pop("selector"),
                   lambda d: d.update(kind="ServiceMonitor")):
        bad = json.loads(json.dumps(pm))
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, pm_schema, cls=jsonschema.Draft202012Validator)
    rules = _monitoring("alerts.yaml")
    for mutate in (lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr"),
                   lambda d: d["spec"]["groups"][0]["rules"][0].update(record="x:y"),
                   lambda d: d["spec"]["groups"][0]["rules"][0].update({"for": "10 minutes"}),
                   lambda d: d["spec"]["groups"][0]["rules"][0]["labels"].update({"bad-name": "x"})):
        bad = json.loads(json.dumps(rules))
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, rule_schema, cls=jsonschema.Draft202012Validator)


def test_podmonitor_selects_the_taskmanagers_and_scrapes_every_worker_port() -> None:
    pm = _monitoring("podmonitor.yaml")["spec"]
    labels, containers = _taskmanager_pod()
    selector = pm["selector"]["matchLabels"]
    assert selector.items() <= labels.items(), f"{selector} does not select the TaskManager pods {labels}"
    assert selector.get("component") == "taskmanager"  # not the JobManager (no SDK workers there)
    assert pm["namespaceSelector"]["matchNames"] == [_namespace()]
    # Every endpoint is a named port of the TaskManager pod; the SDK workers' are on the sidecar.
    ports_by_name = {p["name"]: (c, p["containerPort"]) for c in containers.values() for p in c["ports"]}
    endpoints = {e["port"]: e for e in pm["podMetricsEndpoints"]}
    assert len(endpoints) == len(pm["podMetricsEndpoints"])
    for port in endpoints:
        assert port in ports_by_name, f"PodMonitor port {port} is not a named containerPort of the TaskManager pod"
    worker_endpoints = {p for p in endpoints if p.startswith("metrics-")}
    assert worker_endpoints == set(_sidecar_metrics_ports())
    for port in worker_endpoints:
        assert ports_by_name[port][0]["name"] == "python-harness"
        endpoint = endpoints[port]
        assert endpoint["interval"] == "15s" and endpoint.get("path", "/metrics") == "/metrics"
        assert {"targetLabel": "job", "replacement": SDK_JOB} in endpoint["relabelings"]
    # Flink's own reporter, if scraped, on the port flink-prometheus.yaml's reporter uses.
    if "metrics" in endpoints:
        conf = _one("FlinkDeployment")["spec"]["flinkConfiguration"]
        assert ports_by_name["metrics"][1] == int(conf["metrics.reporter.prom.port"])


def test_prometheus_port_range_covers_exactly_the_sidecar_metrics_ports() -> None:
    declared = _sidecar_metrics_ports()
    ports = _prometheus_port_range()
    assert sorted(declared.values()) == list(ports), f"--prometheus_port {ports} vs containerPorts {declared}"
    assert declared == {f"metrics-{i}": port for i, port in enumerate(ports)}
    # One SDK worker process per job per TaskManager (--sdk_worker_parallelism, default 1); a port per
    # slot leaves room for as many jobs as the TaskManager can hold, or a worker restarting while its
    # predecessor still holds its port.
    args = _job_container()["args"]
    sdk_parallelism = int(next((a.split("=", 1)[1] for a in args if a.startswith("--sdk_worker_parallelism=")), 1))
    slots = int(_one("FlinkDeployment")["spec"]["flinkConfiguration"]["taskmanager.numberOfTaskSlots"])
    assert len(ports) == slots >= sdk_parallelism
    assert not set(ports) & {p["containerPort"] for p in _sidecar()["ports"] if p["name"] == "worker-pool"}


def test_monitoring_queries_use_only_exposed_metric_names() -> None:
    exposed = _exposed_metric_names()
    assert {"payment_enrichment_requests_total", "payment_enrichment_kafka_lag",
            "payment_enrichment_request_latency_ms_bucket"} <= exposed  # the rule above, spelled out once
    for name in ("alerts.yaml", "grafana-dashboard.json"):
        used = set(METRIC_NAME.findall((MONITORING / name).read_text()))
        assert used, name
        assert used <= exposed, f"{name}: not served by the exporter: {sorted(used - exposed)}"


def test_monitoring_queries_aggregate_lag_and_counters_across_workers() -> None:
    """Every worker reports the whole group's lag (max per partition, never a sum of copies); counters are
    per process (only ever used through rate(), then summed)."""
    exprs = [r["expr"] for r in _alert_rules()] + [e for _, e in _dashboard_exprs()]
    for expr in exprs:
        for gauge in ("payment_enrichment_kafka_lag", "payment_enrichment_oldest_uncommitted_age_s"):
            uses = len(re.findall(rf"\b{gauge}\b", expr))
            maxed = len(re.findall(rf"max by \([^)]*\) \({gauge}\b", expr))
            assert uses == maxed, f"{gauge} not aggregated with max by (...) in: {expr}"
        for counter in re.findall(r"\bpayment_enrichment_\w+_(?:total|bucket|sum|count)\b", expr):
            assert re.search(rf"\brate\({counter}\b", expr), f"{counter} used without rate() in: {expr}"


def test_alert_rules_cover_the_issue_and_point_at_the_runbook() -> None:
    rules = {r["alert"]: r for r in _alert_rules()}
    assert {"KafkaLagGrowing", "DeadLetterShareHigh", "Share429High", "RetryAmplificationHigh",
            "ExporterDown"} <= set(rules)
    readme = (ROOT / "deploy" / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.MULTILINE)}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "deploy/README.md" and anchor in anchors, f"{name}: no README section #{anchor}"
    lag = rules["KafkaLagGrowing"]
    assert lag["for"] == "10m" and re.search(r"deriv\(.*\[10m:1m\]\) > 0", lag["expr"])
    assert "outcome=\"429\"" in rules["Share429High"]["expr"]
    amplification = rules["RetryAmplificationHigh"]["expr"]
    assert "rate(payment_enrichment_requests_total[5m])" in amplification
    assert "rate(payment_enrichment_batches_total[5m])" in amplification
    assert f'up{{job="{SDK_JOB}"}}' in rules["ExporterDown"]["expr"]


def test_grafana_dashboard_panels_and_variables() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] == 39 and dash["uid"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    topic = variables["topic"]
    assert re.fullmatch(r"label_values\(payment_enrichment_kafka_lag(\{[^}]*\})?, topic\)", topic["query"]["query"])
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']} has no target"
        for target in [panel] + panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"])
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in ("lag", "oldest uncommitted", "completed events", "records written", "dead-letter share",
                   "429 share", "retry amplification", "in flight", "rate limit", "latency", "batch size"):
        assert wanted in titles, wanted
