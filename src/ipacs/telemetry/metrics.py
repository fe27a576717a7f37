"""Prometheus metrics. With several server processes, prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `ipacs serve`) sums them."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

HTTP_REQUESTS = Counter("ipacs_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "ipacs_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DICOM_INSTANCES = Counter(
    "ipacs_dicom_instances_received_total", "DICOM instances ingested", ["source", "result"]
)
INGEST_FAILURES = Counter("ipacs_dicom_ingest_failures_total", "DICOM files refused or failed", ["source"])
ACTIVE_SESSIONS = Gauge("ipacs_active_sessions", "Login sessions not yet expired", multiprocess_mode="max")


def render() -> tuple[bytes, str]:
    """The metrics page, merged across processes when running several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
