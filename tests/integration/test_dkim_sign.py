"""Outbound DKIM signing: ``ourmail dkim`` keys and records, what the signer signs with,
and that Perl's Mail::DKIM (asking the loopback DNS server) verifies it for both algorithms."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import dkim
import pytest
from conftest import dns_zone
from peers import ed25519check
from peers.perldkim import needs_perl, verify
from storehelp import on_reactor
from twisted.internet import reactor

from ourmail.admin.cli import main
from ourmail.auth.accounts import AccountDB
from ourmail.config import QueueSettings, QuotaSettings
from ourmail.directory.local import LocalDirectory
from ourmail.dsnparams import NO_RCPT_PARAMS
from ourmail.queue.runner import OutboundQueue
from ourmail.secure.dkimkeys import KeyStore
from ourmail.secure.dkimsign import DKIMSigner, from_domain
from ourmail.smtp.delivery import Delivery
from ourmail.store.memory import MemoryStore
from ourmail.store.quota import QuotaPolicy

BODY = b"Hello,\r\n\r\n" + b"a line of text with  some   spaces \t\r\n" * 100
MESSAGE = (
    b"From: Alice <alice@sign.test>\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: signed\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@sign.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"List-Id: <list.sign.test>\r\n"
    b"\r\n" + BODY
)
_RECORD = re.compile(r'^(\S+)\. IN TXT ((?:"[^"]*" ?)+)$', re.M)


def published(out: str) -> str:
    """The ``p=`` of the record ``ourmail dkim gen`` printed (its strings joined)."""
    text = "".join(re.findall(r'"([^"]*)"', out))
    return text.split("p=", 1)[1]


def gen(data: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``ourmail dkim gen`` and publish the record it prints, exactly, in the test zone."""
    assert main(["--data", str(data), "dkim", "gen", *args]) == 0
    out = capsys.readouterr().out
    name, strings = _RECORD.search(out).groups()  # type: ignore[union-attr]
    zone, _ = dns_zone()
    zone.set_txt(name, [s.encode() for s in re.findall(r'"([^"]*)"', strings)])
    return out


@needs_perl
@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_the_printed_record_is_what_mail_dkim_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithm: str
) -> None:
    out = gen(
        tmp_path, capsys, "sign.test", "--selector", f"s{algorithm}", "--algorithm", algorithm
    )
    assert f's{algorithm}._domainkey.sign.test. IN TXT "v=DKIM1; k={algorithm}; p=' in out
    if algorithm == "rsa":  # RFC 1035 §3.3.14: strings of at most 255 bytes
        strings = re.findall(r'"([^"]*)"', out)
        assert len(strings) == 2 and max(map(len, strings)) == 255
    key = tmp_path / "dkim" / "sign.test" / f"s{algorithm}.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = DKIMSigner(KeyStore(tmp_path / "dkim"), "mx.other.test")
    signed = signer.signature(MESSAGE, "alice@sign.test", False) + MESSAGE
    assert f"a={algorithm}-sha256; c=relaxed/relaxed; d=sign.test".encode() in signed
    h = re.search(rb"h=([^;]*);", re.sub(rb"\r\n[ \t]+", b" ", signed)).group(1)  # type: ignore[union-attr]
    assert h.split(b" : ") == [  # present fields of the list, From oversigned (RFC 6376 §8.15)
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"list-id",
        b"from",
    ]
    tampered = signed.replace(b"Hello,", b"Hullo,")
    if algorithm == "rsa":
        assert verify(signed, dns_zone()[1]) == ["pass", "sign.test srsa rsa-sha256 pass"]
        assert verify(tampered, dns_zone()[1])[0] == "fail"
    else:  # Debian 12's Mail::DKIM lacks Ed25519: the RFC 8463 check of peers/ed25519check
        public = published(out)
        assert ed25519check.verify(signed, public)
        assert not ed25519check.verify(tampered, public)


@needs_perl
def test_both_algorithms_sign_side_by_side_and_retire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gen(tmp_path, capsys, "sign.test", "--selector", "both-r")
    gen(tmp_path, capsys, "sign.test", "--selector", "both-e", "--algorithm", "ed25519")
    signer = DKIMSigner(KeyStore(tmp_path / "dkim"), "mx.other.test")
    signed = signer.signature(MESSAGE, "", False) + MESSAGE
    result, *details = verify(signed, dns_zone()[1])
    assert result == "pass"
    assert sorted(details) == [
        "sign.test both-e ed25519-sha256 invalid",  # Mail::DKIM 1.20230212: no Ed25519
        "sign.test both-r rsa-sha256 pass",
    ]
    key = KeyStore(tmp_path / "dkim").keys("sign.test")
    ed = next(k for k in key if k.algorithm == "ed25519")
    assert ed25519check.verify(signed, ed.public_value())
    assert main(["--data", str(tmp_path), "dkim", "retire", "sign.test", "both-r"]) == 0
    assert main(["--data", str(tmp_path), "dkim", "list"]) == 0
    listing = capsys.readouterr().out
    assert "sign.test\tboth-r\trsa\tretired" in listing
    assert "sign.test\tboth-e\ted25519\tsigns" in listing
    fresh = DKIMSigner(KeyStore(tmp_path / "dkim"), "mx.other.test")
    assert fresh.signature(MESSAGE, "", False).count(b"DKIM-Signature:") == 1


def test_gen_refuses_bad_names_and_existing_selectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data", str(tmp_path), "dkim", "gen"]
    assert main([*args, "../etc", "--selector", "x"]) == 1
    assert main([*args, "ok.test", "--selector", "a/b"]) == 1
    assert main([*args, "ok.test", "--selector", "one"]) == 0
    assert main([*args, "ok.test", "--selector", "one", "--algorithm", "ed25519"]) == 1
    assert main(["--data", str(tmp_path), "dkim", "retire", "ok.test", "nope"]) == 1
    err = capsys.readouterr().err
    assert "invalid domain" in err and "invalid selector" in err and "exists already" in err
    assert main([*args, "ok.test"]) == 0  # default selector: YYYYMM + r
    assert re.search(r"\n\d{6}r\._domainkey\.ok\.test\. IN TXT", capsys.readouterr().out)


def test_which_domain_signs(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    for domain in ("example.test", "sender.test", "hosted.test"):
        keys.generate(domain, "s", "ed25519")
    signer = DKIMSigner(keys, "mail.example.test")

    def d_of(frm: bytes, sender: str, forwarded: bool = False) -> str | None:
        sig = signer.signature(
            b"From: " + frm + b"\r\nSubject: x\r\n\r\nbody\r\n", sender, forwarded
        )
        found = re.search(rb"d=([^;]+);", sig)
        return found.group(1).decode() if found else None

    assert d_of(b"a@hosted.test", "a@sender.test") == "hosted.test"  # the author's domain
    assert d_of(b"a@lists.hosted.test", "") == "hosted.test"  # a parent: relaxed alignment
    assert d_of(b"a@else.test", "a@sender.test") == "sender.test"  # else the envelope's
    assert d_of(b"a@else.test", "a@else.test") == "example.test"  # else the host name's
    assert d_of(b"a@hosted.test", "a@hosted.test", forwarded=True) == "example.test"
    # Forwarded mail claiming our host domain as author leaves unsigned (no DMARC pass).
    assert d_of(b"boss@example.test", "x@else.test", forwarded=True) is None
    assert d_of(b"boss@sub.example.test", "x@else.test", forwarded=True) is None
    mail_only = KeyStore(tmp_path / "mail-only")
    mail_only.generate("mail.example.test", "s", "ed25519")
    forwarder = DKIMSigner(mail_only, "mail.example.test")
    sig = forwarder.signature(b"From: boss@sales.example.test\r\n\r\nx\r\n", "", True)
    assert sig == b""  # same organizational domain: DMARC would pass it
    assert d_of(b"", "x@else.test", forwarded=True) is None  # no author: nothing to vouch for
    assert d_of(b"a@hosted.test, b@sender.test", "") == "example.test"  # two authors
    no_host = DKIMSigner(keys, "mx.nowhere.test")
    assert no_host.signature(b"From: a@else.test\r\n\r\nx\r\n", "", False) == b""
    assert no_host.signature(b"Subject: no from\r\n\r\nx\r\n", "a@hosted.test", False) == b""


def test_from_domain_parsing() -> None:
    cases = {
        b"From: A <a@Ex.test>\r\n": "ex.test",
        b'From: "x@y" <a@b.test>\r\n': "b.test",
        b"To: x\r\nFrom: (c@d) x\r\n <q@sub.b.test>\r\nX: y\r\n": "sub.b.test",
        b"From: a@b.test, c@d.test\r\n": None,
        b"From: a@b.test\r\nFrom: c@d.test\r\n": None,
        b"Subject: x\r\n": None,
        b"From: <a@bad_domain!>\r\n": None,
    }
    for head, domain in cases.items():
        assert from_domain(head) == domain, head


def test_unreadable_keys_sign_nothing_but_do_not_fail(tmp_path: Path) -> None:
    (tmp_path / "broken.test").mkdir()
    (tmp_path / "broken.test" / "s.key").write_bytes(b"not a key")
    signer = DKIMSigner(KeyStore(tmp_path), "broken.test")
    assert signer.signature(b"From: a@broken.test\r\n\r\nx\r\n", "", False) == b""


def test_dkimpy_verifies_what_we_sign(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    key = keys.generate("sign.test", "py", "ed25519")
    signed = DKIMSigner(keys, "x.test").signature(MESSAGE, "", False) + MESSAGE
    records = {b"py._domainkey.sign.test.": key.txt().encode()}
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: records.get(name))


class BrokenSigner:
    def signature(self, content: bytes, sender: str, forwarded: bool) -> bytes:
        raise dkim.ParameterError("a key dkimpy cannot use")


@pytest.mark.parametrize("broken", [False, True])
def test_the_queue_stores_the_message_signed_once_or_unsigned(tmp_path: Path, broken: bool) -> None:
    accounts = AccountDB(tmp_path)
    directory = LocalDirectory(accounts, ("example.test",))
    delivery = Delivery(directory, MemoryStore(), QuotaPolicy(QuotaSettings(), accounts))
    queue = OutboundQueue(
        QueueSettings(), tmp_path, "mail.example.test", directory, delivery, reactor
    )
    queue.files.prepare()
    keys = KeyStore(tmp_path / "dkim")
    keys.generate("example.test", "q", "ed25519")
    queue.signer = BrokenSigner() if broken else DKIMSigner(keys, "mail.example.test")  # type: ignore[assignment]
    spooled = tmp_path / "spooled"
    spooled.write_bytes(MESSAGE.replace(b"sign.test", b"example.test"))
    qid = on_reactor(
        queue.enqueue, "alice@example.test", [("bob@remote.test", NO_RCPT_PARAMS)], spooled
    )
    stored = queue.files.content(qid)
    assert stored.endswith(spooled.read_bytes())  # nothing lost either way
    assert stored.startswith(b"DKIM-Signature:") != broken
    assert queue.files.read(qid).size == len(stored)


AWKWARD = {
    "many folded fields": (
        b'From: "Alice, the Sender" <alice@sign.test>\r\n'
        b"To: a@remote.test,\r\n  b@remote.test,\r\n\tc@remote.test\r\n"
        b"To: second@remote.test\r\n"
        b"Cc: cc@remote.test\r\n"
        b"Subject:   spaced \t subject   \r\n"
        b"Reply-To: r@sign.test\r\nIn-Reply-To: <x@y>\r\nReferences: <a@b> <c@d>\r\n"
        b"List-Id: <l.sign.test>\r\nList-Unsubscribe: <mailto:u@sign.test>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nList-Post: <mailto:l@sign.test>\r\n"
        b"Received: not signed\r\n"
        b"\r\n"
        b"trailing spaces   \r\n\r\n\r\n"
    ),
    "an empty body": b"From: alice@sign.test\r\nSubject: empty\r\n\r\n",
    "no body at all": b"From: alice@sign.test\r\nSubject: none\r\n",
    "8-bit text": "From: Zoë <zoe@sign.test>\r\nSubject: café\r\n\r\nnaïve\r\n".encode(),
}


@needs_perl
@pytest.mark.parametrize("case", sorted(AWKWARD))
def test_awkward_messages_verify_with_mail_dkim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    out_r = gen(tmp_path, capsys, "sign.test", "--selector", "awk")
    out_e = gen(tmp_path, capsys, "sign.test", "--selector", "awke", "--algorithm", "ed25519")
    message = AWKWARD[case]
    signed = (
        DKIMSigner(KeyStore(tmp_path / "dkim"), "x.test").signature(message, "", False) + message
    )
    assert max(len(line) for line in signed.split(b"\r\n\r\n")[0].split(b"\r\n")[:12]) <= 78
    result, *details = verify(signed, dns_zone()[1])
    assert result == "pass" and "sign.test awk rsa-sha256 pass" in details
    assert ed25519check.verify(signed, published(out_e))
    records = {  # dkimpy checks both, the Ed25519 one too
        b"awk._domainkey.sign.test.": ("v=DKIM1; k=rsa; p=" + published(out_r)).encode(),
        b"awke._domainkey.sign.test.": ("v=DKIM1; k=ed25519; p=" + published(out_e)).encode(),
    }
    checker = dkim.DKIM(signed)
    for index in (0, 1):
        assert checker.verify(idx=index, dnsfunc=lambda name, timeout=5: records.get(name))
