"""The one interface between the two halves of the storage service.

``services.storage.pools`` (pools and volumes: libvirt's storage driver) and
``services.storage.disks`` (the disk inventory and block jobs) never import
each other; an import-linter contract keeps it so.  Each is handed the
other's side of this interface when it is made (``services.storage.service``
wires them):

* ``Volumes``, kept by the pools half, is what block jobs use of the
  volumes: find one by pool and name or by path, create a copy's
  destination, delete an image a commit removed from a chain.
* ``VolumeUsers``, kept by the disks half, is what the volumes ask of the
  disks: which domain disks use a volume (so that deleting, wiping or
  shrinking it is refused unless forced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.api.storage import VolumeUser


@dataclass(frozen=True)
class Volume:
    """What the disks half knows of a volume."""

    pool: str
    name: str
    path: str | None
    #: libvirt's volume type: ``file``, ``block``, ``dir``, ``network``...
    type: str
    #: the image format (``qcow2``, ``raw``), when the volume has one
    format: str | None


class Volumes(Protocol):
    """The volumes of this host, as block jobs use them.  Every method raises
    ``VirtError`` as the corresponding volume endpoint would."""

    def volume(self, pool: str, name: str) -> Volume:
        """The volume ``name`` of the active pool ``pool``."""
        ...

    def volume_at(self, path: str) -> Volume:
        """The volume of an active pool whose image is at ``path``."""
        ...

    async def create_volume(self, pool: str, xml: str) -> Volume:
        """virStorageVolCreateXML in ``pool``; returns the volume made."""
        ...

    async def delete_volume(self, pool: str, name: str) -> None:
        """virStorageVolDelete, even when a disk uses it (the caller checked)."""
        ...


class VolumeUsers(Protocol):
    """Which domain disks of this host use a volume."""

    def users(self, pool: str, name: str, path: str | None) -> list[VolumeUser]:
        """The disks using the volume ``pool/name`` whose image is at ``path``."""
        ...

    def any_users(self) -> bool:
        """False when no disk uses any volume (``users`` is then empty for all):
        a pool listing asks once instead of once per volume."""
        ...
