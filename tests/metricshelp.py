"""Reading ``/metrics`` in tests: every sample, parsed by prometheus_client's own parser."""

from __future__ import annotations

import http.client

from conftest import RunningServer, client_tls
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(srv: RunningServer, source: str = "127.0.0.1", host: str = "127.0.0.1") -> Samples:
    """Every sample of ``srv``'s ``/metrics`` (its web listener on ``host``), asked from the
    loopback address ``source``."""
    conn = http.client.HTTPSConnection(
        host, srv.port("web"), context=client_tls(), timeout=30, source_address=(source, 0)
    )
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    assert response.status == 200, text
    assert response.getheader("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when it is not there yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
