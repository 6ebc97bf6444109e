"""Recognising image formats from their headers, on images real qemu-img makes."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from services.storage.pools.files import describe
from services.storage.probe import ImageInfo, probe_file, probe_header
from shared.conf.encryption import EncryptionFormat

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="no qemu-img")


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_unknown_bytes_are_raw() -> None:
    assert probe_header(b"\x01" * 512) == ImageInfo("raw")


def test_iso_descriptor() -> None:
    assert probe_header(b"\0" * 512, b"CD001").format == "iso"


def test_luks_header_counts_payload_offset() -> None:
    header = bytearray(b"LUKS\xba\xbe\x00\x01" + bytes(1016))
    struct.pack_into(">I", header, 104, 4096)
    info = probe_header(bytes(header))
    assert info.encryption is EncryptionFormat.LUKS and info.payload_offset == 4096 * 512


@needs_qemu_img
def test_qcow2_v3_features_and_backing(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on,cluster_size=131072",
             str(base), "3M")  # fmt: skip
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(top))
    info = probe_file(str(base))
    assert (info.format, info.capacity, info.compat) == ("qcow2", 3 << 20, "1.1")
    assert info.cluster_size == 131072 and info.features == ("lazy_refcounts",)
    vol = describe(str(top), "top.qcow2")
    assert vol is not None and vol.capacity == 3 << 20
    assert vol.backing_store is not None
    assert (vol.backing_store.path, vol.backing_store.format) == (str(base), "qcow2")


@needs_qemu_img
def test_qcow2_v2_shows_no_compat(tmp_path: Path) -> None:
    image = tmp_path / "old.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", "compat=0.10", str(image), "1M")
    vol = describe(str(image), "old.qcow2")
    assert vol is not None
    assert vol.target.format == "qcow2" and vol.target.compat is None
    assert vol.target.cluster_size == 0 and vol.target.features is None


@needs_qemu_img
@pytest.mark.parametrize(("fmt", "name"), [("vmdk", "vmdk"), ("vpc", "vpc"), ("vdi", "vdi"),
                                           ("qed", "qed")])  # fmt: skip
def test_other_formats(tmp_path: Path, fmt: str, name: str) -> None:
    image = tmp_path / f"x.{fmt}"
    qemu_img("create", "-f", fmt, str(image), "2M")
    info = probe_file(str(image))
    assert info.format == name
    assert info.capacity is not None and info.capacity >= 2 << 20
