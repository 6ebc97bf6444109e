"""Each service starts with only its own folder and shared/ on the import path,
as its container image holds them (ARCHITECTURE: "vendored")."""

from __future__ import annotations

import json
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
#: Every image: a service's folder (or the agent's) and shared/.
IMAGES = [f"services/{s}" for s in SERVICES] + ["agents/qemu"]

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
elif module == '--closure':
    # Import every module of the image; list those that fail and any module
    # loaded from the repository instead of the image.
    import importlib, importlib.util, json, pathlib
    failed, names = [], []
    for path in sorted(pathlib.Path(vendor).rglob('*.py')):
        parts = path.relative_to(vendor).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        names.append(name)
        try:
            if parts[-1] == '__main__':  # runs the service: found, not run
                assert importlib.util.find_spec(name) is not None, 'not found'
                continue
            importlib.import_module(name)
        except Exception as err:
            failed.append(f'{name}: {err!r}')
    here, image = os.path.realpath(repo) + os.sep, os.path.realpath(vendor) + os.sep
    files = {n: os.path.realpath(getattr(m, '__file__', None) or image)
             for n, m in list(sys.modules.items())}
    venv = os.path.realpath(sys.prefix) + os.sep  # the installed libraries, not ours
    outside = sorted(n for n, f in files.items()
                     if f.startswith(here) and not f.startswith((image, venv)))
    print(json.dumps({'modules': names, 'failed': failed, 'outside': outside}))
else:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
"""


def _vendor(tmp_path: Path, service: str) -> Path:
    return _image(tmp_path, f"services/{service}")


def _image(tmp_path: Path, folder: str) -> Path:
    """What a container image holds: ``folder`` and shared/, nothing else."""
    image = tmp_path / "image"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "shared", image / "shared", ignore=ignore)
    shutil.copytree(ROOT / folder, image / folder, ignore=ignore)
    return image


@pytest.mark.parametrize("folder", IMAGES)
def test_every_module_of_an_image_imports_from_the_image_alone(tmp_path: Path, folder: str) -> None:
    image = _image(tmp_path, folder)
    out = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, str(ROOT), str(image), "--closure"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    closure = json.loads(out)
    own = sum(1 for _ in (image / folder).rglob("*.py"))
    assert len(closure["modules"]) == own + sum(1 for _ in (image / "shared").rglob("*.py"))
    assert closure["failed"] == []
    assert closure["outside"] == []


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
