"""`virtbus event --since TIME` and `--from-seq N` print the stored events from
that point on (then follow new ones until --timeout)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from shared.util.events import STREAM
from shared.util.natsserver import free_port
from tests.deploy.upstack import virtbus_up
from tests.integration.cli import virtbus

pytestmark = pytest.mark.e2e


async def test_since_and_from_seq_replay_history(tmp_path: Path) -> None:
    async with virtbus_up(free_port(), tmp_path / "state") as up:
        nc = NATS()
        await nc.connect(up.url, inbox_prefix=up.inbox)
        js = nc.jetstream()
        uuids: list[str] = []
        marks: list[tuple[datetime, int]] = []
        try:
            for i in range(3):
                marks.append((datetime.now(UTC), (await js.stream_info(STREAM)).state.last_seq))
                xml = tmp_path / f"s{i}.xml"
                xml.write_text(
                    f"<secret ephemeral='no' private='no'><usage type='ceph'><name>h{i}</name>"
                    "</usage></secret>"
                )
                r = await virtbus(up.url, "secret-define", str(xml))
                assert r.rc == 0, r.err
                uuids.append(r.out.split()[1])
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
        since, _ = marks[1]
        _, seq_before_second = marks[1]

        for option in (
            ["--since", since.isoformat()],
            ["--from-seq", str(seq_before_second + 1)],
        ):
            r = await virtbus(up.url, "event", "--all", "--loop", "--timeout", "2", *option)
            assert r.rc == 0, r.err
            assert uuids[0] not in r.out
            assert f"event 'lifecycle' for secret {uuids[1]}: Defined" in r.out
            assert f"event 'lifecycle' for secret {uuids[2]}: Defined" in r.out
            assert "events received: 2" in r.out

        r = await virtbus(up.url, "event", "--all", "--since", "yesterday")
        assert r.rc == 1 and "invalid time 'yesterday'" in r.err
        r = await virtbus(up.url, "event", "--all", "--from-seq", "0")
        assert r.rc == 1
