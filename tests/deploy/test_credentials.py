"""deploy/credentials.py: the per-role credentials of a cluster, from the one
permissions generator, load in nats-server and become the chart's Secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from deploy import credentials
from shared.util import roles
from shared.util.natsserver import nats_server_binary
from tests.deploy.chart import TEST_VALUES, render, validate

HOSTS = ["h1", "h2"]


def test_generated_authorization_loads_in_nats_server(tmp_path: Path) -> None:
    credentials.write(tmp_path, HOSTS)
    conf = tmp_path / "nats.conf"
    conf.write_text(f"listen: 127.0.0.1:4222\ninclude ./{credentials.AUTH}\n")
    done = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in (credentials.VALUES, credentials.AUTH, credentials.NATS_SECRET):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600


def test_every_role_becomes_a_valid_secret_of_the_chart(tmp_path: Path) -> None:
    passwords = credentials.write(tmp_path, HOSTS)
    assert set(passwords) == {r.name for r in roles.all_roles(HOSTS)}
    values = yaml.safe_load((tmp_path / credentials.VALUES).read_text())
    objects = render({**TEST_VALUES, **values})
    assert validate(objects).errors == []
    secrets = {}
    for o in objects:
        role_name = o["metadata"].get("annotations", {}).get("virtbus.io/role")
        if o["kind"] == "Secret" and role_name:
            secrets[role_name] = o
    assert set(secrets) == set(passwords)
    for role in roles.all_roles(HOSTS):
        data = secrets[role.name]["stringData"]
        assert data["user"] == role.user and data["password"] == passwords[role.name]


def test_running_again_keeps_passwords_and_adds_a_host(tmp_path: Path) -> None:
    first = credentials.write(tmp_path, HOSTS)
    done = subprocess.run(
        [sys.executable, "-m", "deploy.credentials", "--hosts", "h1,h2,h3", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    second = credentials._known(tmp_path)
    assert {k: second[k] for k in first} == first
    assert set(second) - set(first) == {roles.agent_role("h3")}
