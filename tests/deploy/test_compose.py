"""contrib/compose.yaml (issue 20): valid for the compose tools and consistent with itself, with
ourmail's configuration (contrib/container/ourmail-compose.toml, read by ourmail's own
loader) and with Prometheus's (contrib/monitoring/prometheus.yml, checked by promtool).

The images it names cannot be pulled here (no registry), so nothing is started: the file is
read with PyYAML against the compose specification's essentials, then by podman-compose
itself (``config``), which parses and interpolates it as ``up`` would.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from twistdhelp import Twistd
from twisted.internet import reactor

from ourmail.config import load_settings
from ourmail.filters.registry import build_check
from ourmail.interfaces import FilterEnvironment

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib"
COMPOSE = CONTRIB / "compose.yaml"
# The top-level keys of the compose specification (compose-spec.io, "The Compose file").
TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "configs", "secrets"}
STANDARD_PORTS = {25, 587, 465, 143, 993, 110, 995, 443, 80}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _address(compose: dict[str, Any], service: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(compose["services"][service]["networks"]["mail"]["ipv4_address"])


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume, or a path relative to contrib/)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *_ = spec.split(":")
        out[target] = source
    return out


def test_structure(compose: dict[str, Any]) -> None:
    assert set(compose) <= TOP_LEVEL
    services = compose["services"]
    assert set(services) == {"ourmail", "clamd", "spamd", "prometheus"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", []):
            assert dependency in services
    # Every named volume is declared at the top and used; bind mounts name files that exist.
    declared = set(compose["volumes"])
    used = set()
    for service in services.values():
        for target, source in _mounts(service).items():
            assert target.startswith("/")
            if source.startswith("."):
                assert (CONTRIB / source).exists(), source
            else:
                used.add(source)
    assert used == declared
    assert _mounts(services["ourmail"])["/var/lib/ourmail"] == "ourmail-data"
    # Every fixed address is in the network's subnet, and no two are the same.
    subnet = ipaddress.IPv4Network(compose["networks"]["mail"]["ipam"]["config"][0]["subnet"])
    addresses = [_address(compose, name) for name in services]
    assert all(a in subnet for a in addresses)
    assert len(set(addresses)) == len(addresses)
    # The mail ports are published, each documented by a comment in the file.
    published = {int(p.split(":")[-1]) for p in services["ourmail"]["ports"]}
    assert published == STANDARD_PORTS
    text = COMPOSE.read_text()
    for port in STANDARD_PORTS:
        assert re.search(rf'"{port}:{port}" +# \S', text), port
    # Every build names its file: Docker Compose finds only a Dockerfile without (and some
    # podman-compose versions only that too).
    for name in ("ourmail", "spamd"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file(), name


def test_ourmail_reaches_clamd_spamd_and_prometheus_reaches_it(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    ourmail = services["ourmail"]
    config = _mounts(ourmail)[ourmail["environment"]["OURMAIL_CONFIG"]]
    settings = load_settings(
        data=str(tmp_path), config=str(CONTRIB / config), domains=("example.org",)
    )
    # The two scanners build as the server builds them at start (every option and address
    # accepted; the other checks would start thread pools on the reactor).
    assert {"antivirus", "spam"} <= set(settings.filters.chain)
    environment = FilterEnvironment(None, reactor, "mail.example.org", ("example.org",), tmp_path)
    for name in ("antivirus", "spam"):
        build_check(name, settings.filters.options[name], environment)
    # The scanners' addresses are the services'.
    av = settings.filters.options["antivirus"]["address"]
    assert av == f"{_address(compose, 'clamd')}:3310"
    assert "3310" in services["clamd"]["expose"]
    spam = settings.filters.options["spam"]
    assert (spam["backend"], spam["address"]) == ("spamd", f"{_address(compose, 'spamd')}:783")
    assert "783" in services["spamd"]["expose"]
    spamd_cmd = (CONTRIB / services["spamd"]["build"]["context"] / "Containerfile").read_text()
    assert '"--listen=0.0.0.0:783"' in spamd_cmd
    # Prometheus may read /metrics: its address is in [metrics] networks.
    prometheus = _address(compose, "prometheus")
    assert any(prometheus in ipaddress.ip_network(n) for n in settings.metrics.networks)


def test_prometheus_config(compose: dict[str, Any], tmp_path: Path) -> None:
    prometheus = compose["services"]["prometheus"]
    folder = _mounts(prometheus)["/etc/prometheus"]
    assert (CONTRIB / folder).resolve() == CONTRIB / "monitoring"
    config = yaml.safe_load((CONTRIB / "monitoring" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert (job["scheme"], job["metrics_path"]) == ("https", "/metrics")
    assert job["static_configs"][0]["targets"] == ["ourmail:443"]
    # The alert rules are the monitoring part's (contrib/monitoring/alerts.yml), found beside
    # the config in /etc/prometheus.
    assert config["rule_files"] == ["alerts.yml"]
    if shutil.which("promtool") is None and not os.environ.get("CI"):
        pytest.skip("promtool is not installed (the prometheus package)")
    # promtool needs the rule file to exist: a checkout without the monitoring part's gets an
    # empty one, beside a copy of the config.
    shutil.copy(CONTRIB / "monitoring" / "prometheus.yml", tmp_path)
    rules = CONTRIB / "monitoring" / "alerts.yml"
    if rules.exists():
        shutil.copy(rules, tmp_path)
    else:
        (tmp_path / "alerts.yml").write_text("groups: []\n")
    done = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_podman_compose_reads_it() -> None:
    tool = Path(sys.executable).with_name("podman-compose")
    env = {**os.environ, "MAIL_DOMAIN": "example.test", "MAIL_HOSTNAME": "mail.example.test"}
    done = subprocess.run(
        [str(tool), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    environment = resolved["services"]["ourmail"]["environment"]
    assert environment["OURMAIL_DOMAIN"] == "example.test"
    assert environment["OURMAIL_HOSTNAME"] == "mail.example.test"


@pytest.mark.system
def test_prometheus_scrapes_ourmail_over_https_with_its_self_signed_certificate(
    tmp_path: Path,
) -> None:
    """The shipped scrape job (scheme, path, tls_config) run by the real Prometheus against a
    real server's self-signed certificate, the target moved to the server's loopback port."""
    binary = shutil.which("prometheus")
    if binary is None and not os.environ.get("CI"):
        pytest.skip("prometheus is not installed (the prometheus package)")
    assert binary is not None
    server = Twistd(tmp_path / "data")
    config = yaml.safe_load((CONTRIB / "monitoring" / "prometheus.yml").read_text())
    config.pop("rule_files")  # the rules are the monitoring tests'
    config["global"]["scrape_interval"] = "1s"
    job = config["scrape_configs"][0]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{server.ports['web']}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prometheus = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        target: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets") as r:
                    active = json.load(r)["data"]["activeTargets"]
            except OSError:
                active = []
            if active and active[0]["health"] != "unknown":
                target = active[0]
                break
            time.sleep(0.5)
        assert target.get("health") == "up", target
        assert target["scrapeUrl"] == f"https://127.0.0.1:{server.ports['web']}/metrics"
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        server.stop()
