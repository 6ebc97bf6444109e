"""A loop device over a sparse file, for tests of backends that need a block device.

``attached_loop`` skips the test, saying why, when the tools, root or the
kernel's loop support are missing, and detaches the device afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def loop_unavailable(tools: Sequence[str]) -> str | None:
    """Why a loop device cannot be used here, or None when it can."""
    for tool in ("losetup", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "loop devices need root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: the kernel has no loop device support here"
    return None


@contextmanager
def attached_loop(folder: Path, size: int, tools: Sequence[str] = ()) -> Iterator[str]:
    """A loop device over a new ``size``-byte sparse file in ``folder``."""
    reason = loop_unavailable(tools)
    if reason:
        pytest.skip(reason)
    image = folder / "loop.img"
    with open(image, "wb") as f:
        f.truncate(size)
    proc = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"losetup cannot attach a loop device here: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)
