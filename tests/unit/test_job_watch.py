"""client.storage_jobs.JobWatch: which inventory a waiting command must see the
storage service hold before it returns (the mirror ready, or gone after the end)."""

from __future__ import annotations

from typing import cast

from client.storage_jobs import BlockJobClient, JobWatch
from shared.api.blockjob import (
    BLOCK_JOB_2,
    INVENTORY,
    DiskInventory,
    JobType,
    Phase,
    job_status,
)
from shared.util.events import CloudEvent, cloud_event

DOMAIN, TARGET, JOB = "vm1", "vda", "job-1"


def _disk(mirror: str = "") -> str:
    return (
        f"<disk type='file' device='disk'><source file='/img/top.qcow2'/>"
        f"<target dev='{TARGET}' bus='virtio'/>{mirror}</disk>"
    )


COPYING = _disk("<mirror type='file' job='copy'><source file='/img/copy.qcow2'/></mirror>")
READY = _disk(
    "<mirror type='file' job='copy' ready='yes'><source file='/img/copy.qcow2'/></mirror>"
)


def _inventory(generation: int, disk: str) -> CloudEvent:
    extra = DiskInventory(host="h", domain=DOMAIN, disks=[disk], generation=generation)
    return cloud_event("i", "agent", "h", "domain", DOMAIN, INVENTORY, extra=extra.model_dump())


def _status(phase: Phase) -> CloudEvent:
    status = job_status(JOB, DOMAIN, TARGET, JobType.COPY, phase)
    return cloud_event("s", "agent", "h", "domain", DOMAIN, BLOCK_JOB_2, extra=status.model_dump())


def _watch(*events: CloudEvent) -> JobWatch:
    return JobWatch(cast(BlockJobClient, None), DOMAIN, list(events))


def test_ready_waits_for_the_inventory_whose_mirror_is_ready() -> None:
    assert _watch(_inventory(1, COPYING)).inventory_when_ready(JOB, TARGET) is None
    # the READY status came, the inventory saying so not yet
    assert (
        _watch(_inventory(1, COPYING), _status(Phase.READY)).inventory_when_ready(JOB, TARGET)
        is None
    )
    # the agent may publish the inventory before or after the status
    for events in (
        (_inventory(1, COPYING), _inventory(2, READY), _status(Phase.READY)),
        (_inventory(1, COPYING), _status(Phase.READY), _inventory(2, READY)),
    ):
        assert _watch(*events).inventory_when_ready(JOB, TARGET) == 2
    assert (
        _watch(_inventory(2, READY), _status(Phase.READY)).inventory_when_ready(JOB, "vdb") is None
    )


def test_the_end_waits_for_the_inventory_after_it_without_a_mirror() -> None:
    watch = _watch(_inventory(1, _disk()), _status(Phase.READY), _inventory(2, READY))
    assert watch.inventory_after_end(JOB, TARGET) is None
    watch.events += [_status(Phase.PIVOTED), _inventory(3, _disk())]
    assert watch.inventory_after_end(JOB, TARGET) == 3
