"""The README's examples, run as written against a fresh `virtbus up`."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from shared.util.natsserver import free_port
from tests.deploy.upstack import virtbus_up

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def examples() -> str:
    """The first shell block under "Using it": the examples a fresh stack runs."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it") :]
    return re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]


async def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    script = examples()
    assert "export VIRTBUS_NATS_URL=nats://127.0.0.1:4222" in script
    async with virtbus_up(free_port(), tmp_path / "state") as stack:
        # the one change a reader makes: the URL their `make run` printed
        script = script.replace("nats://127.0.0.1:4222", stack.url)
        env = dict(os.environ, TMPDIR=str(tmp_path), HOME=str(tmp_path))
        env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
        proc = await asyncio.create_subprocess_exec(
            "bash", "-e", "-c", script, cwd=ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "Secret 0a81f5b2-8403-4c1b-9dd4-4d4e6fd7a0b2 created" in text
    assert "Vol disk1.qcow2 created" in text
    assert "Capacity:       1.00 GiB" in text  # disk1.qcow2 is now base.qcow2
    assert "    vol-upload <vol> <file> [--pool <string>]" in text
    assert '"name": "disk1.qcow2"' in text
