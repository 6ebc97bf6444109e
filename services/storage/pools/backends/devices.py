"""What is on a block device before a build writes to it (libvirt's
virStorageBackendDeviceIsEmpty and its parted label check), so that a build
without ``--overwrite`` never destroys data."""

from __future__ import annotations

from services.storage.pools.runner import CommandRunner, find_tool
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE


async def require_empty(runner: CommandRunner, device: str, fmt: str) -> None:
    """Refuse a device that already holds a file system or signature (blkid probe)."""
    if find_tool("blkid") is None:
        raise VirtError(
            ErrorCode.OPERATION_INVALID,
            f"Unable to probe '{device}' for existing data, forced overwrite is necessary",
            _D,
        )
    code, out = await runner.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", device], ok_codes=(0, 2)
    )
    found = out.strip()
    if code == 2 or not found:
        return
    if found == fmt:
        raise VirtError(
            ErrorCode.STORAGE_POOL_BUILT, f"Device '{device}' already formatted using '{fmt}'", _D
        )
    raise VirtError(
        ErrorCode.STORAGE_POOL_BUILT,
        f"Format of device '{device}' does not match the expected format '{fmt}', "
        "forced overwrite is necessary",
        _D,
    )


async def require_no_label(runner: CommandRunner, device: str, fmt: str) -> None:
    """virStorageBackendPARTEDValidLabel for writing: only an unlabelled disk is labelled."""
    code, out = await runner.run(["parted", device, "print", "--script"], ok_codes=(0, 1))
    if code != 0:
        return  # parted finds no label it knows ("unrecognised disk label"): free to write
    label = ""
    for line in out.splitlines():
        if line.startswith("Partition Table: "):
            label = line.removeprefix("Partition Table: ").strip()
    if label == "msdos":
        label = "dos"
    if label == fmt:
        raise VirtError(
            ErrorCode.OPERATION_INVALID, f"Disk label already formatted using '{fmt}'", _D
        )
    raise VirtError(
        ErrorCode.OPERATION_FAILED,
        "Known, but different label format present, requires build --overwrite",
        _D,
    )
