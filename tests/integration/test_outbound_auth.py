"""Outbound DKIM and ARC between two ourmail servers (tests/queuehelp.py's set-up, with a
filter chain on both): submitted mail and bounces leave signed, an alias's forwards leave
ARC-sealed and signed by the forwarder, and the receiving ourmail and Mail::DKIM agree."""

from __future__ import annotations

import contextlib
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

from conftest import RunningServer, dns_zone
from peers.perldkim import needs_perl, verify
from queuehelp import Pair, server_pair, submit, wait_for

from ourmail.config import FilterSettings
from ourmail.secure.dkimkeys import KeyStore


@contextlib.contextmanager
def signing_pair(tmp_path: Path) -> Iterator[Pair]:
    """``ours`` (example.test) with an RSA key for example.test published, ``theirs``
    (remote.test); both run the ``arc`` check at the end of DATA."""
    arc = FilterSettings(chain=("arc",))
    with server_pair(tmp_path, filters=arc, theirs_changes={"filters": arc}) as pair:
        key = KeyStore(pair.ours.data / "dkim").generate("example.test", "e2e", "rsa")
        zone = dns_zone()[0]
        zone.set_txt("e2e._domainkey.example.test", [s.encode() for s in key.txt_strings()])
        yield pair


def raw(srv: RunningServer, address: str) -> list[bytes]:
    """The INBOX of ``address``, as stored."""
    root = srv.server.store.shards.user_dir(address)
    paths = [p for sub in ("new", "cur") if (root / sub).exists() for p in (root / sub).iterdir()]
    return [p.read_bytes() for p in sorted(paths, key=lambda p: p.stat().st_mtime_ns)]


def signatures(message: bytes) -> list[str]:
    head = re.sub(rb"\r\n[ \t]+", b" ", message.split(b"\r\n\r\n", 1)[0]).decode()
    return re.findall(r"(?m)^DKIM-Signature: .*? d=([^;]+);", head)


@needs_perl
def test_submitted_mail_arrives_signed_and_verifies(tmp_path: Path) -> None:
    with signing_pair(tmp_path) as pair:
        assert submit(pair.ours, ["carol@remote.test"]) == {}
        (got,) = wait_for(lambda: raw(pair.theirs, "carol@remote.test"))
        assert signatures(got) == ["example.test"]  # the author's domain: DMARC-aligned
        assert verify(got, dns_zone()[1]) == ["pass", "example.test e2e rsa-sha256 pass"]
        # The queue file was signed once, at enqueue; the receiving chain saw no ARC.
        assert b"arc=none" in got.split(b"\r\n\r\n")[0]


@needs_perl
def test_a_bounce_is_signed_for_the_host_name_domain(tmp_path: Path) -> None:
    with signing_pair(tmp_path) as pair:
        assert submit(pair.ours, ["nobody@remote.test"]) == {}
        (bounce,) = wait_for(lambda: raw(pair.ours, pair.ours.user))
        assert b"multipart/report" in bounce
        assert signatures(bounce) == ["example.test"]
        assert verify(bounce, dns_zone()[1])[0] == "pass"


@needs_perl
def test_forwarded_mail_keeps_a_valid_arc_chain(tmp_path: Path) -> None:
    with signing_pair(tmp_path) as pair:
        pair.ours.server.accounts.set_alias("fwd@example.test", ["carol@remote.test"])
        message = (
            b"From: Dan <dan@hosted-elsewhere.test>\r\nTo: fwd@example.test\r\n"
            b"Subject: via alias\r\nMessage-ID: <fwd@else.test>\r\n\r\nforwarded body\r\n"
        )
        with smtplib.SMTP("127.0.0.1", pair.port) as s:
            s.sendmail("dan@hosted-elsewhere.test", ["fwd@example.test"], message)
        (got,) = wait_for(lambda: raw(pair.theirs, "carol@remote.test"))
        head = got.split(b"\r\n\r\n")[0]
        # theirs: its own arc check passed our set; ours sealed with its arc=none verdict.
        assert head.startswith(b"Received: from mail.example.test ")
        assert b"\r\nAuthentication-Results: mx.remote.test; arc=pass" in head
        assert re.search(rb"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.test; s=e2e;", head)
        assert b"ARC-Authentication-Results: i=1; mail.example.test;" in head
        assert verify(got, dns_zone()[1], arc=True)[0] == "pass"
        # Signed by the forwarder (host name's domain), and only that: the author is elsewhere.
        assert signatures(got) == ["example.test"]
        assert verify(got, dns_zone()[1])[0] == "pass"


@needs_perl
def test_forged_local_authors_are_not_signed_and_own_forwards_are(tmp_path: Path) -> None:
    with signing_pair(tmp_path) as pair:
        pair.ours.server.accounts.set_alias("fwd@example.test", ["carol@remote.test"])
        forged = b"From: boss@example.test\r\nSubject: forged\r\n\r\npay this\r\n"
        with smtplib.SMTP("127.0.0.1", pair.port) as s:
            s.sendmail("x@else.test", ["fwd@example.test"], forged)
        (got,) = wait_for(lambda: raw(pair.theirs, "carol@remote.test"))
        assert signatures(got) == []  # our key would have made it pass DMARC: not signed
        assert b"ARC-Seal: i=1;" in got  # still sealed: the receiver sees what we saw
        # A logged-in user's mail to the same alias is the user's own: author-signed, no seal.
        assert submit(pair.ours, ["fwd@example.test"]) == {}
        got = wait_for(lambda: raw(pair.theirs, "carol@remote.test")[1:])[0]
        assert signatures(got) == ["example.test"] and b"ARC-Seal" not in got
        assert verify(got, dns_zone()[1])[0] == "pass"
