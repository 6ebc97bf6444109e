"""What runs on the bus: the micro services' ``$SRV.INFO`` and ``$SRV.STATS`` replies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import BaseModel, Field

from shared.util.subjects import service_subject


class EndpointStatus(BaseModel):
    name: str
    subject: str
    requests: int = 0
    errors: int = 0
    average_ms: float = 0.0


class ServiceStatus(BaseModel):
    name: str
    version: str
    id: str
    host: str | None = None
    endpoints: list[EndpointStatus] = Field(default_factory=list)


async def _gather(nc: NATS, subject: str, wait: float) -> list[dict[str, Any]]:
    """Every reply to one request published on ``subject`` within ``wait`` seconds."""
    inbox = nc.new_inbox()
    replies: list[dict[str, Any]] = []
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, b"", reply=inbox)
        await nc.flush()
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while (left := end - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            if not msg.data:
                continue  # the server's "no responders" status, when nothing listens
            replies.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return replies


async def services(nc: NATS, wait: float = 0.5) -> list[ServiceStatus]:
    """Every micro service that answered, sorted by name then host."""
    infos, stats = await asyncio.gather(
        _gather(nc, service_subject("INFO"), wait), _gather(nc, service_subject("STATS"), wait)
    )
    stats_by_id = {s["id"]: s for s in stats}
    result = []
    for info in infos:
        ep_stats = {e["name"]: e for e in stats_by_id.get(info["id"], {}).get("endpoints") or []}
        endpoints = []
        for ep in info.get("endpoints") or []:
            # virtbus services count in ``data`` (nats.micro's own numbers miss
            # errors answered with a body and time only the dispatch).
            st = ep_stats.get(ep["name"], {})
            st = st.get("data") or st
            endpoints.append(
                EndpointStatus(
                    name=ep["name"],
                    subject=ep.get("subject", ""),
                    requests=st.get("num_requests", 0),
                    errors=st.get("num_errors", 0),
                    average_ms=st.get("average_processing_time", 0) / 1e6,
                )
            )
        result.append(
            ServiceStatus(
                name=info["name"],
                version=info.get("version", ""),
                id=info["id"],
                host=(info.get("metadata") or {}).get("host"),
                endpoints=endpoints,
            )
        )
    result.sort(key=lambda s: (s.name, s.host or "", s.id))
    return result
