"""Keeping volumes inside their pool: names that stay one path component, paths
that resolve under the pool's folder, and no symbolic link leading out of it;
and a new volume's backing store among the pools' volumes or under a path the
administrator allows (``check_backing``), so that no host file can be read
back through a volume made over it.

libvirt refuses a '/' in a volume name (so ``../x`` cannot escape) and skips
names with control characters when it scans a pool.  virtbus also refuses
``.``, ``..``, an empty name and NUL, and never follows a symbolic link that
resolves outside the pool, neither when listing nor when opening a volume.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE
#: Longest file name Linux file systems take.
NAME_MAX = 255


def has_control_chars(text: str) -> bool:
    """True when ``text`` holds a character below 0x20 (virStringHasControlChars)."""
    return any(ord(c) < 0x20 for c in text)


def check_volume_name(name: str) -> None:
    """Refuse a volume name that is not exactly one plain path component.

    Raises ``VirtError``: ``VIR_ERR_OPERATION_INVALID`` with libvirt's wording
    for '/', and the same code for the names libvirt lets through to fail later.
    """
    if "/" in name:
        raise VirtError(ErrorCode.OPERATION_INVALID, f"volume name '{name}' cannot contain '/'", _D)
    if name in ("", ".", ".."):
        raise VirtError(ErrorCode.OPERATION_INVALID, f"volume name '{name}' is not allowed", _D)
    if "\0" in name or has_control_chars(name):
        raise VirtError(
            ErrorCode.OPERATION_INVALID,
            f"volume name '{name!r}' cannot contain control characters",
            _D,
        )
    if len(name.encode()) > NAME_MAX:
        raise VirtError(
            ErrorCode.OPERATION_INVALID, f"volume name '{name}' is longer than {NAME_MAX} bytes", _D
        )


def is_inside(root: str | Path, path: str | Path) -> bool:
    """True when ``path``, with every symbolic link resolved, lies under ``root`` (resolved)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def volume_path(root: str, name: str) -> str:
    """The path of volume ``name`` in the pool folder ``root`` (after ``check_volume_name``)."""
    check_volume_name(name)
    return f"{root.rstrip('/') or ''}/{name}"


def confined(root: str, path: str) -> str:
    """``path`` itself when it stays in ``root`` once links are resolved.

    Raises ``VirtError`` (``VIR_ERR_ACCESS_DENIED``) for a path that leads out
    of the pool, such as a volume that is a symbolic link to a file elsewhere.
    """
    confined_status(root, path)
    return path


def confined_status(root: str, path: str) -> os.stat_result | None:
    """``confined``'s check, giving the status the check read of ``path`` when
    that is what a stat of it says (it is no symbolic link), else None, so
    that a caller about to stat the path need not do it again."""
    if "\0" in path:
        raise VirtError(ErrorCode.INVALID_ARG, "path contains a NUL character", _D)
    parent = os.path.dirname(path.rstrip("/"))
    # A volume path is built as root/name: its folder is the pool's, link or not.
    inside = parent == root.rstrip("/") or os.path.realpath(parent) == os.path.realpath(root)
    status = None
    if inside:
        try:
            status = os.lstat(path)
        except OSError:
            status = None
        if status is not None and stat.S_ISLNK(status.st_mode):
            status = None
            inside = is_inside(root, path)
    if not inside:
        raise VirtError(
            ErrorCode.ACCESS_DENIED, f"path '{path}' leads out of pool folder '{root}'", _D
        )
    return status


def check_backing(path: str, volumes: Iterable[str], allowed: Iterable[str]) -> None:
    """Refuse a backing store that is neither one of ``volumes`` (the paths of
    the pools' volumes) nor under a folder of ``allowed``, links resolved.

    Raises ``VirtError`` (``VIR_ERR_OPERATION_DENIED``, libvirt's wording for
    an operation the configuration forbids).
    """
    if "://" in path:
        return  # a network source: nothing of this host's to read
    real = os.path.realpath(path)
    if any(os.path.realpath(vol) == real for vol in volumes):
        return
    if any(is_inside(root, real) for root in allowed if root):
        return
    raise VirtError(
        ErrorCode.OPERATION_DENIED,
        f"backing store '{path}' is neither a volume of a pool nor under a path "
        "allowed by --backing-paths",
        _D,
    )
