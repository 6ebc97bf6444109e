"""Render deploy/helm/virtbus with Helm as a library (helm-python-sdk) and validate
every manifest against Kubernetes's own schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml
from helm_python import _native

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "virtbus"
KUBE_VERSION = "1.30.0"
#: What a cluster with the Prometheus Operator serves (the chart's capability guard).
OPERATOR_APIS = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/PodMonitor",
                 "monitoring.coreos.com/v1/PrometheusRule"]  # fmt: skip
#: Kinds of CRDs, whose schemas Kubernetes does not ship: checked by the tests instead.
CRD_KINDS = {"PodMonitor", "PrometheusRule"}

#: Values the cluster test and the chart tests render with: two hypervisors, a
#: fixed master key, and a placeholder password per role (the real ones come
#: from the credentials generator).
TEST_VALUES: dict[str, Any] = {
    "secretKey": {"value": "dmlydGJ1cy10ZXN0LWtleS1ub3QtZm9yLXVzZS0wMDA="},
    "hypervisors": {"hosts": ["h1", "h2"]},
}


def render(
    values: dict[str, Any] | None = None,
    *,
    api_versions: list[str] | None = None,
    name: str = "virtbus",
    namespace: str = "virtbus",
) -> list[dict[str, Any]]:
    """Every object the chart renders, in template order."""
    chart = helm.Chart.load(CHART)
    opts = {
        "name": name,
        "namespace": namespace,
        "is_install": True,
        "kube_version": f"v{KUBE_VERSION}",
        "api_versions": api_versions or [],
    }
    # Chart.render does not pass api_versions; the library's own call does.
    text = _native.call_string(
        "helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts)
    )
    manifests: dict[str, str] = json.loads(text)
    objects: list[dict[str, Any]] = []
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects.extend(d for d in yaml.safe_load_all(manifests[path]) if d)
    return objects


@dataclass
class Validation:
    checked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def validate(objects: list[dict[str, Any]]) -> Validation:
    """Each object against the Kubernetes 1.30 schema, unknown fields refused."""
    result = Validation()
    for obj in objects:
        what = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("kind") in CRD_KINDS:
            result.skipped.append(what)
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            result.errors.append(f"{what}: {err.message} at {list(err.path)}")
        except kubernetes_validate.utils.SchemaNotFoundError as err:
            result.errors.append(f"{what}: no schema ({err})")
        else:
            result.checked.append(what)
    return result


def lint(values: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    return report
