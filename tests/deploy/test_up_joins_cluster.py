"""`virtbus up --nats-url` joins an existing NATS cluster (three servers from
deploy/nats/values.yaml) instead of starting its own, and keeps serving when
the server it reached first goes away."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.cluster import NatsCluster
from tests.deploy.upstack import virtbus_up
from tests.integration.cli import virtbus

pytestmark = pytest.mark.e2e


async def test_up_joins_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The services inherit it: their streams and buckets get a replica per server.
    monkeypatch.setenv("VIRTBUS_STREAM_REPLICAS", "3")
    cluster = NatsCluster(tmp_path / "nats")
    try:
        await cluster.start()
        url = cluster.url_for(0)
        async with virtbus_up(0, tmp_path / "state", join=url) as up:
            assert up.url == url
            status = json.loads((await virtbus(url, "--json", "status")).out)
            assert {"secret", "storage"} <= {s["name"] for s in status}
            # It started no server of its own.
            assert not (tmp_path / "state" / "nats").exists()
            xml = tmp_path / "s.xml"
            xml.write_text(
                "<secret ephemeral='no' private='no'><usage type='ceph'><name>joined</name>"
                "</usage></secret>"
            )
            assert (await virtbus(url, "secret-define", str(xml))).rc == 0
            cluster.kill(0)
            await cluster.wait_jetstream()
            r = await virtbus(url, "secret-list")
            assert r.rc == 0 and "joined" in r.out, r.err
    finally:
        cluster.stop()
