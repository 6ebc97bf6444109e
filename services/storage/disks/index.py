"""The disk inventory of this host as the storage service holds it: each domain's
``<disk>`` elements (as its agent published them), which volume paths they use,
and the look-ups block jobs need (a disk by target or path, a layer of its
chain as virsh names one).  Pure: no I/O; ``DiskStore`` persists it.

A disk uses every image of its chain (the source and each ``<backingStore>``)
and, while a copy or active commit runs, the ``<mirror>`` destination and its
chain.  Volumes are matched to those images by path: a pool volume's
``target.path`` against a file/block/dir source's path, or by pool and name
for a ``type='volume'`` source.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from shared.api.blockjob import DiskInventory
from shared.api.storage import VolumeUser
from shared.conf.disk import parse_disk
from shared.conf.disk_model import DiskDef
from shared.conf.disk_source import StorageSource, StorageType
from shared.conf.storage_pool_util import sanitize_path
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

log = logging.getLogger(__name__)

#: Roles of an image in a disk's use, in the order messages list them.
SOURCE, BACKING, MIRROR, JOB = "source", "backing", "mirror", "job"


def no_domain(name: str) -> VirtError:
    """libvirt's VIR_ERR_NO_DOMAIN, as virsh prints it."""
    return VirtError(
        ErrorCode.NO_DOMAIN, f"no domain with matching name '{name}'", ErrorDomain.QEMU
    )


def no_disk(name: str) -> VirtError:
    """What libvirt's QEMU driver says of a disk the domain does not have."""
    return VirtError(ErrorCode.INVALID_ARG, f"disk '{name}' not found in domain", ErrorDomain.QEMU)


@dataclass(frozen=True)
class Image:
    """One image a disk uses: its path (file/block/dir) or pool volume, and why."""

    role: str
    index: int | None
    path: str | None = None
    pool: str | None = None
    volume: str | None = None


def _image(role: str, src: StorageSource) -> Image | None:
    if src.type is StorageType.VOLUME and src.pool is not None:
        return Image(role, src.index, pool=src.pool.pool, volume=src.pool.volume)
    if src.is_local and src.path:
        return Image(role, src.index, path=sanitize_path(src.path))
    return None


def disk_images(disk: DiskDef) -> list[Image]:
    """Every image ``disk`` uses: its chain top first, then its mirror's chain."""
    images: list[Image] = []
    for depth, src in enumerate(disk.source.chain()):
        found = _image(SOURCE if depth == 0 else BACKING, src)
        if found is not None:
            images.append(found)
    if disk.mirror is not None:
        for src in disk.mirror.source.chain():
            found = _image(MIRROR, src)
            if found is not None:
                images.append(found)
    return images


@dataclass
class DomainDisks:
    """One domain's inventory: what its agent published and the disks parsed."""

    inventory: DiskInventory
    disks: list[DiskDef] = field(default_factory=list)
    #: the published text of each parsed disk, beside ``disks``
    texts: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, inventory: DiskInventory) -> DomainDisks:
        """Parse each published ``<disk>``; one the parser refuses is left out (and
        logged) rather than hiding the others."""
        disks, texts = [], []
        for xml in inventory.disks:
            try:
                disks.append(parse_disk(xml, active=True))
            except VirtError as err:
                log.warning(
                    "inventory disk not understood",
                    extra={"domain": inventory.domain, "error": str(err)},
                )
                continue
            texts.append(xml)
        return cls(inventory, disks, texts)

    @property
    def name(self) -> str:
        return self.inventory.domain

    def disk(self, name: str) -> tuple[int, DiskDef]:
        """The disk named by its target (``vda``) or its source's path, as
        virDomainDiskByName finds one, with its position; ``no_disk`` otherwise."""
        clean = sanitize_path(name) if name.startswith("/") else None
        for position, disk in enumerate(self.disks):
            if disk.target.dev == name:
                return position, disk
        for position, disk in enumerate(self.disks):
            path = disk.source.path
            if clean is not None and disk.source.is_local and path and sanitize_path(path) == clean:
                return position, disk
        raise no_disk(name)

    def disk_xml(self, name: str) -> tuple[str, str]:
        """The target and the published XML of the disk named ``name``."""
        position, disk = self.disk(name)
        return disk.target.dev or name, self.texts[position]


class DiskIndex:
    """Every domain of this host, and the volume users derived from them."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.domains: dict[str, DomainDisks] = {}
        self._by_path: dict[str, list[VolumeUser]] = {}
        self._by_volume: dict[tuple[str, str], list[VolumeUser]] = {}

    def get(self, name: str) -> DomainDisks:
        found = self.domains.get(name)
        if found is None:
            raise no_domain(name)
        return found

    def generation(self, name: str) -> int:
        found = self.domains.get(name)
        return found.inventory.generation if found is not None else 0

    def put(self, inventory: DiskInventory) -> DomainDisks:
        entry = DomainDisks.parse(inventory)
        self.domains[inventory.domain] = entry
        self._reindex()
        return entry

    def remove(self, name: str) -> None:
        if self.domains.pop(name, None) is not None:
            self._reindex()

    def _reindex(self) -> None:
        by_path: dict[str, list[VolumeUser]] = {}
        by_volume: dict[tuple[str, str], list[VolumeUser]] = {}
        for entry in self.domains.values():
            for disk in entry.disks:
                target = disk.target.dev or ""
                for image in disk_images(disk):
                    user = VolumeUser(
                        host=self.host,
                        domain=entry.name,
                        disk=target,
                        role=image.role,
                        index=image.index,
                    )
                    if image.path is not None:
                        by_path.setdefault(image.path, []).append(user)
                    elif image.pool is not None and image.volume is not None:
                        by_volume.setdefault((image.pool, image.volume), []).append(user)
        self._by_path, self._by_volume = by_path, by_volume

    def any_users(self) -> bool:
        """Whether any disk of the inventory uses an image."""
        return bool(self._by_path or self._by_volume)

    def users(
        self, path: str | None, pool: str | None = None, name: str | None = None
    ) -> list[VolumeUser]:
        """The disks that use the image at ``path`` (or pool volume ``pool/name``)."""
        found: list[VolumeUser] = []
        if path and self._by_path:
            found += self._by_path.get(sanitize_path(path), [])
        if pool is not None and name is not None and self._by_volume:
            found += self._by_volume.get((pool, name), [])
        return found

    def __iter__(self) -> Iterator[DomainDisks]:
        return iter(sorted(self.domains.values(), key=lambda d: d.name))


# --- layers of a chain, as virsh names them --------------------------------------------------


def layer_position(disk: DiskDef, spec: str) -> int:
    """Position in the disk's chain (0: the active layer) of the layer named by a
    path, ``vda[N]`` or ``N`` (N: a layer's ``index=``); libvirt's
    virStorageSourceChainLookup error otherwise."""
    chain = disk.source.chain()
    target = disk.target.dev or ""
    text = spec
    if target and text.startswith(f"{target}[") and text.endswith("]"):
        text = text[len(target) + 1 : -1]
    for position, layer in enumerate(chain):
        if text.isdigit() and layer.index == int(text):
            return position
        if not text.isdigit() and layer.path and sanitize_path(layer.path) == sanitize_path(spec):
            return position
    raise VirtError(
        ErrorCode.INVALID_ARG,
        f"could not find image '{spec}' in chain for '{target}'",
        ErrorDomain.STORAGE,
    )


def commit_layers(
    disk: DiskDef, top: str | None, base: str | None, *, shallow: bool
) -> tuple[int, int]:
    """The positions of ``top`` and ``base`` of a commit, as qemuDomainBlockCommit
    chooses them (top: the active layer; base: the bottom, or with shallow the
    layer right below top), with its errors."""
    chain = disk.source.chain()
    target = disk.target.dev or ""
    top_at = 0 if top is None else layer_position(disk, top)
    if top_at + 1 >= len(chain):
        path = chain[top_at].path or target
        raise VirtError(
            ErrorCode.INVALID_ARG,
            f"top '{path}' in chain for '{target}' has no backing file",
            ErrorDomain.STORAGE,
        )
    if base is None:
        base_at = top_at + 1 if shallow else len(chain) - 1
    else:
        base_at = layer_position(disk, base)
    if base_at <= top_at:
        raise VirtError(
            ErrorCode.INVALID_ARG,
            f"could not find base image in chain for '{target}'",
            ErrorDomain.STORAGE,
        )
    return top_at, base_at
