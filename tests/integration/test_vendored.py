"""Each service starts with only its own folder and shared/ on the import path,
as its container image holds them (ARCHITECTURE: "vendored")."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.connection import Client
from shared.util.natsserver import EmbeddedNats
from tests.integration.procs import ROOT, terminate, wait_for_service

pytestmark = pytest.mark.integration

SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__main__.py").is_file())

# Runs a module with the repository removed from sys.path and the vendored copy first.
BOOTSTRAP = """
import os, runpy, sys
repo, vendor, module = sys.argv[1:4]
sys.path = [vendor] + [p for p in sys.path
                       if p not in ('', '.') and os.path.realpath(p) != os.path.realpath(repo)]
sys.argv = [module] + sys.argv[4:]
if module == '--probe':
    import importlib.util
    print(','.join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is not None))
else:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
"""


def _vendor(tmp_path: Path, service: str) -> Path:
    image = tmp_path / "image"
    shutil.copytree(ROOT / "shared", image / "shared")
    shutil.copytree(ROOT / "services" / service, image / "services" / service)
    return image


@pytest.mark.parametrize("service", SERVICES)
def test_vendored_copy_cannot_reach_other_packages(tmp_path: Path, service: str) -> None:
    image = _vendor(tmp_path, service)
    others = [f"services.{s}" for s in SERVICES if s != service] + ["client", "agents"]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            BOOTSTRAP,
            str(ROOT),
            str(image),
            "--probe",
            f"services.{service}",
            "shared.util",
            *others,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert out.split(",") == [f"services.{service}", "shared.util"]


async def test_vendored_secret_service_serves(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS
) -> None:
    image = _vendor(tmp_path, "secret")
    state = tmp_path / "state"
    state.mkdir()
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BOOTSTRAP,
                str(ROOT),
                str(image),
                "services.secret",
                "--nats-url",
                nats_server.url,
                "--state-dir",
                str(state),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        await wait_for_service(nc, "secret", proc)
        uuid = await Client(nc).secret.define("<secret/>")
        assert await Client(nc).secret.dumpxml(uuid)
    finally:
        assert terminate(proc) == 0
