"""SPF in a running server: smtplib talks to the MX with the chain ``["spf"]``, the sender
domains' records served by the tests' twisted.names server on loopback; one test per result
class, as the sender and the recipient see it (reply, Authentication-Results, folder)."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, dns_zone, running_server

from ourmail.config import DNSSettings, FilterSettings

HELO = "client.spf-smtp.test"
MSG = b"From: bob@x.test\r\nTo: alice@example.test\r\nSubject: SPF\r\n\r\nHi\r\n"


@pytest.fixture(scope="module", autouse=True)
def records() -> None:
    zone, _ = dns_zone()
    zone.set_txt("pass.spf-smtp.test", "v=spf1 ip4:127.0.0.0/8 -all")
    zone.set_txt("fail.spf-smtp.test", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.set_txt("exp.spf-smtp.test", "v=spf1 -all exp=why.exp.spf-smtp.test")
    zone.set_txt("why.exp.spf-smtp.test", "%{d} sends only from its own servers")
    zone.set_txt("soft.spf-smtp.test", "v=spf1 ~all")
    zone.set_txt("none.spf-smtp.test", "not an SPF record")
    zone.set_txt("loop.spf-smtp.test", "v=spf1 include:loop.spf-smtp.test -all")
    zone.set_txt(
        "many.spf-smtp.test",
        "v=spf1 " + " ".join(f"a:h{n}.spf-smtp.test" for n in range(12)) + " -all",
    )
    for n in range(12):
        zone.set_address(f"h{n}.spf-smtp.test", "192.0.2.1")
    zone.set_silent("slow.spf-smtp.test")
    zone.set_txt("helo.spf-smtp.test", "v=spf1 ip4:127.0.0.1 -all")
    zone.set_txt("badhelo.spf-smtp.test", "v=spf1 -all")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    """Start a server whose chain is ``spf`` with the given options (loopback not skipped)."""
    started = []

    def start(**options: Any) -> RunningServer:
        spf: Mapping[str, Any] = {"skip_networks": [], **options}
        cm = running_server(
            tmp_path / str(len(started)),
            filters=FilterSettings(chain=("spf",), options={"spf": spf}),
            dns=DNSSettings(servers=(f"127.0.0.1:{dns_zone()[1]}",)),
        )
        started.append(cm)
        return cm.__enter__()

    yield start
    for cm in started:
        cm.__exit__(None, None, None)


def stored(srv: RunningServer, folder: str = "") -> list[bytes]:
    root = srv.server.store.shards.user_dir(srv.user) / folder
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((root / sub).glob("*"))]


def send(srv: RunningServer, sender: str, helo: str = HELO) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo(helo)
        s.sendmail(sender, [srv.user], MSG)


def results(message: bytes) -> bytes:
    """Our Authentication-Results field, unfolded (RFC 5322 §2.2.3)."""
    head = message.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    (field,) = [line for line in head.split(b"\r\n") if line.startswith(b"Authentication-Results:")]
    return field


def test_pass(server: Any) -> None:
    srv = server()
    send(srv, "bob@pass.spf-smtp.test")
    (message,) = stored(srv)
    assert results(message) == (
        b"Authentication-Results: mail.example.test; spf=pass smtp.mailfrom=pass.spf-smtp.test;"
        b" spf=none smtp.helo=client.spf-smtp.test"
    )


def test_fail_is_refused_at_mail_with_5_7_23(server: Any) -> None:
    srv = server()
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo(HELO)
        code, text = s.mail("bob@fail.spf-smtp.test")
        assert (code, text) == (
            550,
            b"5.7.23 SPF: fail.spf-smtp.test does not allow 127.0.0.1 to send its mail",
        )
        assert s.mail("bob@exp.spf-smtp.test") == (
            550,
            b"5.7.23 exp.spf-smtp.test sends only from its own servers",
        )
        assert s.rcpt(srv.user)[0] == 503  # no transaction was opened
    assert stored(srv) == []


def test_fail_as_junk(server: Any) -> None:
    srv = server(fail="junk")
    send(srv, "bob@fail.spf-smtp.test")
    assert stored(srv) == []
    (message,) = stored(srv, ".Junk")
    assert b"spf=fail smtp.mailfrom=fail.spf-smtp.test" in results(message)
    assert b"X-Ourmail-Junk: spf: SPF fail for fail.spf-smtp.test from 127.0.0.1" in message


def test_softfail_is_accepted_and_shown(server: Any) -> None:
    srv = server()
    send(srv, "bob@soft.spf-smtp.test")
    (message,) = stored(srv)
    assert b"spf=softfail smtp.mailfrom=soft.spf-smtp.test" in results(message)


def test_none(server: Any) -> None:
    srv = server()
    send(srv, "bob@none.spf-smtp.test")
    send(srv, "bob@nxdomain.spf-smtp.test")
    both = b"".join(results(m) for m in stored(srv))  # Maildir names need not sort by arrival
    assert b"spf=none smtp.mailfrom=none.spf-smtp.test" in both
    assert b"spf=none smtp.mailfrom=nxdomain.spf-smtp.test" in both


def test_temperror_from_a_name_that_never_answers(server: Any) -> None:
    srv = server(dns_timeout=1)
    start = time.monotonic()
    send(srv, "bob@slow.spf-smtp.test")
    assert time.monotonic() - start < 5
    (message,) = stored(srv)
    assert b"spf=temperror smtp.mailfrom=slow.spf-smtp.test" in results(message)
    srv = server(dns_timeout=1, temperror="tempfail")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo(HELO)
        assert s.mail("bob@slow.spf-smtp.test") == (
            451,
            b"4.4.3 SPF: temporary DNS error checking slow.spf-smtp.test, try again later",
        )


def test_permerror_from_a_loop_or_too_many_lookups(server: Any) -> None:
    srv = server()
    send(srv, "bob@loop.spf-smtp.test")
    send(srv, "bob@many.spf-smtp.test")
    both = b"".join(results(m) for m in stored(srv))  # Maildir names need not sort by arrival
    assert b"spf=permerror smtp.mailfrom=loop.spf-smtp.test" in both
    assert b"spf=permerror smtp.mailfrom=many.spf-smtp.test" in both


def test_null_sender_is_judged_by_its_helo(server: Any) -> None:
    srv = server()
    send(srv, "", helo="helo.spf-smtp.test")
    (message,) = stored(srv)
    assert results(message) == (
        b"Authentication-Results: mail.example.test; spf=pass smtp.helo=helo.spf-smtp.test"
    )
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.ehlo("badhelo.spf-smtp.test")
        code, text = s.mail("")
        assert code == 550 and text.startswith(b"5.7.23 SPF: badhelo.spf-smtp.test")


def test_loopback_is_not_checked_by_default(tmp_path: Path) -> None:
    with running_server(
        tmp_path,
        filters=FilterSettings(chain=("spf",)),
        dns=DNSSettings(servers=(f"127.0.0.1:{dns_zone()[1]}",)),
    ) as srv:
        send(srv, "bob@fail.spf-smtp.test")
        (message,) = stored(srv)
        assert b"spf=" not in message
