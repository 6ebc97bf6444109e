"""A real Prometheus on loopback scrapes `virtbus up`'s processes with
deploy/prometheus's rules: every target is up, and a request moves a counter,
as Prometheus's HTTP API reports it."""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from shared.util.natsserver import free_port
from tests.deploy.upstack import virtbus_up
from tests.integration.cli import virtbus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "virtbus.rules.yml"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus missing: `make system` installs Debian's prometheus package",
    ),
]

SECRET_XML = (
    "<secret ephemeral='no' private='no'><usage type='volume'>"
    "<volume>/var/lib/img/prom.img</volume></usage></secret>"
)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    async with virtbus_up(free_port(), tmp_path / "state") as up:
        yield up.url, up.http


@pytest.fixture
async def prometheus(tmp_path: Path, stack: tuple[str, dict[str, str]]) -> AsyncIterator[str]:
    _, processes = stack
    folder = tmp_path / "prometheus"
    (folder / "targets").mkdir(parents=True)
    shutil.copy(RULES, folder / "virtbus.rules.yml")
    targets = [
        {"targets": [url.removeprefix("http://")], "labels": {"service": name, "host": "h1"}}
        for name, url in processes.items()
    ]
    (folder / "targets" / "h1.yml").write_text(yaml.safe_dump(targets))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["virtbus.rules.yml"],
        "scrape_configs": [
            {
                "job_name": "virtbus-hosts",
                "file_sd_configs": [{"files": ["targets/*.yml"], "refresh_interval": "1s"}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "prometheus",
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(folder / "log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            while True:
                assert proc.returncode is None, (folder / "log").read_text()
                try:
                    async with http.get(f"{url}/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def _api(http: aiohttp.ClientSession, url: str, **params: str) -> object:
    async with http.get(url, params=params) as r:
        body = await r.json()
        assert body["status"] == "success", body
        return body["data"]


async def _counter(http: aiohttp.ClientSession, prom: str, expr: str) -> float:
    data = await _api(http, f"{prom}/api/v1/query", query=expr)
    assert isinstance(data, dict)
    return sum(float(s["value"][1]) for s in data["result"])


async def _eventually(read: Callable[[], Awaitable[float]], ok: Callable[[float], bool]) -> float:
    """Read until ``ok`` holds (Prometheus sees a change on its next scrape)."""
    async with asyncio.timeout(60):
        while True:
            value = await read()
            if ok(value):
                return value
            await asyncio.sleep(0.5)


async def test_prometheus_scrapes_every_process_and_sees_a_request(
    stack: tuple[str, dict[str, str]], prometheus: str, tmp_path: Path
) -> None:
    nats_url, processes = stack
    assert {"secret", "storage", "agent-qemu"} <= set(processes)
    async with aiohttp.ClientSession() as http:
        # Every target is scraped and up.
        async with asyncio.timeout(60):
            while True:
                data = await _api(http, f"{prometheus}/api/v1/targets", state="active")
                assert isinstance(data, dict)
                active = data["activeTargets"]
                if len(active) == len(processes) and all(t["health"] == "up" for t in active):
                    break
                await asyncio.sleep(0.5)
        seen = sorted((t["labels"]["service"], t["scrapeUrl"], t["health"]) for t in active)
        print("Prometheus targets:")
        for service, url, health in seen:
            print(f"  {service:12} {url:40} {health}")
        assert {s for s, _, _ in seen} == set(processes)

        # The JetStream figures come with every process's metrics.
        figures = 'count(virtbus_jetstream_stream_messages{stream="VIRTBUS_EVENTS"})'
        await _eventually(lambda: _counter(http, prometheus, figures), lambda v: v > 0)

        expr = 'sum(virtbus_secret_requests_total{endpoint="define", outcome="ok"}) or vector(0)'
        before = await _counter(http, prometheus, expr)
        xml = tmp_path / "secret.xml"
        xml.write_text(SECRET_XML)
        r = await virtbus(nats_url, "secret-define", str(xml))
        assert r.rc == 0, r.err
        after = await _eventually(lambda: _counter(http, prometheus, expr), lambda v: v > before)
        assert after == before + 1
        print(f"virtbus_secret_requests_total{{endpoint=define}}: {before:.0f} -> {after:.0f}")

        # The recording rules evaluate on the live series.
        rate = "count(virtbus:requests:rate5m)"
        await _eventually(lambda: _counter(http, prometheus, rate), lambda v: v > 0)
