"""deploy/helm/virtbus renders, lints and validates strictly against Kubernetes 1.30,
and its objects have what the issue asks of them (probes, resources, security
contexts, PDBs, NetworkPolicies, host services on hypervisor nodes only,
per-role credentials, monitoring objects only where the API exists)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import OPERATOR_APIS, ROOT, TEST_VALUES, lint, render, validate

ROLES = ["secret", "storage", "network", "nwfilter", "agent@h1", "agent@h2"]
VALUES: dict[str, Any] = {
    **TEST_VALUES,
    "credentials": {"roles": {r: {"user": f"virtbus-{r}", "password": "pw"} for r in ROLES}},
}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(VALUES, api_versions=OPERATOR_APIS)


def _kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_manifest_is_valid_for_kubernetes_1_30(objects: list[dict[str, Any]]) -> None:
    result = validate(objects)
    print(f"validated {len(result.checked)} objects, {len(result.errors)} errors")
    assert result.errors == []
    assert sorted(result.skipped) == ["PodMonitor/virtbus", "PrometheusRule/virtbus"]
    assert len(result.checked) == len(objects) - 2


def test_validation_refuses_an_unknown_field(objects: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(_kind(objects, "Deployment")["virtbus-secret"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    assert len(validate([broken]).errors) == 1


def test_lint_strict_has_no_warning() -> None:
    report = lint(VALUES)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_cluster_services_are_replicated_deployments_with_pdbs(
    objects: list[dict[str, Any]],
) -> None:
    deployments = _kind(objects, "Deployment")
    assert set(deployments) == {"virtbus-secret"}
    pdbs = _kind(objects, "PodDisruptionBudget")
    for name, d in deployments.items():
        assert d["spec"]["replicas"] >= 2
        assert pdbs[name]["spec"]["selector"] == d["spec"]["selector"]
        pod = d["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod
        [c] = pod["containers"]
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_host_services_are_daemonsets_on_hypervisors(objects: list[dict[str, Any]]) -> None:
    daemonsets = _kind(objects, "DaemonSet")
    assert set(daemonsets) == {
        "virtbus-storage",
        "virtbus-network",
        "virtbus-nwfilter",
        "virtbus-agent-qemu-h1",
        "virtbus-agent-qemu-h2",
    }
    for ds in daemonsets.values():
        pod = ds["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["virtbus.io/hypervisor"] == "true"
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["VIRTBUS_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # Each agent runs on its own node with its own host's credentials only.
    for host in ("h1", "h2"):
        pod = daemonsets[f"virtbus-agent-qemu-{host}"]["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["kubernetes.io/hostname"] == host
        [creds] = [v for v in pod["volumes"] if v["name"] == "creds"]
        assert creds["secret"]["secretName"] == f"virtbus-creds-agent-{host}"
    storage = daemonsets["virtbus-storage"]["spec"]["template"]["spec"]
    assert storage["containers"][0]["securityContext"]["privileged"] is True
    network = daemonsets["virtbus-network"]["spec"]["template"]["spec"]
    caps = network["containers"][0]["securityContext"]["capabilities"]
    assert "NET_ADMIN" in caps["add"] and caps["drop"] == ["ALL"]


def test_every_container_has_probes_resources_and_credentials(
    objects: list[dict[str, Any]],
) -> None:
    secrets = _kind(objects, "Secret")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
            assert c["securityContext"].get("allowPrivilegeEscalation") is False or (
                c["securityContext"].get("privileged") is True
            )
        [creds] = [v for v in pod["volumes"] if v["name"] == "creds"]
        secret = secrets[creds["secret"]["secretName"]]
        assert secret["stringData"]["creds"].startswith("nats://virtbus-")
    key = secrets["virtbus-secret-key"]
    assert key["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_network_policies_cover_every_pod_network_component(
    objects: list[dict[str, Any]],
) -> None:
    policies = _kind(objects, "NetworkPolicy")
    assert set(policies) == {"virtbus-secret", "virtbus-agent-qemu"}
    for p in policies.values():
        assert p["spec"]["policyTypes"] == ["Ingress", "Egress"]
        ports = [port["port"] for rule in p["spec"]["egress"] for port in rule["ports"]]
        assert 4222 in ports and 53 in ports


def test_monitoring_objects_follow_the_api_capabilities(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    plain = render(VALUES)
    assert not [o for o in plain if o["kind"] in ("PodMonitor", "PrometheusRule")]
    [rule] = _kind(objects, "PrometheusRule").values()
    ours = yaml.safe_load((ROOT / "deploy/prometheus/rules/virtbus.rules.yml").read_text())
    assert rule["spec"] == ours
    [monitor] = _kind(objects, "PodMonitor").values()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    if shutil.which("promtool"):
        path = tmp_path / "rules.yml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_nats_values_ask_for_a_durable_three_node_cluster() -> None:
    values = yaml.safe_load((ROOT / "deploy/nats/values.yaml").read_text())
    config = values["config"]
    assert config["cluster"]["enabled"] and config["cluster"]["replicas"] == 3
    assert config["cluster"]["tls"]["enabled"] and config["nats"]["tls"]["enabled"]
    assert config["jetstream"]["fileStore"]["enabled"]
    assert config["merge"]["jetstream"]["sync_interval"] == "always"
    chart = yaml.safe_load((ROOT / "deploy/helm/virtbus/values.yaml").read_text())
    assert chart["nats"]["streamReplicas"] == config["cluster"]["replicas"]
