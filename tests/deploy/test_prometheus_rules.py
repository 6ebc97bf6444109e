"""deploy/prometheus: the configuration loads, the rules parse, and every alert has a
``promtool test rules`` case that makes it fire (and one that keeps it silent)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "virtbus.rules.yml"
UNIT = PROM / "tests" / "virtbus.test.yml"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool missing: `make system` installs Debian's prometheus package",
)


def _promtool(*args: str) -> str:
    done = subprocess.run(
        ["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_config_and_rules_load() -> None:
    out = _promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in out


def test_promtool_unit_tests_pass() -> None:
    out = _promtool("test", "rules", str(UNIT.relative_to(PROM)))
    assert "SUCCESS" in out


def test_every_alert_fires_in_a_unit_test() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert len(alerts) >= 7
    fired: set[str] = set()
    for case in yaml.safe_load(UNIT.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                fired.add(check["alertname"])
    assert alerts == fired
