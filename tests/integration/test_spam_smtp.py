"""The spam check in SMTP sessions against a real spamd (Debian's SpamAssassin rules): GTUBE
filed or refused per threshold, a clean message not; per-domain and per-user thresholds and
lists (set with `ourmail user spam`, in another process); contacts recorded by submission;
forged X-Spam-* fields removed; a scanner that is down, answers garbage or never answers."""

from __future__ import annotations

import contextlib
import re
import shutil
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, client_tls, dns_zone, running_server
from peers.spamd import GTUBE, Spamd, free_port, private_spamd, spamd  # noqa: F401 (a fixture)
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import globalLogPublisher

from ourmail.config import DNSSettings, FilterSettings

BOB = "bob@example.test"


def message(body: bytes, sender: str = "someone@else.test", extra: bytes = b"") -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: note {uuid.uuid4()}\r\n".encode()
        + f"Date: {formatdate()}\r\nMessage-ID: <{uuid.uuid4()}@else.test>\r\n".encode()
        + extra
        + b"\r\n"
        + body
        + b"\r\n"
    )


SPAM = message(GTUBE)
CLEAN = message(b"Hi Alice,\r\n\r\nthe minutes of the council meeting are ready.\r\n\r\nBob")


@pytest.fixture
def server(tmp_path: Path, spamd: Spamd) -> Iterator[Callable[..., RunningServer]]:  # noqa: F811
    """Start a server whose chain is the spam check against the session's spamd."""
    servers: list[Any] = []

    def start(
        options: Mapping[str, Any] | None = None, spf: bool = False, **settings: Any
    ) -> RunningServer:
        """``spf``: ``spf`` runs before ``spam`` (loopback not skipped), against the test DNS
        server, so that an allow list or a contact can vouch for an SPF-authenticated sender."""
        opts = {"address": spamd.address, **(options or {})}
        chain, more, options_all = ("spam",), {}, {"spam": opts}
        if spf:
            options_all["spf"] = {"skip_networks": []}
            chain, more = (
                ("spf", "spam"),
                {"dns": DNSSettings(servers=(f"127.0.0.1:{dns_zone()[1]}",))},
            )
            zone = dns_zone()[0]
            for domain in ("else.test", "remote.test", "pushy.test", "mail.pushy.test"):
                zone.set_txt(domain, "v=spf1 ip4:127.0.0.0/8 -all")
        filters = FilterSettings(chain=chain, options=options_all, **settings)
        cm = running_server(tmp_path / str(len(servers)), filters=filters, **more)
        servers.append(cm)
        srv = cm.__enter__()
        srv.add_user(BOB)
        return srv

    yield start
    for cm in servers:
        cm.__exit__(None, None, None)


def stored(srv: RunningServer, user: str | None = None, folder: str = "") -> list[bytes]:
    root = srv.server.store.shards.user_dir(user or srv.user) / folder
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((root / sub).glob("*"))]


def send(
    srv: RunningServer,
    content: bytes,
    rcpts: list[str] | None = None,
    sender: str = "someone@else.test",
) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail(sender, rcpts or [srv.user], content)


def head(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[0]


def admin(srv: RunningServer, *args: str) -> str:
    """`ourmail user spam ...` in its own process, on the server's data directory."""
    run = subprocess.run(
        [sys.executable, "-m", "ourmail", "--data", str(srv.data), "user", "spam", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout


@contextlib.contextmanager
def spam_log() -> Iterator[list[str]]:
    """The spam check's log lines."""
    from twisted.logger import formatEvent

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        if text.startswith("spam:"):
            lines.append(text)

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


def test_gtube_goes_to_junk_with_the_scores(server: Callable[..., RunningServer]) -> None:
    srv = server()
    send(srv, SPAM)
    assert stored(srv) == []
    (junk,) = stored(srv, folder=".Junk")
    fields = head(junk)
    # GTUBE scores 1000; the session's shared Bayes database (what other tests taught this
    # spamd) may add or take off a few points.
    status = re.search(rb"\r\nX-Spam-Status: Yes, score=(\d+\.\d) required=5\.0\r\n", fields)
    score = re.search(rb"\r\nX-Spam-Score: (\d+\.\d)\r\n", fields)
    assert status and score and status[1] == score[1] and 990 < float(score[1]) < 1010
    assert b"\r\nX-Spam-Flag: YES\r\n" in fields


def test_gtube_is_refused_above_the_reject_score(server: Callable[..., RunningServer]) -> None:
    srv = server({"reject_score": 15})
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, SPAM)
    assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.1 ")
    assert b"spam" in e.value.smtp_error
    assert stored(srv) == [] and stored(srv, folder=".Junk") == []


def test_a_clean_message_reaches_the_inbox(server: Callable[..., RunningServer]) -> None:
    srv = server({"reject_score": 15})
    send(srv, CLEAN)
    (inbox,) = stored(srv)
    assert b"X-Spam-Status: No, score=" in head(inbox)
    assert b"X-Spam-Flag" not in inbox and stored(srv, folder=".Junk") == []


def test_forged_spam_fields_are_removed(server: Callable[..., RunningServer]) -> None:
    srv = server()
    forged = message(
        b"hello, nothing to see",
        extra=b"X-Spam-Flag: YES\r\nX-Spam-Status: No, score=-100.0\r\n\tfolded=yes\r\n"
        b"x-spam-score: -100\r\nX-Spam-Level: ****\r\nX-Spammy-Other: kept\r\n",
    )
    send(srv, forged)
    (inbox,) = stored(srv)
    fields = head(inbox)
    assert fields.count(b"X-Spam-Status:") == 1 and b"-100" not in fields
    assert b"X-Spam-Flag" not in fields and b"X-Spam-Level" not in fields
    assert b"folded=yes" not in fields and b"X-Spammy-Other: kept" in fields


def test_per_user_thresholds_from_the_admin_command(server: Callable[..., RunningServer]) -> None:
    """alice never refuses and files from 2000; bob keeps the check's 15: GTUBE to both is
    accepted (refused only when every recipient refuses), alice's copy in the inbox, bob's
    (who would refuse) in Junk."""
    srv = server({"reject_score": 15})
    out = admin(srv, "threshold", srv.user, "--junk", "2000", "--reject", "off")
    assert "Junk from 2000; never refuse" in out
    send(srv, SPAM, [srv.user, BOB])
    assert len(stored(srv)) == 1 and stored(srv, folder=".Junk") == []
    assert stored(srv, BOB) == [] and len(stored(srv, BOB, ".Junk")) == 1
    # Alone, bob refuses it.
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, SPAM, [BOB])
    assert e.value.smtp_code == 550


def test_per_domain_thresholds(server: Callable[..., RunningServer]) -> None:
    srv = server({"domains": {"example.test": {"junk_score": 2000, "reject_score": 5000}}})
    send(srv, SPAM)
    (inbox,) = stored(srv)
    # The header still tells the scanner's own verdict (the check's threshold).
    assert b"X-Spam-Flag: YES" in inbox


def test_allow_and_block_lists(server: Callable[..., RunningServer]) -> None:
    srv = server({"reject_score": 15}, spf=True)
    admin(srv, "allow", srv.user, "Friend@Else.Test")
    admin(srv, "block", srv.user, "@pushy.test")
    show = admin(srv, "show", srv.user)
    assert "allow: friend@else.test" in show and "block: @pushy.test" in show
    # Allowed: GTUBE from the friend reaches the inbox, neither refused nor Junk.
    send(srv, message(GTUBE, "friend@else.test"), sender="friend@else.test")
    assert len(stored(srv)) == 1
    # Blocked (a subdomain too): a clean message goes to Junk.
    send(srv, message(b"meeting at noon", "ads@mail.pushy.test"), sender="ads@mail.pushy.test")
    (junk,) = stored(srv, folder=".Junk")
    assert b"X-Spam-Status: No" in junk
    admin(srv, "unlist", srv.user, "@pushy.test")
    send(srv, message(b"meeting at one", "ads@mail.pushy.test"), sender="ads@mail.pushy.test")
    assert len(stored(srv)) == 2


def test_contacts_are_never_junk_by_score(server: Callable[..., RunningServer]) -> None:
    srv = server(spf=True)
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=client_tls()) as s:
        s.login(srv.user, srv.password)
        s.sendmail(srv.user, ["Carol@Remote.Test"], f"From: {srv.user}\r\n\r\nhi\r\n".encode())
    assert "contacts: 1" in admin(srv, "show", srv.user)
    send(srv, message(GTUBE, "carol@remote.test"), sender="carol@remote.test")
    # (The inbox may also hold the queue's report on the message to remote.test.)
    (inbox,) = [m for m in stored(srv) if GTUBE in m]
    assert b"X-Spam-Flag: YES" in inbox and stored(srv, folder=".Junk") == []
    # Someone else, same spam: Junk.
    send(srv, SPAM)
    assert len(stored(srv, folder=".Junk")) == 1


def test_large_messages_are_not_scanned(server: Callable[..., RunningServer]) -> None:
    srv = server({"max_size": 2000, "reject_score": 15})
    send(srv, message(GTUBE + b"\r\n" + b"x" * 3000))
    (inbox,) = stored(srv)
    assert b"X-Spam-Status: Unknown, not scanned (larger than 2000 bytes)" in inbox


def test_a_large_message_on_disk_and_8bit_mail(server: Callable[..., RunningServer]) -> None:
    """A message past the spool's memory (a file) within max_size is read off the reactor and
    scanned; an 8-bit (Latin-1, no MIME) spam is scanned like any other."""
    srv = server({"max_size": 4 * 1024 * 1024, "reject_score": 15})
    filler = b"\r\n".join(b"Minutes of the meeting, item %d: approved." % i for i in range(40000))
    send(srv, message(filler))
    (inbox,) = stored(srv)
    assert len(inbox) > 1024 * 1024 and b"X-Spam-Status: No, score=" in inbox
    latin1 = message("Grüße aus Köln, schöne Größe\r\n".encode("latin-1") + GTUBE)
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, latin1)
    assert e.value.smtp_code == 550


class _Scripted(Protocol):
    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer

    def dataReceived(self, data: bytes) -> None:
        if self.answer is not None and self.transport is not None:
            self.transport.write(self.answer)
            self.transport.loseConnection()
            self.answer = None


@pytest.fixture
def broken() -> Iterator[Callable[[bytes | None], str]]:
    """A loopback 'spamd' answering ``answer`` (None: never answering)."""
    ports: list[Any] = []

    def start(answer: bytes | None) -> str:
        factory = Factory.forProtocol(lambda: _Scripted(answer))
        port = blockingCallFromThread(reactor, reactor.listenTCP, 0, factory, 50, "127.0.0.1")
        ports.append(port)
        return f"127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        blockingCallFromThread(reactor, port.stopListening)


@pytest.mark.parametrize("fault", ["down", "garbage", "silent"])
def test_a_broken_scanner_accepts_unscanned_by_default(
    server: Callable[..., RunningServer], broken: Callable[[bytes | None], str], fault: str
) -> None:
    address = {
        "down": lambda: f"127.0.0.1:{free_port()}",
        "garbage": lambda: broken(b"HTTP/1.0 500 What?\r\n\r\n"),
        "silent": lambda: broken(None),
    }[fault]()
    srv = server({"address": address, "timeout": 1.5, "reject_score": 15})
    started = time.monotonic()
    with spam_log() as lines:
        send(srv, SPAM)
    assert time.monotonic() - started < 5
    (inbox,) = stored(srv)
    assert b"X-Spam-Status: Unknown, spamd unavailable\r\n" in inbox
    assert any("accepted unscanned" in line and "spamd" in line for line in lines), lines


def test_a_broken_scanner_can_mean_try_again_later(
    server: Callable[..., RunningServer], broken: Callable[[bytes | None], str]
) -> None:
    srv = server({"address": broken(None), "timeout": 1.0, "on_error": "tempfail"})
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, SPAM)
    assert e.value.smtp_code == 451 and stored(srv) == []


def test_spamd_stopped_mid_run_and_started_again(tmp_path: Path) -> None:
    """A real spamd stops between two messages of one session and comes back: the message
    in between is delivered unscanned (said in its header and the log), none is lost."""
    own = private_spamd()
    own.start()
    try:
        options = {"address": own.address, "timeout": 5, "reject_score": 15}
        filters = FilterSettings(chain=("spam",), options={"spam": options})
        with running_server(tmp_path / "srv", filters=filters) as srv:
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
                s.sendmail("someone@else.test", [srv.user], CLEAN)
                own.stop()
                with spam_log() as lines:
                    s.sendmail("someone@else.test", [srv.user], SPAM)
                assert any("accepted unscanned" in line for line in lines), lines
                own.start()
                with pytest.raises(smtplib.SMTPDataError) as e:
                    s.sendmail("someone@else.test", [srv.user], message(GTUBE))
                assert e.value.smtp_code == 550
            # (Told apart by content: Maildir names need not sort in delivery order.)
            (first,) = [m for m in stored(srv) if GTUBE not in m]
            (second,) = [m for m in stored(srv) if GTUBE in m]
            assert b"X-Spam-Status: No, score=" in first
            assert b"X-Spam-Status: Unknown, spamd unavailable" in second
    finally:
        own.stop()
        shutil.rmtree(own.work, ignore_errors=True)


def test_an_alias_uses_its_users_settings(server: Callable[..., RunningServer]) -> None:
    """Mail to an alias is judged by its users' lists and thresholds, not the alias's: info@
    leads to alice, who blocks @pushy.test; team@ leads to alice and bob, refused only when
    both would refuse."""
    srv = server({"reject_score": 15})
    for alias, *users in (("info@example.test", srv.user), ("team@example.test", srv.user, BOB)):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ourmail",
                "--data",
                str(srv.data),
                "alias",
                "add",
                alias,
                *users,
            ],
            check=True,
            capture_output=True,
        )
    admin(srv, "block", srv.user, "@pushy.test")
    send(
        srv, message(b"meeting at noon", "ads@pushy.test"), ["info@example.test"], "ads@pushy.test"
    )
    assert stored(srv) == [] and len(stored(srv, folder=".Junk")) == 1
    # alice never refuses, bob (the check's 15) would: accepted, each copy in Junk.
    admin(srv, "threshold", srv.user, "--reject", "off")
    send(srv, SPAM, ["team@example.test"])
    assert len(stored(srv, folder=".Junk")) == 2 and len(stored(srv, BOB, ".Junk")) == 1
    # Both refuse: refused.
    admin(srv, "threshold", srv.user, "--reject", "default")
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, SPAM, ["team@example.test"])
    assert e.value.smtp_code == 550
