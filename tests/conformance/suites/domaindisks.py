"""domaindisks: the <disk> elements of QEMU domain XML, parsed and formatted one by one."""

from __future__ import annotations

import re

from shared.conf.disk import format_disk
from tests.conformance.qemu.domain import parse_domain_disks
from tests.conformance.qemu.pci_devices import QemuFeatures
from tests.conformance.runner import Case, Outcome, Suite, expect_error, first_difference

_DISK_START = re.compile(r"^(\s*)<disk\b")


def expected_disks(text: str) -> list[str]:
    """The <disk>...</disk> blocks of a domain document, common indentation removed."""
    lines = text.splitlines()
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        match = _DISK_START.match(lines[i])
        if match is None:
            i += 1
            continue
        indent = match.group(1)
        end = i
        if not lines[i].rstrip().endswith("/>"):
            while lines[end] != f"{indent}</disk>":
                end += 1
        blocks.append("".join(line[len(indent) :] + "\n" for line in lines[i : end + 1]))
        i = end + 1
    return blocks


def _features(case: Case) -> QemuFeatures:
    # a case without a capability set runs on libvirt's minimal test QEMU
    caps = case.get("caps")
    if caps is None:
        return QemuFeatures.from_flags(case.get("qemu_caps") or [])
    return QemuFeatures.for_caps(caps)


def produce_disks(suite: Suite, case: Case) -> list[str]:
    """virtbus's formatting of each <disk> of the case's input domain, in order."""
    active = case.get("form") == "active"
    text = suite.read(case["input"])
    disks = parse_domain_disks(text, active=active, features=_features(case))
    return [format_disk(d, active=active) for d in disks]


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        text = suite.read(case["input"])
        active = case.get("form") == "active"
        features = _features(case)
        return expect_error(lambda: parse_domain_disks(text, active=active, features=features))
    produced = produce_disks(suite, case)
    expected = expected_disks(suite.read(case["expected"]))
    if len(produced) != len(expected):
        return Outcome(False, f"{len(produced)} disks formatted, {len(expected)} expected")
    for number, (got, want) in enumerate(zip(produced, expected, strict=True), start=1):
        if got != want:
            return Outcome(False, f"disk {number}: {first_difference(got, want)}")
    return Outcome(True)
