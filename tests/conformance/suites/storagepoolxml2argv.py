"""storagepoolxml2argv: the mount / vgchange command that starts a pool (Linux expectations)."""

from __future__ import annotations

from services.storage.pools.command import render_command
from services.storage.pools.pool_commands import pool_start_command
from shared.conf.storage_pool import parse_storage_pool
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error

# The expected files are libvirt's for this platform; the manifest's default is Linux.
PLATFORM = "linux"


def _command(suite: Suite, case: Case) -> str:
    pool = parse_storage_pool(suite.read(case["input"]))
    return render_command(pool_start_command(pool, platform=PLATFORM))


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        return expect_error(lambda: _command(suite, case))
    expected = case["expected"]
    if case.get("platform_dependent"):
        expected = case["expected_by_platform"][PLATFORM]
    return compare_text(_command(suite, case), suite.read(expected), literal=True)
