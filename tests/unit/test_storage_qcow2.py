"""The default qcow2 image the service writes itself is qemu-img's, byte for
byte and block for block, and only that command line is replaced."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from services.storage.pools.backends.base import CreateOptions
from services.storage.pools.backends.dir import DirBackend
from services.storage.pools.files import describe
from services.storage.pools.qcow2 import (
    MAX_CAPACITY,
    default_capacity,
    default_image,
    same_as_written,
    write_image,
)
from services.storage.pools.runner import DEFAULT_TIMEOUT, CommandRunner
from shared.conf.storage_pool import parse_storage_pool
from shared.conf.storage_volume import parse_storage_volume

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="no qemu-img")
#: Sizes in KiB: empty, under one L1 entry, one entry exactly and one more,
#: 1 GiB, an L1 table of exactly one cluster (4 TiB) and one entry more, 100 GiB.
SIZES_KIB = [0, 1, 524288, 524289, 1048576, 4 << 30, (4 << 30) + 1, 100 << 20]


def qemu_img_image(path: Path, size_kib: int) -> None:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", str(path)]
    subprocess.run([*argv, f"{size_kib}K"], check=True, capture_output=True)


@needs_qemu_img
@pytest.mark.parametrize("size_kib", SIZES_KIB)
def test_the_image_is_qemu_imgs(tmp_path: Path, size_kib: int) -> None:
    theirs, ours = tmp_path / "theirs.qcow2", tmp_path / "ours.qcow2"
    qemu_img_image(theirs, size_kib)
    write_image(str(ours), size_kib * 1024, 0o600)
    assert ours.read_bytes() == theirs.read_bytes()
    assert same_as_written(str(theirs), size_kib * 1024)
    # Same allocation, as vol-info shows it.
    assert os.stat(ours).st_blocks == os.stat(theirs).st_blocks
    assert os.stat(ours).st_mode & 0o777 == 0o600
    check = subprocess.run(["qemu-img", "check", str(ours)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    mine, qemu = describe(str(ours), "v"), describe(str(theirs), "v")
    assert mine is not None and qemu is not None
    assert mine.target.format == "qcow2"
    shown = [(d.capacity, d.allocation, d.physical) for d in (mine, qemu)]
    assert shown[0] == shown[1]


@needs_qemu_img
def test_a_different_image_is_noticed(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.qcow2"
    qemu_img_image(theirs, 1024)
    assert not same_as_written(str(theirs), 2048 * 1024)
    with open(theirs, "ab") as f:
        f.write(b"\0")
    assert not same_as_written(str(theirs), 1024 * 1024)
    assert not same_as_written(str(tmp_path / "absent"), 1024 * 1024)


def test_only_the_plain_command_is_replaced() -> None:
    plain = ["qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", "/p/v.qcow2", "1048576K"]
    assert default_capacity(plain, "qemu-img") == 1 << 30
    assert default_capacity([*plain[:7], "0K"], "qemu-img") == 0
    others = [
        [*plain[:5], "compat=1.1", *plain[6:]],
        [*plain[:5], "compat=0.10,cluster_size=4096", *plain[6:]],
        [*plain[:5], "backing_fmt=qcow2,compat=0.10", *plain[6:]],
        [*plain[:3], "raw", *plain[4:]],
        [*plain[:2], "-b", "/p/base", *plain[2:]],
        [*plain[:7], "1048576"],
        [*plain[:7], "01K"],
        [*plain[:7], f"{MAX_CAPACITY // 1024 + 1}K"],
        plain[:7],
    ]
    for argv in others:
        assert default_capacity(argv, "qemu-img") is None, argv
    assert default_capacity(plain, "/usr/bin/qemu-img") is None


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    there = tmp_path / "v.qcow2"
    there.write_bytes(b"somebody's data")
    with pytest.raises(FileExistsError):
        write_image(str(there), 1 << 30, 0o600)
    assert there.read_bytes() == b"somebody's data"
    with pytest.raises(FileNotFoundError):
        write_image(str(tmp_path / "no-such-folder" / "v.qcow2"), 1 << 30, 0o600)


def test_image_size_follows_the_l1_table() -> None:
    assert len(default_image(0)) == 3 * 65536
    assert len(default_image(1 << 30)) == 3 * 65536 + 16


class FakeQemuImg(CommandRunner):
    """Runs no tool: writes ``image`` where qemu-img would have written its image."""

    def __init__(self, image: bytes) -> None:
        super().__init__()
        self.image = image
        self.runs = 0

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ok_codes: Sequence[int] = (0,),
    ) -> tuple[int, str]:
        self.runs += 1
        Path(argv[-2]).write_bytes(self.image)
        return 0, ""


async def create(backend: DirBackend, folder: Path, name: str) -> None:
    pool = parse_storage_pool(
        f"<pool type='dir'><name>p</name><target><path>{folder}</path></target></pool>"
    )
    xml = (
        f"<volume><name>{name}</name><capacity unit='G'>1</capacity>"
        "<target><format type='qcow2'/></target></volume>"
    )
    vol = await backend.define_volume(pool, parse_storage_volume(xml, pool))
    await backend.build_volume(pool, vol, CreateOptions())


async def test_written_here_only_once_qemu_img_agreed(tmp_path: Path) -> None:
    agreeing = DirBackend(FakeQemuImg(default_image(1 << 30)))
    for name in ("a.qcow2", "b.qcow2", "c.qcow2"):
        await create(agreeing, tmp_path, name)
    assert isinstance(agreeing.runner, FakeQemuImg) and agreeing.runner.runs == 1
    assert (tmp_path / "c.qcow2").read_bytes() == default_image(1 << 30)

    other = tmp_path / "other"
    other.mkdir()
    different = DirBackend(FakeQemuImg(b"QFI\xfb" + bytes(100)))
    for name in ("a.qcow2", "b.qcow2"):
        await create(different, other, name)
    assert isinstance(different.runner, FakeQemuImg) and different.runner.runs == 2
    assert different.qcow2.agrees is False
