"""The antivirus check in SMTP sessions, with a real clamd (``tests/peers/clamd.py``): viruses
refused with 554 on the MX, submission and LMTP, clean mail stored with its header, clamd
down, silent or babbling answered by ``on_error``, oversized mail by ``oversize``; a 250
always means stored."""

from __future__ import annotations

import base64
import io
import smtplib
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from clamdhelp import fake_clamd_fixture, stream_ended  # noqa: F401 - a fixture
from conftest import RunningServer, client_tls, running_server
from peers import clamd as peer
from rawclient import RawClient
from storehelp import on_reactor
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher

from ourmail.config import ConfigError, FilterSettings
from ourmail.filters.antivirus import sanitise
from ourmail.filters.registry import build_check
from ourmail.interfaces import FilterEnvironment, MailContext

SIGNATURE = peer.SIGNATURE.encode()


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The antivirus's log lines; and no traceback logged (a failure of the check itself)."""
    lines: list[str] = []
    failures: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        if text.startswith("antivirus: "):
            lines.append(text)
        if "log_failure" in event:
            failures.append(text)

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)
    assert failures == []


@pytest.fixture
def av(tmp_path: Path, logged: list[str]) -> Iterator[Callable[..., RunningServer]]:
    """Start a server whose chain is the antivirus with the given options (by default the
    shared clamd over TCP)."""
    servers = []

    def start(**options: Any) -> RunningServer:
        options.setdefault("address", peer.shared().address)
        filters = FilterSettings(chain=("antivirus",), options={"antivirus": options})
        cm = running_server(tmp_path / str(len(servers)), filters=filters)
        servers.append(cm)
        return cm.__enter__()

    yield start
    for cm in servers:
        cm.__exit__(None, None, None)


def stored(srv: RunningServer) -> list[bytes]:
    root = srv.server.store.shards.user_dir(srv.user)
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((root / sub).glob("*"))]


def send(srv: RunningServer, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("bob@else.test", [srv.user], message)


def refused(srv: RunningServer, message: bytes) -> tuple[int, bytes]:
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, message)
    return e.value.smtp_code, e.value.smtp_error


def message(*attachments: tuple[str, str, bytes], text: str = "see attached") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "bob@else.test", "alice@example.test", "files"
    msg.set_content(text)
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buffer.getvalue()


PLAIN = (
    b"From: bob@else.test\r\nTo: alice@example.test\r\nSubject: test\r\n\r\n" + peer.EICAR + b"\r\n"
)
BASE64 = message(("eicar.com", "application/octet-stream", peer.EICAR))
ZIP = message(("eicar.zip", "application/zip", zipped("eicar.com", peer.EICAR)))
FORWARDED = (
    b"From: bob@else.test\r\nTo: alice@example.test\r\nSubject: Fwd: files\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\nContent-Type: text/plain\r\n\r\nforwarding this\r\n--outer\r\n"
    b"Content-Type: message/rfc822\r\n\r\n" + BASE64 + b"\r\n--outer--\r\n"
)
CLEAN = message(("notes.txt", "text/plain", b"nothing to see here\r\n" * 100))


@pytest.mark.parametrize("virus", [PLAIN, BASE64, ZIP, FORWARDED], ids=lambda v: str(len(v)))
def test_a_virus_is_refused_naming_it(av: Any, logged: list[str], virus: bytes) -> None:
    assert base64.b64encode(peer.EICAR) not in ZIP  # the zip really hides it
    srv = av()
    code, text = refused(srv, virus)
    assert (code, text) == (554, b"5.7.1 Message refused: virus found (" + SIGNATURE + b")")
    assert stored(srv) == []
    assert logged == [
        f"antivirus: {peer.SIGNATURE} found in mail from 127.0.0.1 <bob@else.test>: refused"
    ]


def test_a_virus_sent_with_bdat_is_refused(av: Any) -> None:
    """RFC 3030: the scan runs at the last chunk, split where the virus is."""
    srv = av()
    c = RawClient(srv.port("smtp"))
    c.line()
    c.send(b"EHLO c.test\r\n")
    c.until(b"250 ")
    half = len(PLAIN) // 2 + 10  # inside the EICAR string
    c.send(b"MAIL FROM:<bob@else.test>\r\nRCPT TO:<alice@example.test>\r\n")
    c.send(b"BDAT %d\r\n" % half + PLAIN[:half])
    c.send(b"BDAT %d LAST\r\n" % (len(PLAIN) - half) + PLAIN[half:])
    assert [c.line()[:3] for _ in range(3)] == [b"250", b"250", b"250"]
    assert c.line() == b"554 5.7.1 Message refused: virus found (" + SIGNATURE + b")"
    assert stored(srv) == []


def test_clean_mail_is_stored_with_its_header(av: Any) -> None:
    srv = av()
    send(srv, CLEAN)
    (stored_message,) = stored(srv)
    assert b"\r\nX-Virus-Scanned: clamd on mail.example.test\r\n" in stored_message


def test_submission_and_lmtp_are_scanned_too(av: Any) -> None:
    srv = av(address=peer.shared().socket)  # and over clamd's unix socket
    with smtplib.SMTP("127.0.0.1", srv.port("submission")) as s:
        s.starttls(context=client_tls())
        s.login(srv.user, srv.password)
        s.mail(srv.user)
        s.rcpt(srv.user)
        virus = PLAIN.replace(b"bob@else.test", srv.user.encode())
        code, text = s.data(virus)
        assert code == 554 and SIGNATURE in text
    with smtplib.LMTP("127.0.0.1", srv.port("lmtp")) as lmtp:
        with pytest.raises(smtplib.SMTPDataError) as e:
            lmtp.sendmail("bob@else.test", [srv.user], ZIP)
        assert e.value.smtp_code == 554 and SIGNATURE in e.value.smtp_error
        lmtp.sendmail("bob@else.test", [srv.user], CLEAN)
    (clean,) = stored(srv)
    assert b"X-Virus-Scanned: clamd" in clean


def test_a_clean_20_mb_message_passes(av: Any) -> None:
    srv = av()
    big = message(("big.bin", "application/octet-stream", bytes(range(256)) * (60 * 1024)))
    big += b"x" * (20 * 1024 * 1024 - len(big))  # and a long epilogue
    started = time.monotonic()
    send(srv, big)
    elapsed = time.monotonic() - started
    (stored_message,) = stored(srv)
    assert len(stored_message) > 20 * 1024 * 1024 and b"X-Virus-Scanned: clamd" in stored_message
    assert elapsed < 30


def test_clamd_stopped_mid_run_tempfails(av: Any, logged: list[str]) -> None:
    with peer.clamd() as own:
        srv = av(address=own.address)
        send(srv, CLEAN)
        own.stop()
        code, text = refused(srv, CLEAN)
        assert (code, text) == (451, b"4.7.1 Virus scanner unavailable, try again later")
        assert logged == [
            f"antivirus: clamd at {own.address} unavailable (cannot connect to clamd at "
            f"{own.address}: Connection was refused by other side: 111: Connection refused.) "
            "for mail from 127.0.0.1: 451"
        ]
        own.start()
        send(srv, CLEAN)  # the sender's retry
    assert len(stored(srv)) == 2


def test_clamd_stopped_mid_run_with_on_error_accept(av: Any) -> None:
    with peer.clamd() as own:
        srv = av(address=own.address, on_error="accept")
        send(srv, CLEAN)
        own.stop()
        send(srv, PLAIN)  # the admin chose to take mail unscanned: it says so
    # (Told apart by content: Maildir names do not keep the order of arrival.)
    (first,) = [m for m in stored(srv) if peer.EICAR not in m]
    (second,) = [m for m in stored(srv) if peer.EICAR in m]
    assert b"X-Virus-Scanned: clamd" in first
    assert b"\r\nX-Ourmail-Virus-Scan: not scanned (clamd unavailable)\r\n" in second
    assert b"X-Virus-Scanned" not in second


def test_a_silent_clamd_is_a_time_out(av: Any) -> None:
    with peer.clamd() as own:
        srv = av(address=own.address, timeout=2)
        send(srv, CLEAN)  # a kept session
        own.pause()  # connections are accepted by the kernel, nothing is answered
        started = time.monotonic()
        code, text = refused(srv, CLEAN)
        assert time.monotonic() - started < 3
        assert (code, text) == (451, b"4.7.1 Virus scanner unavailable, try again later")
        srv2 = av(address=own.address, timeout=2, on_error="accept")
        send(srv2, CLEAN)
        own.resume()
    (unscanned,) = stored(srv2)
    assert b"X-Ourmail-Virus-Scan: not scanned (clamd unavailable)" in unscanned


def test_a_garbage_answer_follows_the_policy(av: Any, fake_clamd: Any) -> None:
    address = fake_clamd(lambda f, d: b"1: hello, I am a mail server\0" if stream_ended(f) else b"")
    srv = av(address=address)
    assert refused(srv, CLEAN) == (451, b"4.7.1 Virus scanner unavailable, try again later")
    srv2 = av(address=address, on_error="accept")
    send(srv2, CLEAN)
    assert stored(srv) == [] and len(stored(srv2)) == 1


def test_oversized_mail_follows_the_policy(av: Any) -> None:
    big = message(("big.bin", "application/octet-stream", b"y" * (2 * 1024 * 1024)))
    srv = av(max_size=1024 * 1024)
    assert refused(srv, big) == (552, b"5.3.4 Message too large for the virus scanner")
    srv2 = av(max_size=1024 * 1024, oversize="accept")
    send(srv2, big)
    (unscanned,) = stored(srv2)
    assert b"X-Ourmail-Virus-Scan: not scanned (too large for the scanner)" in unscanned
    assert stored(srv) == []


def test_clamds_own_size_limit_follows_the_policy(av: Any) -> None:
    """clamd's StreamMaxLength below max_size: clamd refuses the stream, same policy."""
    big = message(("big.bin", "application/octet-stream", b"y" * (2 * 1024 * 1024)))
    with peer.clamd(stream_max=1024 * 1024) as small:
        srv = av(address=small.address)
        assert refused(srv, big)[0] == 552
        send(srv, CLEAN)


def nested(depth: int, inner: bytes) -> bytes:
    """``inner`` forwarded as message/rfc822 inside ``depth`` messages."""
    for i in range(depth):
        inner = (
            b"From: bob@else.test\r\nSubject: Fwd %d\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n'
            b"Content-Type: message/rfc822\r\n\r\n%s\r\n--b%d--\r\n" % (i, i, i, inner, i)
        )
    return inner


def test_odd_but_legal_mail(av: Any) -> None:
    """8-bit text passes untouched; a virus nested 10 deep is found; 20 deep is past clamd's
    MaxRecursion (17): clean by default, refused with AlertExceedsMax (docs/filters.md)."""
    srv = av()
    eight_bit = "Grüße, ünïcödé 日本語\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n"
    send(srv, b"From: bob@else.test\r\nSubject: 8-bit\r\n\r\n" + eight_bit)
    assert refused(srv, nested(10, BASE64)) == (
        554,
        b"5.7.1 Message refused: virus found (" + SIGNATURE + b")",
    )
    send(srv, nested(20, BASE64))
    assert [eight_bit in m for m in stored(srv)].count(True) == 1 and len(stored(srv)) == 2
    with peer.clamd(extra="AlertExceedsMax yes\n") as strict:
        srv2 = av(address=strict.address)
        code, text = refused(srv2, nested(20, BASE64))
        assert code == 554 and b"Heuristics.Limits.Exceeded.MaxRecursion" in text


def test_options_are_checked(tmp_path: Path) -> None:
    env = FilterEnvironment(None, reactor, "mx.test", (), tmp_path)
    bad: list[Mapping[str, Any]] = [
        {"colour": "blue"},
        {"address": "clamd.example.test:3310"},
        {"address": 3310},
        {"oversize": "drop"},
        {"max_size": 0},
        {"connections": True},
        {"on_error": "reject"},
    ]
    for options in bad:
        with pytest.raises(ConfigError):
            build_check("antivirus", options, env)


def test_the_check_leaves_notes_and_sanitises_names(tmp_path: Path) -> None:
    env = FilterEnvironment(None, reactor, "mx.test", (), tmp_path)
    check = on_reactor(build_check, "antivirus", {"address": peer.shared().address}, env)
    for content, note in (
        (CLEAN, {"result": "clean"}),
        (PLAIN, {"result": "infected", "signature": peer.SIGNATURE}),
    ):
        context = MailContext("192.0.2.7", content=content)
        on_reactor(check.check, "data", context)
        assert context.notes == {"antivirus": note}
    assert sanitise("Evil Name\r\n550 fake reply") == "Evil_Name_550_fake_reply"
    assert sanitise("A" * 300) == "A" * 97 + "..."
