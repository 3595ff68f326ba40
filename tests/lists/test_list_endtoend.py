"""The issue's end-to-end checks between two ourmail servers (tests/queuehelp.py): a post to a
list of 1,000 members reaches each member once at the second server, members whose mail
the second server returns with real DSNs are disabled, one-click unsubscribe works without a login, DMARC-strict posters'
mail passes DMARC at the receiving server with the list's From:, and two lists on two
servers that are members of each other do not loop."""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
import smtplib
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import RunningServer, dns_zone
from queuehelp import Pair, server_pair, wait_for
from storehelp import on_reactor

from ourmail.admin.cli import main
from ourmail.config import FilterSettings
from ourmail.lists.model import Delivery
from ourmail.secure.dkimkeys import KeyStore
from ourmail.secure.dkimsign import DKIMSigner

POSTER = "poster@lax.test"


#: Members that bounce: theirs takes their mail and then returns it with a DSN.
GONE = ("gone1@remote.test", "gone2@remote.test", "gone3@remote.test")


def make_list(srv: RunningServer, address: str, members: list[str], *settings: str) -> None:
    """A list made with the CLI, as an admin would, then read by the running server."""
    data = str(srv.data)
    assert main(["--data", data, "list", "create", address, "--owner", srv.user]) == 0
    if settings:
        assert main(["--data", data, "list", "set", address, *settings]) == 0
    for i in range(0, len(members), 500):
        assert main(["--data", data, "list", "add", address, *members[i : i + 500]]) == 0
    on_reactor(srv.server.lists.reload)


def post(port: int, sender: str, to: str, subject: str, keys: Path | None = None) -> None:
    """Send a post to ours' MX; signed with the DKIM key in ``keys``, if given."""
    message = (
        f"From: Poster <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@{sender.partition('@')[2]}>\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\nHello list.\r\n"
    ).encode()
    if keys is not None:
        message = (
            DKIMSigner(KeyStore(keys), "mx.strict.test").signature(message, sender, False) + message
        )
    with smtplib.SMTP("127.0.0.1", port) as s:
        assert s.sendmail(sender, [to], message) == {}


def raw(srv: RunningServer, address: str) -> list[bytes]:
    root = srv.server.store.shards.user_dir(address)
    paths = [p for sub in ("new", "cur") if (root / sub).exists() for p in (root / sub).iterdir()]
    return [p.read_bytes() for p in sorted(paths, key=lambda p: p.stat().st_mtime_ns)]


def parsed(message: bytes) -> Any:
    return email.message_from_bytes(message, policy=email.policy.default)


@contextlib.contextmanager
def list_pair(tmp_path: Path) -> Iterator[Pair]:
    """Ours (example.test, with a DKIM key published and SPF) and theirs (remote.test, with a
    catch-all to carol and the SPF, DKIM and DMARC checks)."""
    chain = FilterSettings(chain=("spf", "dkim", "dmarc"))
    with server_pair(tmp_path, theirs_changes={"filters": chain}) as pair:
        zone = dns_zone()[0]
        key = KeyStore(pair.ours.data / "dkim").generate("example.test", "lists", "rsa")
        zone.set_txt("lists._domainkey.example.test", [s.encode() for s in key.txt_strings()])
        zone.set_txt("example.test", [b"v=spf1 ip4:127.0.0.1 -all"])
        zone.set_txt("_dmarc.example.test", [b"v=DMARC1; p=reject"])
        zone.set_txt("_dmarc.strict.test", [b"v=DMARC1; p=reject"])
        # The strict poster's mail is DKIM-signed, so it passes DMARC at ours (SPF is not
        # checked for loopback clients).
        key = KeyStore(tmp_path / "poster-keys").generate("strict.test", "p", "rsa")
        zone.set_txt("p._domainkey.strict.test", [s.encode() for s in key.txt_strings()])
        zone.set_txt("_dmarc.lax.test", [b"v=DMARC1; p=none"])
        # Members whose mail theirs takes, then cannot deliver (their forward's domain does
        # not exist): theirs sends the DSNs, to the VERP return path, back to ours.
        accounts = pair.theirs.server.accounts
        for address in GONE:
            accounts.set_alias(address, ["x@nowhere.test"])
        accounts.set_alias("@remote.test", ["carol@remote.test"])
        yield pair


def envelope_recipients(messages: list[bytes]) -> list[str]:
    """Whom each copy was for: the ``for <…>`` of the receiving server's Received: field,
    which must be the member the copy's own one-click link names."""
    found = []
    for m in messages:
        head = parsed(m)
        rcpt = re.search(r"for <([^>]+)>", head["Received"]).group(1)
        link = re.search(r"<https://[^>]+/([^/>]+)/[0-9a-f]+>", head["List-Unsubscribe"])
        assert urllib.parse.unquote(link.group(1)) == rcpt
        found.append(rcpt)
    return found


def assert_provider_rules(copy: Any) -> None:
    """What the large mailbox providers publish for bulk mail (Gmail's and Yahoo's sender
    guidelines, after RFC 8058 §3.1 and §4), as the receiving server saw the copy: one HTTPS
    one-click URI (and a mailto), ``List-Unsubscribe-Post``, both fields under a DKIM
    signature that passed there, aligned with the visible ``From:``'s domain or the list's;
    and every field parses with Python's ``email`` without a defect."""
    assert not copy.defects and all(not value.defects for _, value in copy.items())
    uris = [u.strip().strip("<>") for u in str(copy["List-Unsubscribe"]).split(",")]
    assert sorted(u.split(":")[0] for u in uris) == ["https", "mailto"]
    assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    signature = "".join(str(copy["DKIM-Signature"]).split())
    names = re.search(r"(?:^|;)h=([^;]+)", signature).group(1).lower().split(":")
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "list-id"} <= set(names)
    assert "d=example.test" in signature.split(";")
    results = " ".join(str(v) for v in copy.get_all("Authentication-Results", []))
    assert "dkim=pass" in results and "header.d=example.test" in results
    assert copy["List-Id"] and copy["List-Post"] and copy["List-Help"]


def test_a_post_to_1000_members_bounces_and_one_click(tmp_path: Path) -> None:
    with list_pair(tmp_path) as pair:
        ours, theirs = pair.ours, pair.theirs
        members = [f"m{i}@remote.test" for i in range(997)]
        gone = list(GONE)
        make_list(ours, "team@example.test", members + gone, "post_policy=anyone", "bounce_limit=2")
        post(pair.port, POSTER, "team@example.test", "first post")
        got = wait_for(
            lambda: (
                len(raw(theirs, "carol@remote.test")) >= 997 and raw(theirs, "carol@remote.test")
            ),
            timeout=240,
        )
        # Each member once, with their own link and VERP sender.
        rcpts = envelope_recipients(got)
        assert len(rcpts) == 997 and set(rcpts) == set(members)
        copy = parsed(got[0])
        assert copy["List-Id"] == "team <team.example.test>" and copy["Precedence"] == "list"
        assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert copy["From"] == f"Poster <{POSTER}>"  # a lax poster's From: is kept
        assert_provider_rules(copy)
        # The DSNs theirs sends for the gone members raise their scores.
        ctx = ours.server.lists.ctx

        def scores() -> list[float]:
            return [(ctx.db.member("team@example.test", a) or 0).bounce_score for a in gone]

        wait_for(lambda: scores() == [1, 1, 1], timeout=120)
        # A day later, a second post: bounced again, they are disabled.
        ctx.clock = lambda: time.time() + 86400 * 1.5
        post(pair.port, POSTER, "team@example.test", "second post")

        def disabled() -> bool:
            found = [ctx.db.member("team@example.test", a) for a in gone]
            return all(m is not None and m.delivery == Delivery.NONE for m in found)

        wait_for(disabled, timeout=240)
        wait_for(lambda: len(raw(theirs, "carol@remote.test")) >= 2 * 997, timeout=240)

        # One-click unsubscribe (RFC 8058): a POST to the member's URL, no login, no cookie.
        unsubscribe = copy["List-Unsubscribe"]
        url = re.search(r"<(https://[^>]+)>", unsubscribe).group(1)
        path = urllib.parse.urlsplit(url).path
        member = urllib.parse.unquote(path.rstrip("/").split("/")[-2])
        request = urllib.request.Request(
            f"https://127.0.0.1:{ours.port('web')}{path}",
            data=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            assert answer.status == 200
        assert ctx.db.member("team@example.test", member) is None


def test_dmarc_strict_posters_pass_dmarc_and_two_lists_do_not_loop(tmp_path: Path) -> None:
    with list_pair(tmp_path) as pair:
        ours, theirs = pair.ours, pair.theirs
        # team (here) has carol and echo (there) as members; echo has team as a member.
        make_list(
            ours,
            "team@example.test",
            ["carol@remote.test", "echo@remote.test"],
            "post_policy=anyone",
        )
        make_list(theirs, "echo@remote.test", ["team@example.test"], "post_policy=anyone")
        post(
            pair.port,
            "boss@strict.test",
            "team@example.test",
            "strict post",
            tmp_path / "poster-keys",
        )
        (got,) = wait_for(lambda: raw(theirs, "carol@remote.test"), timeout=60)
        copy = parsed(got)
        # p=reject at strict.test: the list's From:, the poster in Reply-To:, and DMARC
        # passes at the receiving server (DKIM of example.test, aligned).
        assert copy["From"].addresses[0].addr_spec == "team@example.test"
        assert "via" in copy["From"].addresses[0].display_name
        assert [a.addr_spec for a in copy["Reply-To"].addresses] == ["boss@strict.test"]
        verdict = copy.get_all("Authentication-Results")[0]
        assert "dmarc=pass header.from=example.test" in verdict

        # The loop: echo distributed the post back to team, which dropped it.
        def archived(srv: RunningServer, address: str) -> int:
            return len(raw(srv, address))

        wait_for(lambda: archived(theirs, "echo@remote.test") == 1, timeout=60)
        on_reactor(ours.server.lists.drained)
        time.sleep(2)  # whatever could loop has had its turn
        assert archived(ours, "team@example.test") == 1
        assert archived(theirs, "echo@remote.test") == 1
        assert len(raw(theirs, "carol@remote.test")) == 1

        # A lax poster's From: is kept.
        post(pair.port, POSTER, "team@example.test", "lax post")
        wait_for(lambda: len(raw(theirs, "carol@remote.test")) == 2, timeout=60)
        lax = parsed(raw(theirs, "carol@remote.test")[1])
        assert lax["From"].addresses[0].addr_spec == POSTER
