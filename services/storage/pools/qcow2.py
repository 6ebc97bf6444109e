"""The qcow2 image libvirt's most common volume command makes, written without
running qemu-img: ``qemu-img create -f qcow2 -o compat=0.10 PATH SIZEK``.

That command (a qcow2 volume with no option in its XML: libvirt 9.0.0 adds
``compat=0.10``) writes a fixed layout that depends on the size only: the
version 2 header in cluster 0, a one-cluster refcount table in cluster 1
pointing at the refcount block in cluster 2, and from cluster 3 on an L1
table of zeros with one entry per 512 MiB (nothing for size 0); every
cluster of metadata has refcount 1.  qemu-img spends ~5 ms of CPU starting
up to write those ~200 KiB; the service writes the same bytes in a few
microseconds, then syncs them as qemu-img does (fdatasync).

It is only used once the tool itself has been seen to agree: the first such
volume each pool backend of a process creates is made by qemu-img and read back, and only when
its bytes are this module's for its size are later ones written here
(``Qcow2Writer``).  Any other command line (a compat level, a cluster size,
features, a backing store, encryption, preallocation, nocow) runs qemu-img,
and so does a write that fails here (so that the error is the tool's).
``tests/unit/test_storage_qcow2.py`` compares the bytes and the allocation
with the installed qemu-img's over sizes that cover every branch.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Sequence

log = logging.getLogger(__name__)

CLUSTER = 65536
#: L1 entries per 512 MiB: a cluster of 8-byte L2 entries, each one cluster.
_BYTES_PER_L1_ENTRY = CLUSTER * (CLUSTER // 8)
#: Largest size written here (1 PiB: a 16 MiB L1 table, 256 clusters, well inside
#: the first refcount block's 32768); larger ones go to qemu-img.
MAX_CAPACITY = 1 << 50
_SIZE = re.compile(r"(0|[1-9][0-9]{0,15})K")
_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")


def default_capacity(argv: Sequence[str], tool: str) -> int | None:
    """The size in bytes when ``argv`` is exactly ``tool create -f qcow2 -o
    compat=0.10 PATH <N>K`` (and within ``MAX_CAPACITY``), else None."""
    if len(argv) != 8 or list(argv[:6]) != [tool, "create", "-f", "qcow2", "-o", "compat=0.10"]:
        return None
    found = _SIZE.fullmatch(argv[7])
    if found is None:
        return None
    size = int(found.group(1)) * 1024
    return size if size <= MAX_CAPACITY else None


_ZERO = memoryview(bytes(CLUSTER))


def _pieces(capacity: int) -> list[bytes | memoryview]:
    """The image for ``capacity`` bytes, in order, as pieces that are mostly
    views of one cluster of zeros (nothing is copied to write them)."""
    entries = -(-capacity // _BYTES_PER_L1_ENTRY)
    l1_bytes = entries * 8
    l1_clusters = -(-l1_bytes // CLUSTER)
    header = _HEADER.pack(
        b"QFI\xfb",
        2,  # version
        0,  # backing file offset
        0,  # backing file name length
        16,  # cluster bits
        capacity,
        0,  # no encryption
        entries,  # L1 size
        3 * CLUSTER if entries else 0,  # L1 offset
        CLUSTER,  # refcount table offset
        1,  # refcount table clusters
        0,  # snapshots
        0,  # snapshot table offset
    )
    table = struct.pack(">Q", 2 * CLUSTER)
    refcounts = struct.pack(">H", 1) * (3 + l1_clusters)
    pieces: list[bytes | memoryview] = [
        header,
        _ZERO[len(header) :],
        table,
        _ZERO[len(table) :],
        refcounts,
        _ZERO[len(refcounts) :],
    ]
    pieces += [_ZERO] * (l1_bytes // CLUSTER)
    if l1_bytes % CLUSTER:
        pieces.append(_ZERO[: l1_bytes % CLUSTER])
    return pieces


def default_image(capacity: int) -> bytes:
    """The bytes of the image ``qemu-img create -f qcow2 -o compat=0.10`` makes
    for ``capacity`` bytes (a multiple of 512)."""
    return b"".join(_pieces(capacity))


def write_image(path: str, capacity: int, mode: int) -> None:
    """Create ``path`` (it must not exist) holding ``default_image(capacity)``
    with ``mode``, synced to disk; nothing is left when it fails.  Blocking."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        for piece in _pieces(capacity):
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)


def same_as_written(path: str, capacity: int) -> bool:
    """Whether the file qemu-img just made at ``path`` is ``default_image(capacity)``.  Blocking."""
    expected = default_image(capacity)
    try:
        with open(path, "rb") as f:
            found = f.read(len(expected) + 1)
    except OSError:
        return False
    return found == expected


class Qcow2Writer:
    """Whether this process writes default qcow2 images itself: unknown until
    qemu-img has made one and it was compared (``learn``)."""

    def __init__(self) -> None:
        self.agrees: bool | None = None

    def learn(self, same: bool, tool: str) -> None:
        if self.agrees is None:
            self.agrees = same
            if same:
                log.info("qcow2 images without options are written without %s from now on", tool)
            else:
                log.warning("%s writes a different default qcow2 image: it makes them all", tool)
