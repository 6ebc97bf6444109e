"""Prometheus metrics of one process, in its own registry.

Names follow ``virtbus_<service>_<what>_<unit>``.  Every process gets the
per-endpoint request counter and latency histogram; services add their own
gauges through ``gauge``/``counter``/``histogram``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class ProcessMetrics:
    """The registry of one process and its request figures."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self._requests = self.counter(
            "requests_total", "Requests handled, by endpoint and outcome", ["endpoint", "outcome"]
        )
        self._latency = self.histogram(
            "request_duration_seconds",
            "Time to handle a request, by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
        )
        self._event_failures = self.counter(
            "event_publish_failures",
            "Attempts to store an event that failed (the ledger's forwarder tries again)",
            ["object"],
        )
        #: (endpoint, outcome) -> its request counter and latency histogram:
        #: ``labels()`` looks them up anew on every call, under a lock.
        self._request_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def _name(self, what: str) -> str:
        return f"virtbus_{self.service}_{what}"

    def counter(self, what: str, doc: str, labels: list[str] | None = None) -> Counter:
        return Counter(self._name(what), doc, labels or [], registry=self.registry)

    def gauge(self, what: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(self._name(what), doc, labels or [], registry=self.registry)

    def histogram(
        self,
        what: str,
        doc: str,
        labels: list[str] | None = None,
        buckets: tuple[float, ...] = _LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(
            self._name(what), doc, labels or [], registry=self.registry, buckets=buckets
        )

    def observe_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        children = self._request_children.get((endpoint, outcome))
        if children is None:
            children = (
                self._requests.labels(endpoint=endpoint, outcome=outcome),
                self._latency.labels(endpoint=endpoint),
            )
            self._request_children[(endpoint, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def event_failed(self, object_kind: str) -> None:
        self._event_failures.labels(object=object_kind).inc()

    def render(self) -> bytes:
        """The text exposition format of every metric in this registry."""
        data: bytes = generate_latest(self.registry)
        return data
