"""The Kubernetes manifests: every overlay renders with `kubectl kustomize` (the machine image's kubectl
1.32), every object validates against the Kubernetes 1.32 schemas (kubernetes-validate, strict: unknown
fields fail), and the pieces agree with each other and with the server (ports, labels, settings,
user, drain time, the autoscaler's metric).

Not schema-validated: the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) is a CRD;
kubernetes-validate ships only the built-in kinds. It is checked by hand instead (its selector finds
the Service, its port is the Service's HTTP port, which serves /metrics), and each run warns that it
was not validated.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import generate_latest

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBE / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
K8S_VERSION = "1.32"  # the kubectl the machine image ships; kubernetes-validate has this version's schemas
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # kinds kubernetes-validate has no schema for


def kubectl() -> str:
    exe = shutil.which("kubectl")
    assert exe, "kubectl not found: the CI image ships kubectl 1.32 at /usr/bin/kubectl (it renders kustomize)"
    return exe


def render(overlay: str) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl(), "kustomize", str(KUBE / "overlays" / overlay)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_every_overlay_is_here():
    assert {"gpu", "cpu-demo", "gpu-prometheus-operator"} <= set(OVERLAYS), OVERLAYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_kubernetes_schemas(overlay):
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    unvalidated = []
    for obj in objects:
        name = f"{obj['apiVersion']} {obj['kind']} {obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            unvalidated.append(name)
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"overlays/{overlay}: {name} is invalid for Kubernetes {K8S_VERSION}: {exc}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"overlays/{overlay}: {name} has no schema in Kubernetes {K8S_VERSION} and is not a "
                        "known CRD: a typo in apiVersion or kind?")
    if unvalidated:
        warnings.warn(f"overlays/{overlay}: not schema-validated (CRDs, checked by hand in "
                      f"test_servicemonitor_finds_the_metrics_port): {', '.join(unvalidated)}", stacklevel=1)


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def server_container(objects: list[dict]) -> dict:
    containers = pod_spec(objects)["containers"]
    assert [c["name"] for c in containers] == ["server"]
    return containers[0]


def config(objects: list[dict]) -> dict[str, str]:
    ref = server_container(objects)["envFrom"][0]["configMapRef"]["name"]
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref]
    assert len(maps) == 1, f"the server's envFrom names ConfigMap {ref!r}, which the overlay does not render"
    return maps[0]["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_pdb_and_autoscaler_find_the_pods(overlay):
    objects = render(overlay)
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(objects, "Service")
    assert service["spec"]["selector"] and service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["sessionAffinity"] == "ClientIP", "named sessions need the client to come back here"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # every Service port reaches a named container port
    ports = {p["name"]: p["containerPort"] for p in server_container(objects)["ports"]}
    assert {p["name"] for p in service["spec"]["ports"]} == {"zmq", "tcp", "http"}
    for p in service["spec"]["ports"]:
        assert p["targetPort"] in ports, f"Service port {p['name']} targets {p['targetPort']!r}, not a container port"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server_settings_ports_and_probes_agree(overlay, monkeypatch):
    from nitrogen_server.config import ServerSettings

    objects = render(overlay)
    env = config(objects)
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    settings = ServerSettings()  # the server's own parser: a bad value in the ConfigMap fails here
    container = server_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"zmq": settings.zmq_port, "tcp": settings.tcp_port, "http": settings.http_port}
    assert settings.host == "0.0.0.0", "the pod's address must be reachable from the Service"
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.http_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["nitrogen-server", "healthcheck"], (probe, command)
        timeout = float(command[command.index("--timeout") + 1])
        assert container[probe]["timeoutSeconds"] >= 2 * timeout, f"{probe}: both ports may take --timeout each"
    # SIGTERM drain: preStop, then the server's grace period, then closing the engine, within the grace.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = pod_spec(objects)["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + settings.shutdown_grace_s + 10, (grace, pre_stop, settings.shutdown_grace_s)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runs_as_the_images_non_root_user(overlay):
    uid = re.search(r"^ARG APP_UID=(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert uid, "Dockerfile lost its APP_UID build argument"
    spec = pod_spec(render(overlay))
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == int(uid.group(1))
    for c in spec["containers"] + spec.get("initContainers", []):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o.startswith("gpu")])
def test_gpu_overlays_take_one_gpu_and_the_released_weights(overlay):
    objects = render(overlay)
    spec, env = pod_spec(objects), config(objects)
    assert server_container(objects)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env["NITROGEN_DEVICE"].startswith("cuda") and env["NITROGEN_CHECKPOINT"] == "/app/models/ng.pt"
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert "emptyDir" not in volumes["models"]
    pvcs = [o for o in objects if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == claim]
    assert pvcs and pvcs[0]["spec"]["accessModes"] == ["ReadWriteMany"], "pods on several nodes share it"
    (init,) = spec["initContainers"]
    assert init["image"] == server_container(objects)["image"], "the init container runs the same image"
    assert "ensure_checkpoint(\"/app/models/ng.pt\")" in init["command"][-1]
    assert any(m["name"] == "models" and not m.get("readOnly") for m in init["volumeMounts"])


def test_cpu_demo_needs_no_gpu_and_no_weights():
    objects = render("cpu-demo")
    env, spec = config(objects), pod_spec(objects)
    assert env["NITROGEN_CHECKPOINT"] == "demo" and env["NITROGEN_DEVICE"] == "cpu"
    assert "nvidia.com/gpu" not in str(server_container(objects)["resources"])
    assert not spec.get("initContainers") and not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]


def test_autoscaler_metric_comes_from_the_adapter_rule_and_the_server():
    """The HPA's metric is what the prometheus-adapter rule names, from a series the server exports."""
    from nitrogen_server.metrics import ServerMetrics

    values = yaml.safe_load((KUBE / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    for overlay in OVERLAYS:
        (metric,) = one(render(overlay), "HorizontalPodAutoscaler")["spec"]["metrics"]
        assert metric["pods"]["metric"]["name"] == rule["name"]["as"], overlay
    metrics = ServerMetrics([], lambda: 0)
    metrics.requests.labels("tcp", "predict", "ok").inc()
    exposed = generate_latest(metrics.registry).decode()
    assert f'{series}{{outcome="ok",port="tcp",type="predict"}} 1.0' in exposed, exposed


def test_servicemonitor_finds_the_metrics_port():
    """By hand, since no schema ships for this CRD: its selector finds the Service, and the Service's
    port of that name is the server's HTTP port (/metrics)."""
    objects = render("gpu-prometheus-operator")
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
    assert endpoint["path"] == "/metrics" and re.fullmatch(r"\d+s", endpoint["interval"])
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name[endpoint["port"]]["targetPort"] == "http"
