"""Recognising a volume's image format from its first bytes (libvirt's virstoragefileprobe.c).

``probe_header`` is pure: given the start of a file (and the bytes at the ISO
9660 descriptor) it names the format and reads what the header says: virtual
size, backing file and its format, qcow2 compat level, cluster size,
features and encryption.  Anything unrecognised is raw, as libvirt decides.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from shared.conf.encryption import EncryptionFormat

#: How much of a file the probe reads first; more when a backing file name lies beyond.
HEADER_BYTES = 4096
_MAX_HEADER_BYTES = 1 << 20
ISO_OFFSET = 32769

_QCOW_MAGIC = b"QFI\xfb"
_QCOW2_BACKING_FORMAT_EXT = 0xE2792ACA
_QCOW2_COMPAT_LAZY_REFCOUNTS = 1 << 0
_QCOW2_INCOMPAT_EXTENDED_L2 = 1 << 4
_QCOW_CRYPT_AES, _QCOW_CRYPT_LUKS = 1, 2
_LUKS_MAGIC = b"LUKS\xba\xbe"


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says; ``capacity`` None means "the file's size"."""

    format: str = "raw"
    capacity: int | None = None
    backing_path: str | None = None
    backing_format: str | None = None
    compat: str | None = None
    cluster_size: int = 0
    features: tuple[str, ...] | None = None
    encryption: EncryptionFormat | None = None
    #: Bytes before a LUKS payload, which do not count in its capacity.
    payload_offset: int = 0


def _u32be(data: bytes, offset: int) -> int:
    return int(struct.unpack_from(">I", data, offset)[0]) if len(data) >= offset + 4 else 0


def _u64be(data: bytes, offset: int) -> int:
    return int(struct.unpack_from(">Q", data, offset)[0]) if len(data) >= offset + 8 else 0


def _u32le(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0]) if len(data) >= offset + 4 else 0


def _u64le(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0]) if len(data) >= offset + 8 else 0


def _qcow2_backing_format(data: bytes, start: int) -> str | None:
    """The backing format header extension, walking the extension list."""
    offset = start
    while offset + 8 <= len(data):
        kind, length = _u32be(data, offset), _u32be(data, offset + 4)
        if kind == 0:
            return None
        body = data[offset + 8 : offset + 8 + length]
        if kind == _QCOW2_BACKING_FORMAT_EXT:
            return body.split(b"\0", 1)[0].decode("utf-8", "replace") or None
        offset += 8 + ((length + 7) & ~7)
    return None


def _backing_name(data: bytes, offset: int, size: int) -> str | None:
    if not offset or not size or offset + size > len(data):
        return None
    return data[offset : offset + size].decode("utf-8", "replace")


def _qcow(data: bytes) -> ImageInfo:
    version = _u32be(data, 4)
    backing = _backing_name(data, _u64be(data, 8), _u32be(data, 16))
    # The encryption method follows the size: at 36 in version 1, 32 later.
    crypt = _u32be(data, 36) if version == 1 else _u32be(data, 32)
    encryption = None
    if crypt == _QCOW_CRYPT_AES:
        encryption = EncryptionFormat.QCOW
    elif crypt == _QCOW_CRYPT_LUKS:
        encryption = EncryptionFormat.LUKS
    if version == 1:
        return ImageInfo("qcow", _u64be(data, 24), backing, encryption=encryption)
    compatible, incompatible, header_length = 0, 0, 72
    if version >= 3:
        incompatible, compatible = _u64be(data, 72), _u64be(data, 80)
        header_length = _u32be(data, 100) or 104
    features = tuple(
        name
        for name, present in (
            ("lazy_refcounts", compatible & _QCOW2_COMPAT_LAZY_REFCOUNTS),
            ("extended_l2", incompatible & _QCOW2_INCOMPAT_EXTENDED_L2),
        )
        if present
    )
    return ImageInfo(
        format="qcow2",
        capacity=_u64be(data, 24),
        backing_path=backing,
        backing_format=_qcow2_backing_format(data, header_length) if backing else None,
        compat="0.10" if version == 2 else "1.1",
        cluster_size=1 << _u32be(data, 20) if 9 <= _u32be(data, 20) <= 21 else 0,
        features=features if version >= 3 else None,
        encryption=encryption,
    )


def _qed(data: bytes) -> ImageInfo:
    backing = _backing_name(data, _u32le(data, 56), _u32le(data, 60))
    return ImageInfo("qed", _u64le(data, 48), backing)


def _luks(data: bytes) -> ImageInfo:
    # LUKS1 keeps the payload offset in 512-byte sectors at byte 104.
    version = int.from_bytes(data[6:8], "big") if len(data) >= 8 else 0
    offset = _u32be(data, 104) * 512 if version == 1 else 0
    return ImageInfo("raw", encryption=EncryptionFormat.LUKS, payload_offset=offset)


def probe_header(data: bytes, iso_magic: bytes = b"") -> ImageInfo:
    """The format and header facts of an image starting with ``data``."""
    if data[:4] == _QCOW_MAGIC:
        return _qcow(data)
    if data[:4] == b"QED\0":
        return _qed(data)
    if data[:4] == b"KDMV":
        return ImageInfo("vmdk", _u64le(data, 12) * 512)
    if data[:8] == b"conectix":
        return ImageInfo("vpc", _u64be(data, 40))
    if _u32le(data, 64) == 0xBEDA107F:
        return ImageInfo("vdi", _u64le(data, 368))
    if data[:4] == b"OOOM":
        return ImageInfo("cow", _u64be(data, 24))
    if data[:16] == b"WithoutFreeSpace":
        return ImageInfo("ploop", _u64le(data, 36) * 512)
    if data[:21] == b"Bochs Virtual HD Image":
        return ImageInfo("bochs")
    if data[:6] == _LUKS_MAGIC:
        return _luks(data)
    if iso_magic[:5] == b"CD001":
        return ImageInfo("iso")
    return ImageInfo("raw")


def _backing_end(data: bytes) -> int:
    """Where the backing file name a qcow/qcow2/QED header points at ends (0: none)."""
    if data[:4] == _QCOW_MAGIC:
        return _u64be(data, 8) + _u32be(data, 16)
    if data[:4] == b"QED\0":
        return _u32le(data, 56) + _u32le(data, 60)
    return 0


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _open_to_read(path: str) -> int:
    """Open ``path`` for reading without changing its access time where the
    kernel allows it (O_NOATIME: the file's owner, or CAP_FOWNER): looking at
    a volume is not an access of its data, and so a volume read again reads
    the same (``files.reread``)."""
    try:
        return os.open(path, _READ_FLAGS | os.O_NOATIME)
    except PermissionError:
        return os.open(path, _READ_FLAGS)


def probe_file(path: str) -> ImageInfo:
    """``probe_header`` on the file at ``path`` (blocking: in a thread where the
    file system may stall)."""
    fd = _open_to_read(path)
    try:
        data = os.pread(fd, HEADER_BYTES, 0)
        needed = _backing_end(data)
        if len(data) < needed <= _MAX_HEADER_BYTES:
            data = os.pread(fd, needed, 0)
        iso = os.pread(fd, 5, ISO_OFFSET) if len(data) == HEADER_BYTES else b""
    finally:
        os.close(fd)
    return probe_header(data, iso)
