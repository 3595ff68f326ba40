"""LMTP (RFC 2033): how another MTA on this machine (Postfix, Exim) hands mail to ourmail.

The same session as SMTP with three differences: the client says LHLO (HELO and EHLO are
refused), there is no STARTTLS or AUTH (the listener is a local unix socket, by default
``<data>/lmtp.sock``), and after DATA every accepted recipient gets its own reply, in RCPT
order, so one full or unavailable mailbox does not hold back the others (RFC 2033 §4.2).
"""

from __future__ import annotations

from typing import Any

from ourmail.interfaces import ShardMoving
from ourmail.smtp.server import SMTPServer


class LMTPServer(SMTPServer):
    """One LMTP session."""

    protocol_name = "LMTP"

    def extensions(self) -> list[str]:
        return [
            "PIPELINING",  # RFC 2920
            f"SIZE {self.ctx.limits.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "CHUNKING",  # RFC 3030
        ]

    def do_LHLO(self, arg: str) -> None:
        self.do_EHLO(arg)

    def do_not_lmtp(self, arg: str) -> None:
        self.error(500, "5.5.1 This is LMTP: say LHLO")

    def report(self, rcpts: list[str], results: list[tuple[bool, Any]]) -> None:
        for address, (ok, outcome) in zip(rcpts, results, strict=True):
            if ok:
                self.reply(250, f"2.1.5 <{address}> delivered as {self.queue_id}")
            elif outcome.check(ShardMoving):
                self.reply(451, f"4.2.1 <{address}> mailbox temporarily unavailable, try later")
            else:
                self.reply(451, f"4.3.0 <{address}> local delivery failed, try again later")

    COMMANDS = {
        **{k: v for k, v in SMTPServer.COMMANDS.items() if k not in ("STARTTLS", "AUTH")},
        "LHLO": do_LHLO,
        "HELO": do_not_lmtp,
        "EHLO": do_not_lmtp,
    }
