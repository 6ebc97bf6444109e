"""Volume names and paths stay inside their pool; a pool folder scan skips what leaves it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.storage.pools.confine import (
    check_volume_name,
    confined,
    confined_status,
    has_control_chars,
    is_inside,
    volume_path,
)
from services.storage.pools.files import scan_folder
from shared.util.errors import ErrorCode, VirtError


@pytest.mark.parametrize("name", ["disk.qcow2", "a b", "x..y", ".hidden", "ü-名前"])
def test_plain_names_pass(name: str) -> None:
    check_volume_name(name)


@pytest.mark.parametrize("name", ["../etc", "/abs", "a/b", "", ".", "..", "nul\0x", "tab\tx"])
def test_escaping_names_refused(name: str) -> None:
    with pytest.raises(VirtError) as err:
        check_volume_name(name)
    assert err.value.code is ErrorCode.OPERATION_INVALID


def test_slash_refused_in_libvirts_words() -> None:
    with pytest.raises(VirtError, match=r"volume name '\.\./x' cannot contain '/'"):
        check_volume_name("../x")


def test_overlong_name_refused() -> None:
    with pytest.raises(VirtError, match="longer than 255 bytes"):
        check_volume_name("é" * 128)


def test_volume_path_joins_one_component() -> None:
    assert volume_path("/srv/pool/", "v.img") == "/srv/pool/v.img"
    with pytest.raises(VirtError):
        volume_path("/srv/pool", "../v.img")


def test_control_chars() -> None:
    assert has_control_chars("a\nb") and not has_control_chars("a b")


def test_links_out_of_the_pool(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    outside = tmp_path / "secret"
    outside.write_text("x")
    (pool / "inside.img").write_bytes(b"\0" * 512)
    os.symlink(outside, pool / "out")
    os.symlink(pool / "inside.img", pool / "alias")
    os.symlink(tmp_path, pool / "updir")
    assert is_inside(pool, pool / "alias")
    assert not is_inside(pool, pool / "out")
    assert confined(str(pool), str(pool / "alias")) == str(pool / "alias")
    for bad in ("out", "updir/secret", "../secret"):
        with pytest.raises(VirtError) as err:
            confined(str(pool), str(pool / bad))
        assert err.value.code is ErrorCode.ACCESS_DENIED
    with pytest.raises(VirtError):
        confined(str(pool), str(pool) + "/x\0y")
    # The status the check read is given back when it is the file's own.
    status = confined_status(str(pool), str(pool / "inside.img"))
    assert status is not None and status.st_ino == os.stat(pool / "inside.img").st_ino
    assert confined_status(str(pool), str(pool / "alias")) is None  # a link: stat it anew
    assert confined_status(str(pool), str(pool / "absent.img")) is None
    with pytest.raises(VirtError) as out:
        confined_status(str(pool), str(pool / "out"))
    assert out.value.code is ErrorCode.ACCESS_DENIED


def test_scan_lists_links_skips_control_names_fifos_and_dangling_links(tmp_path: Path) -> None:
    (tmp_path / "ok.img").write_bytes(b"\0" * 4096)
    (tmp_path / "bad\nname").write_bytes(b"")
    os.symlink("/etc/hostname", tmp_path / "link-out")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    (tmp_path / "sub").mkdir()
    vols = {v.name: v for v in scan_folder(str(tmp_path), {})}
    # virsh lists a link under its own path, wherever it points
    assert sorted(vols) == ["link-out", "ok.img", "sub"]
    assert vols["link-out"].key == str(tmp_path / "link-out")
    assert vols["ok.img"].capacity == 4096 and vols["ok.img"].key == str(tmp_path / "ok.img")
    assert vols["sub"].type.value == "dir" and vols["sub"].target.format == "dir"
