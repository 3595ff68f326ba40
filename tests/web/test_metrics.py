"""``/metrics`` and ``/healthz`` over a real server (docs/metrics.md): the figures move where
mail, logins and the queue really happen, only configured networks may read them, and
nothing in them names a user."""

from __future__ import annotations

import http.client
import json
import os
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, dns_zone, running_server
from cryptography import x509
from metricshelp import scrape, value
from prometheus_client.parser import text_string_to_metric_families
from queuehelp import submit
from storehelp import on_reactor
from twisted.internet.task import Clock
from webhelp import Browser, imap_login

from ourmail.config import ConfigError, MetricsSettings, load_settings
from ourmail.net.health import Health
from ourmail.net.metrics import Metrics
from ourmail.store import shardmove
from ourmail.store.shards import shard_of


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RunningServer]:
    # The queue's clock is ours: a queued message waits, and its age is what we say.
    with running_server(tmp_path, queue_clock=Clock()) as server:
        server.add_user(f"bob@{server.domain}")
        yield server


def test_mail_logins_and_refusals_move_their_counters(srv: RunningServer) -> None:
    before = scrape(srv)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("client.example.net")
        s.mail("sender@example.net")
        assert s.rcpt("nobody@example.test")[0] == 550
        assert s.rcpt("someone@elsewhere.example")[0] == 554
        assert s.rcpt(srv.user)[0] == 250
        assert s.data(b"Subject: counted\r\n\r\nHello\r\n")[0] == 250
    assert imap_login(srv, "wrong password").startswith(b"a NO")
    assert imap_login(srv, srv.password).startswith(b"a OK")
    assert Browser(srv).login(srv.user, "wrong password").status == 401
    after = scrape(srv)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("ourmail_messages_accepted_total", service="smtp") == 1
    assert moved("ourmail_messages_delivered_total", destination="local") == 1
    assert moved("ourmail_messages_refused_total", service="smtp", reason="recipient") == 1
    assert moved("ourmail_messages_refused_total", service="smtp", reason="relay") == 1
    assert moved("ourmail_store_delivery_seconds_count") == 1
    assert moved("ourmail_login_failures_total", service="imap") == 1
    assert moved("ourmail_login_failures_total", service="web") == 1
    assert moved("ourmail_logins_total", service="imap") == 1
    assert moved("ourmail_connections_total", service="smtp") == 1
    assert moved("ourmail_connections_total", service="imaps") == 2
    # The default chain (SPF, DKIM, ARC, DMARC) gave its verdicts on the message.
    assert moved("ourmail_filter_verdicts_total", check="spf", verdict="accept") >= 1
    # The scrape's own connection is open while it is answered.
    assert value(after, "ourmail_connections_open", service="web") >= 1
    assert value(after, "ourmail_build_info", version=__import__("ourmail").__version__) == 1


def test_a_message_sent_from_the_webmail_is_counted_as_accepted(srv: RunningServer) -> None:
    before = value(scrape(srv), "ourmail_messages_accepted_total", service="web")
    web = srv.server.web
    assert web is not None and web.services.submission is not None
    message = f"From: <{srv.user}>\r\nTo: <bob@{srv.domain}>\r\nSubject: x\r\n\r\nHi\r\n"
    result = on_reactor(
        web.services.submission.submit, srv.user, srv.user, [f"bob@{srv.domain}"], message.encode()
    )
    assert result.delivered == (f"bob@{srv.domain}",)
    after = value(scrape(srv), "ourmail_messages_accepted_total", service="web")
    assert after - before == 1


def test_the_queue_gauges_show_a_waiting_message(srv: RunningServer) -> None:
    dns_zone()[0].set_silent("metrics-queue.test")  # no answer: the message waits
    assert value(scrape(srv), "ourmail_queue_messages") == 0
    submit(srv, ["carol@metrics-queue.test"])
    samples = scrape(srv)
    assert value(samples, "ourmail_queue_messages") == 1
    assert value(samples, "ourmail_queue_oldest_age_seconds") == 0
    clock = srv.server.queue.clock
    assert isinstance(clock, Clock)
    on_reactor(clock.advance, 90)
    assert value(scrape(srv), "ourmail_queue_oldest_age_seconds") == 90


def test_certificate_expiry_is_that_of_the_listeners_certificate(srv: RunningServer) -> None:
    pem = (srv.data / "tls" / "cert.pem").read_bytes()
    not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
    left = value(scrape(srv), "ourmail_tls_certificate_expiry_seconds")
    assert abs(left - (not_after - time.time())) < 60
    assert left > 800 * 24 * 3600  # a fresh self-signed certificate: 825 days


def test_no_user_name_or_address_is_in_the_output(srv: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("sender@example.net", [srv.user, "nobody@example.test"], b"Subject: x\r\n\r\n")
    imap_login(srv, "wrong password", user="mallory@example.test")
    text = Browser(srv).get("/metrics").text
    for secret in ("alice", "bob", "nobody", "mallory", "example.test", "example.net", "127.0"):
        assert secret not in text


def test_healthz_is_ok_and_says_which_listener_is_down(srv: RunningServer) -> None:
    browser = Browser(srv)
    response = browser.get("/healthz")
    assert (response.status, response.text) == (200, "ok\n")
    assert response.headers["cache-control"] == "no-store"
    plain = http.client.HTTPConnection("127.0.0.1", srv.port("http"), timeout=30)
    plain.request("GET", "/healthz")
    answer = plain.getresponse()
    assert (answer.status, answer.read()) == (200, b"ok\n")
    plain.request("GET", "/metrics")  # only /healthz over plain HTTP: the rest redirects
    assert plain.getresponse().status == 301
    plain.close()
    assert browser.request("HEAD", "/healthz").status == 200
    assert browser.request("POST", "/metrics", b"").status == 405  # they only read
    on_reactor(srv.server.listeners["pop3"].stopService)
    response = browser.get("/healthz")
    assert (response.status, response.text) == (503, "not listening: pop3\n")


def test_healthz_tells_a_data_folder_that_cannot_be_written(tmp_path: Path) -> None:
    class Up:
        port = object()

    assert Health(tmp_path, {"imap": Up()}).problem() is None
    assert Health(tmp_path / "missing", {"imap": Up()}).problem() == "data folder not writable"


@pytest.mark.parametrize(
    ("blocks", "files", "inodes", "problem"),
    [
        (10, 100, 5, None),
        (0, 100, 5, "data folder full"),
        (10, 100, 0, "data folder full"),
        (10, 0, 0, None),  # btrfs: no inode table, 0 of 0 inodes free
    ],
)
def test_healthz_tells_a_full_data_folder(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    blocks: int,
    files: int,
    inodes: int,
    problem: str | None,
) -> None:
    class Space:
        f_bavail, f_files, f_favail = blocks, files, inodes

    monkeypatch.setattr(os, "statvfs", lambda path: Space())
    assert Health(tmp_path, {}).problem() == problem


def test_only_configured_networks_may_read_them(tmp_path: Path) -> None:
    networks = MetricsSettings(networks=("127.0.0.2/32",))
    with running_server(tmp_path, metrics=networks) as srv:
        for path in ("/metrics", "/healthz"):
            refused = Browser(srv).get(path)  # from 127.0.0.1
            assert (refused.status, refused.text) == (403, "forbidden\n")
            assert Browser(srv, "127.0.0.2").get(path).status == 200
        # A header cannot make a client something it is not.
        faked = Browser(srv).request("GET", "/metrics", headers={"X-Forwarded-For": "127.0.0.2"})
        assert faked.status == 403
        plain = http.client.HTTPConnection("127.0.0.1", srv.port("http"), timeout=30)
        plain.request("GET", "/healthz")
        assert plain.getresponse().status == 403
        plain.close()
        assert value(scrape(srv, "127.0.0.2"), "ourmail_connections_refused_total") == 0


def test_each_metrics_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.login("imap", False)
    assert b'ourmail_login_failures_total{service="imap"} 1.0' in one.exposition()
    assert b"ourmail_login_failures_total{" not in two.exposition()
    one.refused("smtp", "someone@example.test")  # not a reason: counted as "other"
    assert b'reason="other"' in one.exposition() and b"someone" not in one.exposition()


def test_deliveries_of_each_destination_are_at_zero_from_the_start() -> None:
    # OurmailDeliveriesDeferred divides by the remote rate: a series that appeared only at
    # the first remote delivery left it silent while every remote delivery failed.
    text = Metrics().exposition()
    assert b'ourmail_messages_delivered_total{destination="remote"} 0.0' in text
    assert b'ourmail_messages_delivered_total{destination="local"} 0.0' in text


def test_the_workers_snapshots_are_added_to_the_main_process_figures(tmp_path: Path) -> None:
    main, worker = Metrics(), Metrics()
    for m in (main, worker):
        m.accepted("smtp")
        m.refused("smtp", "relay")
        m.stored(m.clock() - 0.003)
    worker.verdict("spf", "reject")
    worker.write_snapshot(tmp_path / "mx-1.prom")
    main.watch_workers(tmp_path)
    text = main.exposition().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # one of each name
    assert len(families) == text.count("# TYPE ")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("ourmail_messages_accepted_total", (("service", "smtp"),))] == 2
    assert (
        samples[("ourmail_messages_refused_total", (("reason", "relay"), ("service", "smtp")))] == 2
    )
    assert (
        samples[("ourmail_filter_verdicts_total", (("check", "spf"), ("verdict", "reject")))] == 1
    )
    assert samples[("ourmail_store_delivery_seconds_bucket", (("le", "0.005"),))] == 2
    assert samples[("ourmail_store_delivery_seconds_count", ())] == 2
    # The worker's own process figures are not added to the main process's.
    snapshot = worker.snapshot().decode()
    assert "ourmail_messages_accepted_total" in snapshot
    assert "ourmail_process_" not in snapshot and "ourmail_connections" not in snapshot


def test_a_network_that_is_not_one_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "ourmail.toml"
    config.write_text('[metrics]\nnetworks = ["127.0.0.1/8"]\n')  # host bits set
    with pytest.raises(ConfigError, match=r"metrics\.networks"):
        load_settings(data=str(tmp_path), config=str(config))
    config.write_text('[metrics]\nnetworks = ["::ffff:10.1.0.0/112"]\n')  # never matches
    with pytest.raises(ConfigError, match=r"metrics\.networks.*IPv4-mapped"):
        load_settings(data=str(tmp_path), config=str(config))
    config.write_text("[metrics]\nnetworks = [10]\n")  # a number: ipaddress reads 0.0.0.10
    with pytest.raises(ConfigError, match=r"metrics\.networks.*10 is not a network"):
        load_settings(data=str(tmp_path), config=str(config))
    config.write_text('[metrics]\nnetworks = ["10.1.0.0/16", "fd00::/8"]\n')
    settings = load_settings(data=str(tmp_path), config=str(config))
    assert settings.metrics.networks == ("10.1.0.0/16", "fd00::/8")
    defaults = load_settings(data=str(tmp_path / "other")).metrics
    assert defaults.networks == ("127.0.0.0/8", "::1/128")


def _accepted_total(m: Metrics) -> float:
    text = m.exposition().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["ourmail_messages_accepted"].samples
    return sample.value


def test_a_restarted_worker_never_makes_the_sums_go_down(tmp_path: Path) -> None:
    """A worker started again counts from 0 in the same ``mx-N.prom``: the main process keeps
    what its earlier runs counted, so Prometheus sees no counter reset."""
    main = Metrics()
    main.watch_workers(tmp_path)
    for _ in range(7):
        main.accepted("smtp")
    first = Metrics()
    for _ in range(3):
        first.accepted("smtp")
    first.write_snapshot(tmp_path / "mx-1.prom")
    assert _accepted_total(main) == 10
    first.accepted("smtp")  # counted after the last scrape, in the run's last snapshot
    first.write_snapshot(tmp_path / "mx-1.prom")
    main.worker_ended()  # the main process reads it when the worker ends
    second = Metrics()  # the same worker, started again: zeros at once
    second.write_snapshot(tmp_path / "mx-1.prom")
    assert _accepted_total(main) == 11
    for _ in range(5):  # more than the first run counted, before the next scrape
        second.accepted("smtp")
    second.write_snapshot(tmp_path / "mx-1.prom")
    assert _accepted_total(main) == 16
    (tmp_path / "mx-1.prom").unlink()  # a snapshot gone: its counts stay
    assert _accepted_total(main) == 16
    third = Metrics()
    third.write_snapshot(tmp_path / "mx-1.prom")
    assert _accepted_total(main) == 16


def test_lmtp_counts_a_message_no_recipient_got_as_refused(tmp_path: Path) -> None:
    """As SMTP does: a message whose every delivery failed is refused (``other``)."""
    listen = {"lmtp": "tcp:0:interface=127.0.0.1"}
    with running_server(tmp_path, listen=listen) as srv:
        # The user's shard is "being moved": the delivery fails for now.
        marker = srv.data / shardmove.MARKER
        marker.write_text(json.dumps({"pid": os.getpid(), "shards": [shard_of(srv.user)]}))
        lmtp = smtplib.LMTP("127.0.0.1", srv.port("lmtp"))
        with lmtp as s, pytest.raises(smtplib.SMTPDataError) as failed:
            s.sendmail("x@else.test", [srv.user], b"Subject: hi\r\n\r\nhi\r\n")
        assert failed.value.smtp_code == 451
        samples = scrape(srv)
    assert value(samples, "ourmail_messages_refused_total", service="lmtp", reason="other") == 1
    assert value(samples, "ourmail_messages_accepted_total", service="lmtp") == 0
