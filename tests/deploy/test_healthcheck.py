"""contrib/container/healthcheck.py against a real server on this host (the container tests
need root and podman): ``ok`` from ``/healthz``; a server whose ``[metrics] networks`` leaves
out loopback fails it with the reason; no ``listening.json`` (not started yet) fails it."""

from __future__ import annotations

import importlib.util
import signal
import time
from pathlib import Path
from types import ModuleType

import pytest
from twistdhelp import REPO, Twistd

pytestmark = pytest.mark.system


def _healthcheck() -> ModuleType:
    path = REPO / "contrib" / "container" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("healthcheck", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_health_check_passes_fails_and_says_why(tmp_path: Path) -> None:
    check = _healthcheck()
    data = tmp_path / "data"
    data.mkdir()
    assert "no listening.json" in check.probe(data)
    config = data / "ourmail.toml"
    config.write_text('[metrics]\nnetworks = ["192.0.2.0/24"]\n')
    server = Twistd(data)
    try:
        deadline = time.monotonic() + 20  # the ports file follows the listeners
        while "no listening.json" in (refused := check.probe(data)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert refused.startswith("/healthz: 403 forbidden: ")
        assert "keep loopback in [metrics] networks" in refused
        # Loopback back in, read live on SIGHUP (systemctl reload, podman kill -s HUP).
        config.write_text('[metrics]\nnetworks = ["127.0.0.0/8", "::1/128"]\n')
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while (problem := check.probe(data)) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert problem is None
    finally:
        server.stop()
    assert "no listening.json" in check.probe(data)  # removed at the stop
