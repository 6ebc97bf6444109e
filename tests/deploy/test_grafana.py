"""deploy/grafana: the dashboard JSON is what dashboard.py generates, and every
panel's PromQL parses with promtool and uses only recording rules that exist."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "virtbus.rules.yml"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("virtbus_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_committed_json_is_the_generated_one() -> None:
    generated = _module().render()
    assert (GRAFANA / "virtbus.json").read_text() == generated, (
        "run: python deploy/grafana/dashboard.py > deploy/grafana/virtbus.json"
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: make system")
def test_every_panel_query_parses(tmp_path: Path) -> None:
    dashboard = json.loads((GRAFANA / "virtbus.json").read_text())
    exprs = _exprs(dashboard)
    assert len(exprs) == len(_module().queries()) >= 12
    # Grafana's variables become a match-all regex, as Grafana itself sends them.
    rules = [
        {"record": f"dashboard:panel{i}", "expr": re.sub(r"\$\w+", ".*", e)}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


def test_panels_use_only_existing_recording_rules() -> None:
    recorded = {
        r["record"]
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    }
    used = {
        name
        for e in _exprs(json.loads((GRAFANA / "virtbus.json").read_text()))
        for name in re.findall(r"virtbus:[a-z0-9_:]+", e)
    }
    assert used and used <= recorded
