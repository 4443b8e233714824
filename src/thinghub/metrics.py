"""Prometheus metrics of one server, at `/metrics` on the HTTP port (prometheus-client).

Theory of operation: the hot paths only bump plain integers they already own (the MQTT
listener's traffic counter, the ingest queue's byte count) or call one observer after each
telemetry commit; everything else is read when Prometheus scrapes, by a collector over
callables the composition root hands in. Each server has a registry of its own (never the
process-global one), so tests can run several.

Who may read them is the `metrics` setting: `off` (404), `on` (anyone who reaches the port)
or `token` (Bearer `metrics_token`, or an admin API token of the operator's `default`
account). The series and their labels are listed in docs/operations.md.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from thinghub.domain.errors import Error, NotFound, Unauthorized
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.faces._http import OrjsonResponse, error_body
from thinghub.http_errors import status_of

if TYPE_CHECKING:
    from thinghub.services.auth import AuthService

__all__ = ["COMMIT_BUCKETS_S", "CONTENT_TYPE", "Metrics", "Sources"]

# The text format's version 0.0.4: every Prometheus (2.x and 3.x) reads it; the series' names
# need none of 1.0.0's UTF-8 escaping.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Commit latency of a telemetry batch: SQLite commits in about a millisecond, PostgreSQL's
# COPY in a few; seconds mean the store is in trouble.
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class Sources:
    """What the collector reads at scrape time; each callable must be cheap and not block."""

    mqtt_connections: Callable[[], Mapping[str, int]] = dict
    mqtt_traffic: Callable[[], Mapping[tuple[str, str], int]] = dict
    http_connections: Callable[[], Mapping[str, int]] = dict
    ingest_queue_bytes: Callable[[], int] = int
    ingest_queue_limit_bytes: int = 0
    live_subscriptions: Callable[[], int] = int
    # requests this node sent over the bus to the node holding a device (0 on one node)
    bus_round_trips: Callable[[], int] = int
    # face -> (kind -> open connections), for faces that count their own (Socket.IO, WS)
    face_connections: dict[str, Callable[[], Mapping[str, int]]] = field(default_factory=dict)


class _Collector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        s = self.sources
        mqtt = GaugeMetricFamily(
            "thinghub_mqtt_connections",
            "Open MQTT connections by dialect (hub, dps; handshake: before TLS is up)",
            labels=["dialect"],
        )
        for dialect, count in sorted(s.mqtt_connections().items()):
            mqtt.add_metric([dialect or "connecting"], count)
        yield mqtt
        messages = CounterMetricFamily(
            "thinghub_mqtt_messages",
            "MQTT PUBLISH packets by dialect and direction (in: from devices, out: to them)",
            labels=["dialect", "direction"],
        )
        connacks = CounterMetricFamily(
            "thinghub_mqtt_connacks",
            "CONNACKs sent by dialect and return code (0 accepted; 1-5 refused)",
            labels=["dialect", "code"],
        )
        for (dialect, what), count in sorted(s.mqtt_traffic().items()):
            if what in ("in", "out"):
                messages.add_metric([dialect, what], count)
            elif what.startswith("connack "):
                connacks.add_metric([dialect, what.removeprefix("connack ")], count)
        yield messages
        yield connacks
        http = GaugeMetricFamily(
            "thinghub_http_connections",
            "Open HTTP connections (WebSockets included) by listener",
            labels=["listener"],
        )
        for listener, count in sorted(s.http_connections().items()):
            http.add_metric([listener], count)
        yield http
        faces = GaugeMetricFamily(
            "thinghub_face_connections",
            "Open client connections a face counts itself, by face and kind",
            labels=["face", "kind"],
        )
        for face, counts in sorted(s.face_connections.items()):
            for kind, count in sorted(counts().items()):
                faces.add_metric([face, kind], count)
        yield faces
        yield GaugeMetricFamily(
            "thinghub_ingest_queue_bytes",
            "Telemetry bytes queued for storage (devices are not read when it is full)",
            value=s.ingest_queue_bytes(),
        )
        yield GaugeMetricFamily(
            "thinghub_ingest_queue_limit_bytes",
            "The ingest queue's bound (ingest_queue_max_bytes)",
            value=s.ingest_queue_limit_bytes,
        )
        yield GaugeMetricFamily(
            "thinghub_live_subscriptions",
            "Open live-event subscriptions on the bus (streams, live channels, caches)",
            value=s.live_subscriptions(),
        )
        yield CounterMetricFamily(
            "thinghub_bus_round_trips",
            "Device calls (methods, desired, C2D, disconnects) this node routed over the bus to "
            "the node holding the device, answered",
            value=s.bus_round_trips(),
        )


class Metrics:
    """The server's metrics: counters bumped as things happen, gauges read at scrape time."""

    def __init__(self, sources: Sources) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
        self.registry = CollectorRegistry(auto_describe=True)
        self.sources = sources
        # The children of http_responses by (listener, face, status): few (the listeners and
        # faces are fixed, statuses are HTTP's).
        self._responses: dict[tuple[str, str, int], Any] = {}
        self.http_responses = Counter(
            "thinghub_http_responses",
            "HTTP responses by listener, face and status (errors: status 400 and up)",
            ["listener", "face", "status"],
            registry=self.registry,
        )
        self.http_errors = Counter(
            "thinghub_http_errors",
            "HTTP error answers by face and error code (NotFound, Unauthorized, InvalidInput...)",
            ["face", "code"],
            registry=self.registry,
        )
        self.telemetry_stored = Counter(
            "thinghub_telemetry_messages",
            "Telemetry messages committed to the store, by how they came (mqtt, http, ...)",
            ["source"],
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "thinghub_telemetry_commit_seconds",
            "Time to commit one batch of telemetry to the store",
            buckets=COMMIT_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_Collector(sources))

    def observe_commit(self, seconds: float, messages: list[TelemetryMessage]) -> None:
        """IngestService.on_commit: one batch's commit time and its messages."""
        self.commit_seconds.observe(seconds)
        by_source: dict[str, int] = {}
        for message in messages:
            by_source[message.source] = by_source.get(message.source, 0) + 1
        for source, count in by_source.items():
            self.telemetry_stored.labels(source).inc(count)

    def observe_series_commit(self, seconds: float, counts: dict[str, int]) -> None:
        """IngestService.on_series_commit: one write's commit time and its messages (how
        many of each source)."""
        self.commit_seconds.observe(seconds)
        for source, count in counts.items():
            self.telemetry_stored.labels(source).inc(count)

    def count_response(self, listener: str, face: str, status: int, error: str | None) -> None:
        key = (listener, face, status)
        counter = self._responses.get(key)
        if counter is None:  # prometheus_client's labels() costs microseconds a request
            counter = self._responses[key] = self.http_responses.labels(listener, face, str(status))
        counter.inc()
        if error is not None:
            self.http_errors.labels(face, error).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_route(
    metrics: Metrics,
    *,
    mode: str,
    token: str | None,
    auth: AuthService,
    operator_account: Callable[[], str | None],
) -> Callable[[Request], object]:
    """The /metrics endpoint for `mode` (the `metrics` setting)."""

    async def endpoint(request: Request) -> Response:
        if mode == "off":
            return _error(NotFound("metrics are off (the metrics setting)"))
        if mode == "token":
            try:
                await _authorize(request, token, auth, operator_account())
            except Error as exc:
                return _error(exc)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return endpoint


async def _authorize(
    request: Request, token: str | None, auth: AuthService, operator_account: str | None
) -> None:
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(
            "metrics need Authorization: Bearer with metrics_token or an admin API token of "
            "the default account",
            field="Authorization",
        )
    if token is not None and hmac.compare_digest(value.strip().encode(), token.encode()):
        return
    principal = await auth.authenticate_bearer(value)
    if principal.account_id != operator_account or principal.role.value != "admin":
        raise Unauthorized(
            "metrics need metrics_token or an admin API token of the default account",
            field="Authorization",
        )


def _error(error: Error) -> Response:
    status = status_of(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return OrjsonResponse(error_body(error), status_code=status, headers=headers)
