"""Re-reading a volume (vol-info, vol-dumpxml): the file and its header are read
every time, and the definition is made again only when what was read differs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services.storage.pools.files import Seen, describe, reread

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="no qemu-img")


def read_once(path: Path) -> Seen:
    """``path`` described, then re-read once: a definition and its reading."""
    known = describe(str(path), path.name)
    assert known is not None
    seen = reread(str(path), path.name, known)
    assert seen is not None
    return seen


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "v.img"
    path.write_bytes(bytes(8192))
    return path


def test_a_file_that_reads_the_same_keeps_its_definition(raw: Path) -> None:
    first = read_once(raw)
    assert reread(str(raw), raw.name, first[0], None, first) is first


def test_a_change_of_the_file_makes_a_new_definition_showing_it(raw: Path) -> None:
    path = raw
    seen = read_once(path)
    os.truncate(path, 1 << 20)
    grown = reread(str(path), "v.img", seen[0], None, seen)
    assert grown is not None and grown is not seen
    assert grown[0].capacity == 1 << 20
    os.chmod(path, 0o640)
    moded = reread(str(path), "v.img", grown[0], None, grown)
    assert moded is not None and moded[0].target.permissions.mode == 0o640


def test_what_was_seen_of_another_definition_is_not_reused(raw: Path) -> None:
    seen = read_once(raw)
    replaced = seen[0].model_copy()
    fresh = reread(str(raw), raw.name, replaced, None, seen)
    assert fresh is not None and fresh is not seen and fresh[0] is not seen[0]


@needs_qemu_img
def test_a_change_of_the_backing_file_makes_a_new_definition(tmp_path: Path) -> None:
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(base), "1M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(top)],
        check=True,
    )
    seen = read_once(top)
    assert reread(str(top), "top.qcow2", seen[0], None, seen) is seen
    os.chmod(base, 0o604)
    fresh = reread(str(top), "top.qcow2", seen[0], None, seen)
    assert fresh is not None and fresh is not seen
    assert fresh[0].backing_store is not None
    assert fresh[0].backing_store.permissions.mode == 0o604


def test_reading_a_volume_leaves_its_access_time_alone(tmp_path: Path) -> None:
    path, control = tmp_path / "v.img", tmp_path / "control.img"
    for each in (path, control):
        each.write_bytes(bytes(8192))
        st = each.stat()
        # Older than the last write: under relatime, the next read updates it.
        os.utime(each, ns=(st.st_mtime_ns - 100 * 10**9, st.st_mtime_ns))
    before = control.stat().st_atime_ns
    control.read_bytes()
    if control.stat().st_atime_ns == before:
        pytest.skip("this file system does not update access times on read (noatime)")
    before = path.stat().st_atime_ns
    first = read_once(path)
    assert path.stat().st_atime_ns == before
    assert reread(str(path), path.name, first[0], None, first) is first
